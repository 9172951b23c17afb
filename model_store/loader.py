"""Detect an artifact's format, check it is safe, load it, and describe what was loaded.

Runs inside a runner only (serving/runners): the artifact arrives as an open file the web worker
verified, never as a path, and everything it loads is the uploader's code.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import joblib
import numpy as np
import sklearn

from model_store.errors import InvalidArtifact, UnsafeArtifact
from model_store.features import python_value
from model_store.safety import (
    RestrictedUnpickler,
    check_loaded,
    refused_globals,
    restricted_joblib_load,
    scan_stream,
)

SKOPS = "skops"
# A skops file is a zip that skops reads member by member, each whole (ZipFile.read). Declared sizes
# prove nothing: zipfile inflates all of a member's compressed bytes at once and only then cuts the
# result to the declared size (and a CRC for that cut passes), so a member declaring 4 KiB can
# inflate to gigabytes inside zipfile. Every member is therefore inflated here first, in bounded
# chunks, and must give exactly the bytes it declares; the declared total is bounded, absolutely
# and relative to the file's size.
MAX_SKOPS_UNCOMPRESSED_BYTES = 4 << 30
MAX_SKOPS_RATIO = 100  # a fitted model's arrays do not deflate 100:1; zeros deflate 1000:1
SKOPS_RATIO_FLOOR = 64 << 20  # below this many inflated bytes the ratio is not checked
MAX_SKOPS_MEMBERS = 100_000
_INFLATE_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length


@dataclass
class LoadedArtifact:
    """A loaded estimator and the facts recorded with its version."""

    estimator: Any
    format: str
    estimator_name: str
    has_predict_proba: bool
    classes: list[Any] | None
    library_versions: dict[str, str]


def _size(file: BinaryIO) -> int:
    return os.fstat(file.fileno()).st_size


def _is_skops(file: BinaryIO) -> bool:
    try:
        if not zipfile.is_zipfile(file):
            return False
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            return "schema.json" in archive.namelist()
    except zipfile.BadZipFile:
        return False
    finally:
        file.seek(0)


def _check_skops_archive(file: BinaryIO) -> set[str]:
    """Refuse a zip bomb before skops reads it; returns the types skops would call to build objects.

    Raises InvalidArtifact: too many members, a declared total over the limits, a member whose
    compressed data does not inflate to exactly its declared size, an unsupported compression.
    """
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            if len(members) > MAX_SKOPS_MEMBERS:
                raise InvalidArtifact(
                    f"The skops file has {len(members)} members, over the limit of {MAX_SKOPS_MEMBERS}."
                )
            inflated = sum(info.file_size for info in members)
            size = _size(file)
            if inflated > MAX_SKOPS_UNCOMPRESSED_BYTES:
                raise InvalidArtifact(
                    f"The skops file would inflate to {inflated} bytes, over the limit of "
                    f"{MAX_SKOPS_UNCOMPRESSED_BYTES}."
                )
            if inflated > SKOPS_RATIO_FLOOR and inflated > MAX_SKOPS_RATIO * size:
                raise InvalidArtifact(
                    f"The skops file would inflate {size} bytes to {inflated}, more than "
                    f"{MAX_SKOPS_RATIO} times: a zip bomb, not a model."
                )
            for info in members:
                _check_member(file, info)
            schema = json.loads(archive.read("schema.json"))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        KeyError,
        ValueError,
        RecursionError,
        OSError,
        EOFError,
        struct.error,
    ):
        raise InvalidArtifact("The skops file is not a readable zip archive with a schema.") from None
    return _constructed_types(schema)


def _check_member(raw: Any, info: zipfile.ZipInfo) -> None:
    """Inflate one member in bounded chunks; it must end exactly at its declared size and CRC."""
    if info.flag_bits & 0x1:
        raise InvalidArtifact(f"The skops file's member {info.filename!r} is encrypted.")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidArtifact(
            f"The skops file's member {info.filename!r} uses a compression this server does not "
            "inflate; save it with zipfile.ZIP_DEFLATED or ZIP_STORED."
        )
    raw.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise InvalidArtifact(f"The skops file's member {info.filename!r} has no local header.")
    raw.seek(name_length + extra_length, 1)
    stored = info.compress_type == zipfile.ZIP_STORED
    inflater = None if stored else zlib.decompressobj(-zlib.MAX_WBITS)
    left, produced, crc, pending = info.compress_size, 0, 0, b""
    while True:
        if not pending:
            if not left:
                break
            pending = raw.read(min(_INFLATE_CHUNK, left))
            if not pending:
                break  # truncated: the sizes below disagree
            left -= len(pending)
        if inflater is None:
            out, pending = pending, b""
        else:
            out = inflater.decompress(pending, _INFLATE_CHUNK)
            pending = inflater.unconsumed_tail
        produced += len(out)
        if produced > info.file_size:
            break
        crc = zlib.crc32(out, crc)
        if inflater is not None and inflater.eof:
            break
    complete = stored or (inflater is not None and inflater.eof and not inflater.unused_data and not left)
    if produced != info.file_size or crc != info.CRC or not complete:
        raise InvalidArtifact(
            f"The skops file's member {info.filename!r} does not inflate to the {info.file_size} "
            "bytes it declares: a damaged file or a zip bomb."
        )


def _constructed_types(schema: Any) -> set[str]:
    """Types skops builds by calling them with arguments from the file (ConstructorFromReduceNode)."""
    called: set[str] = set()
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("__loader__") == "ConstructorFromReduceNode":
                called.add(f"{node.get('__module__')}.{node.get('__class__')}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return called


def _skops_trusted_types(file: BinaryIO, trusted_modules: Iterable[str]) -> list[str]:
    """The types skops must be told to trust to load `file`, after refusing zip bombs and every
    type our allow-list refuses; raises InvalidArtifact / UnsafeArtifact."""
    import skops.io

    called = _check_skops_archive(file)
    try:
        file.seek(0)
        untrusted = skops.io.get_untrusted_types(file=file)  # ZipFile takes files
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds for a bad file
        raise InvalidArtifact(f"The skops file cannot be read ({type(exc).__name__}).") from None
    # skops' own trust check does the loading; what it does not trust by default must be on our
    # allow-list, and is imported and checked as the pickle scan checks names.
    refused = refused_globals(untrusted, trusted_modules, called)
    if refused:
        raise UnsafeArtifact(refused)
    return untrusted


def _load_skops(file: BinaryIO, trusted_modules: Iterable[str]) -> tuple[Any, list[str]]:
    """The loaded object, and the types skops was told to trust."""
    import skops.io

    trusted = _skops_trusted_types(file, trusted_modules)
    file.seek(0)
    return skops.io.load(file, trusted=trusted), trusted


def _load_pickle(file: BinaryIO, fmt: str, trusted_modules: Iterable[str], max_model_bytes: int | None) -> Any:
    # The scan judged names; these loaders judge the real objects again as they are built.
    file.seek(0)
    if fmt == "joblib":
        return restricted_joblib_load(file, trusted_modules, max_model_bytes)
    return RestrictedUnpickler(file, extra_trusted_modules=trusted_modules, max_model_bytes=max_model_bytes).load()


def check_artifact(file: BinaryIO, trusted_modules: Iterable[str] = (), max_model_bytes: int | None = None) -> str:
    """The safety checks that need no unpickling (the web worker runs them on an upload before any
    runner sees it); returns the format. Raises UnsafeArtifact / InvalidArtifact."""
    trusted_modules = tuple(trusted_modules)
    try:
        if _is_skops(file):
            _skops_trusted_types(file, trusted_modules)
            return SKOPS
        return scan_stream(file, _size(file), trusted_modules, max_model_bytes).format
    finally:
        file.seek(0)


def detect_and_load(
    file: BinaryIO, trusted_modules: Iterable[str] = (), fmt: str | None = None, max_model_bytes: int | None = None
) -> tuple[Any, str, str | None]:
    """Load the artifact in `file` (seekable) after its safety checks; returns (object, format,
    pickled sklearn version). See _detect_and_load."""
    obj, fmt, pickled_version, _ = _detect_and_load(file, trusted_modules, fmt, max_model_bytes)
    return obj, fmt, pickled_version


def _detect_and_load(
    file: BinaryIO, trusted_modules: Iterable[str] = (), fmt: str | None = None, max_model_bytes: int | None = None
) -> tuple[Any, str, str | None, frozenset[str]]:
    """Load the artifact in `file` (seekable) after its safety checks; returns (object, format,
    pickled sklearn version, the "module.name" globals it references: those the pickle scan saw,
    or the types skops had to be told to trust).

    Raises UnsafeArtifact before anything is unpickled (the scan) or right after (check_loaded:
    callables and types found in the loaded state), InvalidArtifact when it does not load.
    """
    trusted_modules = tuple(trusted_modules)
    referenced: frozenset[str] = frozenset()
    if fmt == SKOPS or (fmt is None and _is_skops(file)):
        fmt = SKOPS

        def loader() -> Any:
            nonlocal referenced
            obj, trusted = _load_skops(file, trusted_modules)
            referenced = frozenset(trusted)
            return obj

    else:
        file.seek(0)
        report = scan_stream(file, _size(file), trusted_modules, max_model_bytes)
        fmt, referenced = report.format, report.globals

        def loader() -> Any:
            return _load_pickle(file, report.format, trusted_modules, max_model_bytes)

    pickled_version = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = loader()
    except (UnsafeArtifact, InvalidArtifact):
        raise
    except Exception as exc:  # noqa: BLE001 - unpickling runs the artifact's own code
        raise InvalidArtifact(
            f"The artifact could not be loaded ({type(exc).__name__}); is it a scikit-learn "
            "model saved with joblib, pickle or skops?"
        ) from None
    for warning in caught:
        original = getattr(warning.message, "original_sklearn_version", None)
        if original:
            pickled_version = str(original)
    check_loaded(obj, trusted_modules)
    return obj, fmt, pickled_version, referenced


def _has_distribution(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(name)
    except Exception:  # noqa: BLE001 - not installed under that name, or unreadable
        return False
    return True


# Recorded for every artifact; the frameworks its globals come from are added (framework_versions).
_ALWAYS_RECORDED = {"sklearn", "numpy", "joblib"}


def framework_versions(referenced: Iterable[str]) -> dict[str, str]:
    """Distribution name -> installed version, for the top-level packages of the "module.name"
    globals an artifact references (lightgbm, xgboost, pandas, scipy ...), the standard library and
    the always-recorded ones (scikit-learn, numpy, joblib) aside."""
    import sys
    from importlib import metadata

    tops = {label.split(".", 1)[0] for label in referenced} - _ALWAYS_RECORDED - set(sys.stdlib_module_names)
    tops = {top for top in tops if top.isidentifier() and not top.startswith("_")}
    if not tops:
        return {}
    # A distribution named as its package (lightgbm, xgboost, scipy, pandas) is found directly;
    # the map of every installed package (~60 ms) only for the others.
    named = {top: [top] for top in tops if _has_distribution(top)}
    if len(named) < len(tops):
        try:
            named = {**metadata.packages_distributions(), **named}
        except Exception:  # noqa: BLE001 - an unreadable installation (a runner reads what Landlock allows)
            pass
    versions: dict[str, str] = {}
    for top in sorted(tops):
        for name in named.get(top, []):
            try:
                version = metadata.version(name)
            except Exception:  # noqa: BLE001 - not found, or its metadata not readable in a runner
                continue
            # None when the distribution's METADATA cannot be read (a package outside the
            # interpreter's tree: a runner may read the package, not its dist-info).
            if isinstance(version, str) and isinstance(name, str):
                versions.setdefault(name, version)
    return versions


def _public_name(cls: type) -> str:
    # sklearn.linear_model._logistic.LogisticRegression -> sklearn.linear_model.LogisticRegression
    parts = []
    for part in cls.__module__.split("."):
        if part.startswith("_"):
            break
        parts.append(part)
    return ".".join([*parts, cls.__qualname__])


def load_artifact(
    file: BinaryIO, trusted_modules: Iterable[str] = (), fmt: str | None = None, max_model_bytes: int | None = None
) -> LoadedArtifact:
    """Load an artifact and describe it; raises InvalidArtifact/UnsafeArtifact.

    Whatever the loaded object turns out to be (a class instead of a fitted instance, an object
    whose attributes raise), describing it never fails otherwise: a surprise is an InvalidArtifact
    naming it.
    """
    estimator, fmt, pickled_version, referenced = _detect_and_load(file, trusted_modules, fmt, max_model_bytes)
    if isinstance(estimator, type):
        raise InvalidArtifact(
            f"The artifact holds the class {_public_name(estimator)} itself, not a fitted instance of it: "
            "save the fitted model (joblib.dump(model, ...)), not its class."
        )
    try:
        if not callable(getattr(estimator, "predict", None)):
            raise InvalidArtifact(f"The artifact holds a {_public_name(type(estimator))}, which has no predict method.")
        classes = getattr(estimator, "classes_", None)
        return LoadedArtifact(
            estimator=estimator,
            format=fmt,
            estimator_name=_public_name(type(estimator)),
            has_predict_proba=callable(getattr(estimator, "predict_proba", None)),
            classes=[python_value(c) for c in np.asarray(classes).tolist()] if classes is not None else None,
            library_versions={
                **framework_versions(referenced),
                "python": platform.python_version(),
                "scikit-learn": pickled_version or sklearn.__version__,
                "numpy": np.__version__,
                "joblib": joblib.__version__,
            },
        )
    except InvalidArtifact:
        raise
    except Exception as exc:  # noqa: BLE001 - the artifact's own attributes ran: report what broke
        raise InvalidArtifact(
            f"The loaded {_public_name(type(estimator))} cannot be inspected ({type(exc).__name__}): "
            "is it a fitted scikit-learn model?"
        ) from None
