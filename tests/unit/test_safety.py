"""The static pickle safety gate: legitimate models pass and load, hostile artifacts never run."""

from __future__ import annotations

import io
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from model_store.errors import InvalidArtifact, UnsafeArtifact
from model_store.safety import (
    RestrictedUnpickler,
    check_loaded,
    is_trusted_global,
    refused_globals,
    restricted_joblib_load,
    scan_artifact,
)
from tests.estimators.malicious import (
    HAVE_LZ4,
    Case,
    build_corpus,
    call,
    glob,
    program,
    run_allocations_unprotected,
    run_unprotected,
    text,
)
from tests.support import CREDIT_ROW

MAX_MODEL_BYTES = 64 << 20  # a realistic limit for these small models: memo sharing must fit in it


@pytest.fixture(scope="session")
def legit_models(credit_pipeline: Any, string_classifier: Any, regressor: Any) -> dict[str, tuple[Any, pd.DataFrame]]:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(150, 3)), columns=["a", "b", "c"])
    target = (frame["a"] + frame["b"] > 0).astype(int)
    credit = pd.DataFrame([CREDIT_ROW])
    return {
        "pipeline": (credit_pipeline, credit),
        "string_labels": (string_classifier, pd.DataFrame([{"height": 170.0, "weight": 90.0}])),
        "linear": (regressor, pd.DataFrame([{"x1": 1.0, "x2": 2.0}])),
        "forest": (RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, target), frame[:3]),
        "boosting": (GradientBoostingRegressor(n_estimators=5).fit(frame, frame["c"]), frame[:3]),
        "hist": (HistGradientBoostingClassifier(max_iter=5).fit(frame, target), frame[:3]),
        "svc": (SVC().fit(frame, target), frame[:3]),
        # reconstructor functions (sklearn's newObj), masked arrays (cv_results_), stored functions
        # (np.log1p, f_classif: kept as values, never called at load) and a RandomState
        "knn_ball_tree": (KNeighborsClassifier(algorithm="ball_tree").fit(frame, target), frame[:3]),
        "grid_search": (GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(frame, target), frame[:3]),
        "stored_functions": (
            make_pipeline(
                FunctionTransformer(np.abs),
                FunctionTransformer(np.log1p),
                SelectKBest(f_classif, k=2),
                LogisticRegression(),
            ).fit(frame, target),
            frame[:3],
        ),
        "random_state": (SGDClassifier(random_state=np.random.RandomState(3)).fit(frame, target), frame[:3]),
        "mlp": (MLPClassifier(hidden_layer_sizes=(4,), max_iter=2000, random_state=0).fit(frame, target), frame[:3]),
        "kmeans": (KMeans(n_clusters=2, n_init=2, random_state=0).fit(frame), frame[:3]),
        "isolation_forest": (IsolationForest(n_estimators=5, random_state=0).fit(frame), frame[:3]),
    }


COMPRESSIONS = ["zlib", "gzip", "bz2", "lzma", "xz"] + (["lz4"] if HAVE_LZ4 else [])


@pytest.mark.parametrize("protocol", range(6))
def test_legit_pickles_pass_and_load(legit_models: Any, tmp_path: Path, protocol: int) -> None:
    for name, (model, rows) in legit_models.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps(model, protocol=protocol))
        report = scan_artifact(path, max_model_bytes=MAX_MODEL_BYTES)
        assert report.format == "pickle" and report.compression is None, name
        assert any(g.startswith("sklearn.") for g in report.globals), name
        assert 0 < report.references <= MAX_MODEL_BYTES // 8, name
        with path.open("rb") as f:
            loaded = RestrictedUnpickler(f, max_model_bytes=MAX_MODEL_BYTES).load()
        check_loaded(loaded)
        assert loaded.predict(rows).tolist() == model.predict(rows).tolist(), name


@pytest.mark.parametrize("compression", [None, *COMPRESSIONS])
def test_legit_joblib_files_pass_and_load(legit_models: Any, tmp_path: Path, compression: str | None) -> None:
    for name, (model, rows) in legit_models.items():
        path = tmp_path / f"{name}.joblib"
        joblib.dump(model, path, compress=(compression, 3) if compression else 0)
        report = scan_artifact(path, max_model_bytes=MAX_MODEL_BYTES)
        assert report.format == "joblib", name
        assert report.compression == compression, name
        assert "joblib.numpy_pickle.NumpyArrayWrapper" in report.globals, name
        assert joblib.load(path).predict(rows).tolist() == model.predict(rows).tolist(), name
        with path.open("rb") as f:
            loaded = restricted_joblib_load(f, max_model_bytes=MAX_MODEL_BYTES)
        check_loaded(loaded)
        assert loaded.predict(rows).tolist() == model.predict(rows).tolist(), name


def test_large_arrays_are_skipped_not_read_into_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.joblib"
    joblib.dump({"weights": np.zeros((2000, 2000)), "more": np.arange(10)}, path)  # 32 MB of floats
    assert path.stat().st_size > 30_000_000
    assert scan_artifact(path).format == "joblib"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def test_corpus_is_large_and_really_live(corpus: list[Case], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Unprotected pickle/joblib loads (in a throwaway process) do run the payloads."""
    assert len(corpus) >= 20
    live = [c for c in corpus if c.marker is not None and c.live_here and not c.allocates]
    assert len(live) >= 60
    run_unprotected(live, live[0].path.parent / "lib")
    allocating = [c for c in corpus if c.allocates]
    assert len(allocating) >= 5
    run_allocations_unprotected(allocating)
    live += allocating
    idle = [c.name for c in live if c.marker is not None and not c.marker.exists()]
    assert idle == [], f"these payloads did not run unprotected, so they prove nothing: {idle}"
    for case in live:
        if case.marker is not None:
            case.marker.unlink()


def test_every_hostile_artifact_is_refused_by_name(corpus: list[Case]) -> None:
    for case in corpus:
        with pytest.raises(UnsafeArtifact) as refused:
            scan_artifact(case.path, max_model_bytes=MAX_MODEL_BYTES)
        assert case.offending <= set(refused.value.offending), (case.name, refused.value.offending)
        assert refused.value.message.startswith("Artifact refused"), case.name
        if case.marker is not None:
            assert not case.marker.exists(), case.name


def test_corpus_covers_the_issue_list(corpus: list[Case]) -> None:
    """Every family the issue names has at least one live case, refused naming it."""
    named = {name for case in corpus for name in case.offending}
    for family in [
        "os.",
        "posix.",
        "nt.",
        "subprocess.",
        "builtins.eval",
        "builtins.exec",
        "builtins.open",
        "io.open",
        "builtins.getattr",
        "builtins.__import__",
        "importlib.",
        "runpy.",
        "pickle.loads",
        "operator.attrgetter",
        "functools.partial",
        "scipy.",
        "numpy.",
    ]:
        assert any(n.startswith(family) for n in named), family
    names = {case.name for case in corpus}
    for required in [
        "sklearn_function_transformer",
        "numpy_object_array_lzma",
        "stack_global_memo_p5_frames",
        "pickle_loads_zlib_nested",
        "joblib_load_nested_lzma",
        "nt_system",
        "scipy_stats_setstate_exec",
        "alias_attrgetter_importlib",
        "alias_partial_called_by_reconstructor",
        "alias_type_newobj_computed_class",
        "newobj_reconstructor_computed_class",
        "module_object_stored",
        "stored_function_not_safe",
        "dotted_dunder_path",
        "bytearray_size",
        "ndarray_uninitialised",
        "reconstruct_uninitialised",
        "memo_bomb_classes",
        "joblib_array_inflation",
    ]:
        assert required in names, required


def test_a_pickle_calls_only_reconstructors_and_compiled_constructors(tmp_path: Path) -> None:
    """Trusted names may be stored; while loading, only classes built in C/Cython and the known
    reconstructors may be called: a Python __init__ or a plain function runs the pickle's arguments."""
    path = tmp_path / "call.pkl"
    for body, refused in [
        (call(glob("numpy", "add"), b"K\x01", b"K\x02"), "numpy.add"),
        (call(glob("sklearn.linear_model", "LogisticRegression"), b"K\x01"), "sklearn.linear_model.LogisticRegression"),
        (call(glob("numpy", "vectorize"), glob("numpy", "add")), "numpy.vectorize"),
        (call(call(glob("numpy", "vectorize"), b"N"), b"K\x01"), "<call of a computed value>"),
        (call(glob("numpy.random._pickle", "__randomstate_ctor"), text("x"), glob("numpy", "add")), "numpy.add"),
        (
            call(glob("numpy.random._pickle", "__bit_generator_ctor"), glob("sklearn.linear_model", "Ridge")),
            "sklearn.linear_model.Ridge",
        ),
        (
            call(
                glob("copyreg", "_reconstructor"), glob("numpy", "ndarray"), glob("sklearn.linear_model", "Ridge"), b"N"
            ),
            "sklearn.linear_model.Ridge",
        ),
    ]:
        path.write_bytes(program(body))
        with pytest.raises(UnsafeArtifact) as caught:
            scan_artifact(path)
        assert refused in caught.value.offending, (refused, caught.value.offending)
    # a ufunc and a numpy scalar type stored as values, and a compiled class called, are what
    # models do; an estimator class stored as a value is not
    path.write_bytes(program(b"]", b"(", glob("numpy", "add"), glob("numpy", "float64"), b"e"))
    assert scan_artifact(path).format == "pickle"
    path.write_bytes(program(b"]", b"(", glob("numpy", "add"), glob("sklearn.linear_model", "Ridge"), b"e"))
    with pytest.raises(UnsafeArtifact, match=re.escape("sklearn.linear_model.Ridge")):
        scan_artifact(path)
    path.write_bytes(program(call(glob("numpy.random._pickle", "__bit_generator_ctor"), text("PCG64"))))
    assert scan_artifact(path).format == "pickle"


def test_trusted_modules_may_call_their_own_code(tmp_path: Path) -> None:
    path = tmp_path / "picky.pkl"
    path.write_bytes(program(call(glob("tests.estimators.fixture_models", "PickyRegressor"))))
    with pytest.raises(UnsafeArtifact, match=re.escape("tests.estimators.fixture_models.PickyRegressor")):
        scan_artifact(path)
    assert scan_artifact(path, ["tests"]).format == "pickle"  # the operator vouches for `tests`
    with path.open("rb") as f:
        assert type(RestrictedUnpickler(f, extra_trusted_modules=["tests"]).load()).__name__ == "PickyRegressor"


def test_a_name_that_does_not_exist_here_is_invalid_not_imported_blindly(tmp_path: Path) -> None:
    path = tmp_path / "future.pkl"
    path.write_bytes(program(b"]", glob("sklearn.linear_model", "NoSuchModel"), b"a"))
    with pytest.raises(InvalidArtifact, match=re.escape("sklearn.linear_model.NoSuchModel")):
        scan_artifact(path)


def test_denied_classes_are_refused_by_every_loader(tmp_path: Path) -> None:
    """A scipy distribution execs its pickled _parse_arg_template: refused by the scan, by
    RestrictedUnpickler and for skops, although its module passes the package allow-list."""
    from tests.estimators.malicious import _exec_on_setstate

    marker = tmp_path / "ran"
    payload = pickle.dumps(_exec_on_setstate(str(marker)), 4)
    path = tmp_path / "dist.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafeArtifact, match="norm_gen"):
        scan_artifact(path)
    with pytest.raises(UnsafeArtifact, match="norm_gen"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert refused_globals(["scipy.stats._continuous_distns.norm_gen", "sklearn.linear_model.Ridge"]) == [
        "scipy.stats._continuous_distns.norm_gen"
    ]
    assert refused_globals(
        ["scipy._lib._util.MapWrapper", "os.system", "tests.estimators.fixture_models.PickyRegressor"]
    ) == [
        "scipy._lib._util.MapWrapper",
        "os.system",
        "tests.estimators.fixture_models.PickyRegressor",
    ]
    assert refused_globals(["tests.estimators.fixture_models.PickyRegressor"], ["tests"]) == []
    assert not marker.exists()


def test_restricted_unpickler_refuses_untrusted_globals(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    with pytest.raises(UnsafeArtifact, match="system"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(Exploit()))).load()
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x80",
        b"garbage that is not a pickle",
        random.Random(0).randbytes(512),
        b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7f",
    ],
    ids=["empty", "a lone PROTO byte", "text", "random bytes (seeded: xdist workers must collect alike)", "huge frame"],
)
def test_unreadable_files_are_invalid(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(InvalidArtifact):
        scan_artifact(path)


def test_truncated_joblib_is_invalid(credit_pipeline: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(credit_pipeline, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArtifact):
        scan_artifact(path)


def test_trusted_modules_are_matched_on_dotted_boundaries() -> None:
    assert is_trusted_global("numpy", "ndarray")
    assert is_trusted_global("numpy.core.multiarray", "_reconstruct")
    assert is_trusted_global("sklearn.linear_model._logistic", "LogisticRegression")
    assert not is_trusted_global("numpyx", "foo")
    assert not is_trusted_global("numpy", "load")
    assert not is_trusted_global("os", "system")
    assert not is_trusted_global("builtins", "eval")
    assert not is_trusted_global("mymodels", "Net")
    assert is_trusted_global("mymodels", "Net", ["mymodels"])
    assert is_trusted_global("mymodels.nets", "Net", ["mymodels"])
    assert not is_trusted_global("mymodelsx", "Net", ["mymodels"])
    assert not is_trusted_global("os", "system", ["os"])  # never, even when listed


def test_extra_trusted_modules_let_a_custom_model_through(tmp_path: Path) -> None:
    from tests.estimators.fixture_models import PickyRegressor

    path = tmp_path / "picky.joblib"
    joblib.dump(PickyRegressor().fit(pd.DataFrame({"a": [1.0]})), path)
    with pytest.raises(UnsafeArtifact, match=re.escape("tests.estimators.fixture_models.PickyRegressor")):
        scan_artifact(path)
    assert scan_artifact(path, ["tests"]).format == "joblib"


def test_skops_constructor_calls_are_checked_like_pickle_calls(tmp_path: Path) -> None:
    """skops builds some objects by calling their class with arguments from the file: that class
    must be one a pickle may call too (datetime's may; numpy.vectorize, with Python __init__, not)."""
    import datetime
    import json
    import zipfile

    import skops.io

    from model_store.loader import detect_and_load

    honest = tmp_path / "tz.skops"
    skops.io.dump({"tz": datetime.timezone(datetime.timedelta(hours=1))}, honest)
    with honest.open("rb") as f:
        loaded, fmt, _ = detect_and_load(f)
    assert fmt == "skops" and loaded == {"tz": datetime.timezone(datetime.timedelta(hours=1))}

    forged = tmp_path / "forged.skops"
    with zipfile.ZipFile(honest) as source, zipfile.ZipFile(forged, "w") as target:
        schema = json.loads(source.read("schema.json"))
        schema["content"]["tz"].update({"__module__": "numpy", "__class__": "vectorize"})
        target.writestr("schema.json", json.dumps(schema))
    assert "numpy.vectorize" in skops.io.get_untrusted_types(file=forged)
    with pytest.raises(UnsafeArtifact) as refused, forged.open("rb") as f:
        detect_and_load(f)
    assert refused.value.offending == ["numpy.vectorize"]
