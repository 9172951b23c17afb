"""The static pickle safety gate: legitimate models pass and load, hostile artifacts never run."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.svm import SVC

from model_store.errors import InvalidArtifact, UnsafeArtifact
from model_store.safety import RestrictedUnpickler, is_trusted_global, scan_artifact
from tests.conftest import CREDIT_ROW
from tests.malicious import HAVE_LZ4, Case, build_corpus, run_unprotected


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
    }


COMPRESSIONS = ["zlib", "gzip", "bz2", "lzma", "xz"] + (["lz4"] if HAVE_LZ4 else [])


@pytest.mark.parametrize("protocol", range(6))
def test_legit_pickles_pass_and_load(legit_models: Any, tmp_path: Path, protocol: int) -> None:
    for name, (model, rows) in legit_models.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps(model, protocol=protocol))
        report = scan_artifact(path)
        assert report.format == "pickle" and report.compression is None, name
        assert any(g.startswith("sklearn.") for g in report.globals), name
        with path.open("rb") as f:
            loaded = RestrictedUnpickler(f).load()
        assert loaded.predict(rows).tolist() == model.predict(rows).tolist(), name


@pytest.mark.parametrize("compression", [None, *COMPRESSIONS])
def test_legit_joblib_files_pass_and_load(legit_models: Any, tmp_path: Path, compression: str | None) -> None:
    for name, (model, rows) in legit_models.items():
        path = tmp_path / f"{name}.joblib"
        joblib.dump(model, path, compress=(compression, 3) if compression else 0)
        report = scan_artifact(path)
        assert report.format == "joblib", name
        assert report.compression == compression, name
        assert "joblib.numpy_pickle.NumpyArrayWrapper" in report.globals, name
        assert joblib.load(path).predict(rows).tolist() == model.predict(rows).tolist(), name


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
    live = [c for c in corpus if c.marker is not None and c.live_here]
    assert len(live) >= 20
    run_unprotected(live, live[0].path.parent / "lib")
    ran = [c.name for c in live if c.marker is not None and c.marker.exists()]
    assert len(ran) >= 20, ran
    for case in live:
        if case.marker is not None:
            case.marker.unlink(missing_ok=True)


def test_every_hostile_artifact_is_refused_by_name(corpus: list[Case]) -> None:
    for case in corpus:
        with pytest.raises(UnsafeArtifact) as refused:
            scan_artifact(case.path)
        assert case.offending <= set(refused.value.offending), (case.name, refused.value.offending)
        assert refused.value.message.startswith("Artifact refused"), case.name
        if case.marker is not None:
            assert not case.marker.exists(), case.name


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
    [b"", b"\x80", b"garbage that is not a pickle", os.urandom(512), b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7f"],
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
    from tests.fixture_models import PickyRegressor

    path = tmp_path / "picky.joblib"
    joblib.dump(PickyRegressor().fit(pd.DataFrame({"a": [1.0]})), path)
    with pytest.raises(UnsafeArtifact, match="tests.fixture_models.PickyRegressor"):
        scan_artifact(path)
    assert scan_artifact(path, ["tests"]).format == "joblib"
