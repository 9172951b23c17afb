"""Detect an artifact's format, check it is safe, load it, and describe what was loaded."""

from __future__ import annotations

import platform
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from model_store.errors import InvalidArtifact, UnsafeArtifact
from model_store.safety import RestrictedUnpickler, is_trusted_global, scan_artifact
from model_store.schema import python_value

SKOPS = "skops"
# A skops file is a zip; refuse one that would inflate past this before skops reads it.
MAX_SKOPS_UNCOMPRESSED_BYTES = 4 << 30


@dataclass
class LoadedArtifact:
    """A loaded estimator and the facts recorded with its version."""

    estimator: Any
    format: str
    estimator_name: str
    has_predict_proba: bool
    classes: list[Any] | None
    library_versions: dict[str, str]


def _is_skops(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "schema.json" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _load_skops(path: Path, trusted_modules: Iterable[str]) -> Any:
    import skops.io

    with zipfile.ZipFile(path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    if inflated > MAX_SKOPS_UNCOMPRESSED_BYTES:
        raise InvalidArtifact(
            f"The skops file would inflate to {inflated} bytes, over the limit of "
            f"{MAX_SKOPS_UNCOMPRESSED_BYTES}."
        )
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds for a bad file
        raise InvalidArtifact(f"The skops file cannot be read ({type(exc).__name__}).") from None
    trusted: list[str] = []
    refused: list[str] = []
    for type_name in untrusted:
        module, _, name = type_name.rpartition(".")
        (trusted if module and is_trusted_global(module, name, trusted_modules) else refused).append(
            type_name
        )
    if refused:
        raise UnsafeArtifact(refused)
    return skops.io.load(path, trusted=trusted)


def _load_pickle(path: Path, fmt: str, trusted_modules: Iterable[str]) -> Any:
    if fmt == "joblib":
        return joblib.load(path)
    with path.open("rb") as f:
        return RestrictedUnpickler(f, extra_trusted_modules=trusted_modules).load()


def detect_and_load(path: Path, trusted_modules: Iterable[str] = (), fmt: str | None = None) -> tuple[Any, str, str | None]:
    """Load the artifact at `path` after its safety check; returns (object, format, pickled sklearn version).

    Raises UnsafeArtifact before anything is unpickled, InvalidArtifact when it does not load.
    """
    trusted_modules = tuple(trusted_modules)
    if fmt == SKOPS or (fmt is None and _is_skops(path)):
        loader, fmt = (lambda: _load_skops(path, trusted_modules)), SKOPS
    else:
        report = scan_artifact(path, trusted_modules)
        fmt = report.format
        loader = lambda: _load_pickle(path, report.format, trusted_modules)
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
    return obj, fmt, pickled_version


def _public_name(cls: type) -> str:
    # sklearn.linear_model._logistic.LogisticRegression -> sklearn.linear_model.LogisticRegression
    parts = []
    for part in cls.__module__.split("."):
        if part.startswith("_"):
            break
        parts.append(part)
    return ".".join(parts + [cls.__qualname__])


def load_artifact(path: Path, trusted_modules: Iterable[str] = ()) -> LoadedArtifact:
    """Load an uploaded artifact and check it can predict; raises InvalidArtifact/UnsafeArtifact."""
    estimator, fmt, pickled_version = detect_and_load(path, trusted_modules)
    if not callable(getattr(estimator, "predict", None)):
        raise InvalidArtifact(
            f"The artifact holds a {_public_name(type(estimator))}, which has no predict method."
        )
    classes = getattr(estimator, "classes_", None)
    return LoadedArtifact(
        estimator=estimator,
        format=fmt,
        estimator_name=_public_name(type(estimator)),
        has_predict_proba=callable(getattr(estimator, "predict_proba", None)),
        classes=[python_value(c) for c in np.asarray(classes).tolist()] if classes is not None else None,
        library_versions={
            "python": platform.python_version(),
            "scikit-learn": pickled_version or sklearn.__version__,
            "numpy": np.__version__,
            "joblib": joblib.__version__,
        },
    )


