"""The safety gate judges objects, not names: aliases of denied objects in the trusted packages,
stored callables (scan and post-load walk), skops nodes naming aliases, and scan_stream."""

from __future__ import annotations

import functools
import importlib
import io
import json
import operator
import os
import pickle
import pkgutil
import re
import sys
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from model_store.errors import UnsafeArtifact
from model_store.safety import (
    RestrictedUnpickler,
    check_loaded,
    refused_globals,
    restricted_joblib_load,
    scan_artifact,
    scan_stream,
)
from model_store.safety.policy import _is_trusted, denied_objects
from tests.estimators.malicious import (
    ATTRGETTER,
    IMPORTLIB,
    PARTIAL,
    TYPE,
    call,
    glob,
    program,
    run_unprotected,
    text,
)

X = np.random.default_rng(0).normal(size=(40, 2))
Y = (X[:, 0] > 0).astype(int)


# -- the post-load walk -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("func", "named"),
    [
        (operator.attrgetter("x"), "<operator.attrgetter instance>"),
        (functools.partial(print), "<functools.partial instance>"),
        (os.system, "posix.system"),
        (np.load, "numpy.load"),
        (np.frompyfunc(os.system, 1, 1), "system (vectorized)"),
        (np, "<module numpy>"),
        (type, "builtins.type"),
        (LogisticRegression, "sklearn.linear_model._logistic.LogisticRegression"),
    ],
)
def test_check_loaded_refuses_stored_callables(func: Any, named: str) -> None:
    model = Pipeline([("f", FunctionTransformer(func)), ("clf", LogisticRegression())])
    with pytest.raises(UnsafeArtifact) as refused:
        check_loaded(model)
    assert named in refused.value.offending
    assert "model" in refused.value.message  # where in the model it was found


def test_check_loaded_accepts_what_models_store() -> None:
    model = Pipeline([("log", FunctionTransformer(np.log1p)), ("clf", LogisticRegression())]).fit(np.abs(X), Y)
    check_loaded(model)
    check_loaded({"dtype": np.float64, "kind": int, "objs": np.array(["a", 1.0, None], dtype=object)})


def test_check_loaded_looks_inside_object_arrays_and_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    cycle.append(np.array([operator.itemgetter(0)], dtype=object))
    with pytest.raises(UnsafeArtifact, match="itemgetter"):
        check_loaded(cycle)


# -- aliases of denied objects in the trusted packages -------------------------------------------
def _all_modules() -> list[str]:
    names = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for top in ("sklearn", "numpy", "scipy"):
            package = importlib.import_module(top)
            names.append(top)
            for info in pkgutil.walk_packages(package.__path__, top + ".", onerror=lambda _: None):
                if {"tests", "testing", "_tests", "conftest", "f2py", "distutils"} & set(info.name.split(".")):
                    continue  # test suites and build tools: importing them runs or installs things
                try:
                    importlib.import_module(info.name)
                except BaseException:  # noqa: BLE001 - optional dependencies, platform modules
                    continue
                names.append(info.name)
    return names


def test_every_alias_of_a_denied_object_in_the_trusted_packages_is_refused(tmp_path: Path) -> None:
    """Walk every importable module of sklearn, numpy and scipy; every attribute that is a denied
    object or a module (sklearn.feature_selection._base.attrgetter, scipy._importlib...) is refused
    by the scan, stored or called, and by refused_globals."""
    aliases = []
    for module_name in _all_modules():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        denied = denied_objects()  # grows as modules import more denied modules
        for attr, value in list(vars(module).items()):
            entry = denied.get(id(value))
            if (isinstance(value, types.ModuleType) or (entry is not None and entry[1] is value)) and _is_trusted(
                module_name, attr, frozenset()
            ):
                aliases.append((module_name, attr))
    names = {f"{m}.{a}" for m, a in aliases}
    # the re-exports the corpus proves live unprotected are among them
    for owner, attr in (ATTRGETTER, PARTIAL, TYPE, IMPORTLIB):
        assert f"{owner}.{attr}" in names
    assert len(aliases) > 100
    path = tmp_path / "alias.pkl"
    escaped: list[tuple[str, Any]] = []
    for owner, attr in aliases:
        label = f"{owner}.{attr}"
        for body in (program(b"]", glob(owner, attr), b"a"), program(call(glob(owner, attr), text("x")))):
            path.write_bytes(body)
            try:
                scan_artifact(path)
            except UnsafeArtifact as refused:
                if label not in refused.offending:
                    escaped.append((label, refused.offending))
            else:
                escaped.append((label, "passed"))
        if refused_globals([label]) != [label]:
            escaped.append((label, "refused_globals"))
    assert escaped == []


def test_alias_payloads_are_live_unprotected_and_refused(tmp_path: Path) -> None:
    """operator.attrgetter, functools.partial and builtins.type reached through trusted names run
    code under a plain pickle.load; the scan and the restricted unpicklers refuse them by name."""
    from tests.estimators.malicious import build_corpus

    cases = [c for c in build_corpus(tmp_path) if c.name.startswith(("alias_", "newobj_reconstructor"))]
    assert len(cases) == 4
    run_unprotected(cases, tmp_path / "lib")
    assert all(c.marker is not None and c.marker.exists() for c in cases)
    for case in cases:
        assert case.marker is not None
        case.marker.unlink()
        with pytest.raises(UnsafeArtifact) as refused:
            scan_artifact(case.path)
        assert case.offending <= set(refused.value.offending)
        with pytest.raises(UnsafeArtifact), case.path.open("rb") as f:
            RestrictedUnpickler(f).load()
        assert not case.marker.exists()


# -- scan_stream and the restricted joblib loader -------------------------------------------------
def test_scan_stream_reads_an_open_descriptor_and_leaves_it_open(tmp_path: Path) -> None:
    import joblib

    model = LogisticRegression().fit(X, Y)
    for compress in (0, 3):
        path = tmp_path / f"m{compress}.joblib"
        joblib.dump(model, path, compress=compress)
        fd = os.open(path, os.O_RDONLY)
        with open(fd, "rb", buffering=0) as raw:
            report = scan_stream(raw, path.stat().st_size, max_model_bytes=64 << 20)
            assert report.format == "joblib" and not raw.closed
            raw.seek(0)
            loaded = restricted_joblib_load(raw)
            assert not raw.closed
        assert loaded.predict(X).tolist() == model.predict(X).tolist()
    with pytest.raises(UnsafeArtifact, match=re.escape("posix.system")):
        scan_stream(io.BytesIO(pickle.dumps(FunctionTransformer(os.system))), None)


def test_restricted_loaders_judge_real_objects(tmp_path: Path) -> None:
    """Defense in depth: what the scan refuses, the loaders refuse on the real objects too."""
    import joblib

    for obj, named in (
        (FunctionTransformer(np.sum), "numpy.sum"),
        (FunctionTransformer(operator.attrgetter("x")), "attrgetter"),
    ):
        data = pickle.dumps(obj, 4)
        with pytest.raises(UnsafeArtifact, match=named):
            RestrictedUnpickler(io.BytesIO(data)).load()
        buffer = io.BytesIO()
        joblib.dump(obj, buffer)
        buffer.seek(0)
        with pytest.raises(UnsafeArtifact, match=named):
            restricted_joblib_load(buffer)


# -- skops ---------------------------------------------------------------------------------------
def test_skops_nodes_naming_aliases_are_refused(tmp_path: Path) -> None:
    skops_io = pytest.importorskip("skops.io")
    honest = tmp_path / "ft.skops"
    skops_io.dump(FunctionTransformer(np.log1p), honest)
    untrusted = skops_io.get_untrusted_types(file=honest)
    assert refused_globals(untrusted) == []
    # the schema rewritten to name re-exports: a class that is operator.attrgetter, a stored
    # function that is not on the safe list, a module
    for module, name in (ATTRGETTER, ("numpy", "load"), IMPORTLIB, ("scipy._lib._util", "functools")):
        forged = tmp_path / "forged.skops"
        with zipfile.ZipFile(honest) as source, zipfile.ZipFile(forged, "w") as target:
            schema = json.loads(source.read("schema.json"))
            func = schema["content"]["content"]["func"]
            func.update({"__module__": module, "__class__": name})
            if isinstance(func.get("content"), dict):
                func["content"].update({"module_path": module, "function": name})
            target.writestr("schema.json", json.dumps(schema))
            for member in source.namelist():
                if member != "schema.json":
                    target.writestr(member, source.read(member))
        names = skops_io.get_untrusted_types(file=forged)
        label = f"{module}.{name}"
        assert label in names, names
        assert label in refused_globals(names)
