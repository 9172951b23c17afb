"""Native categorical features (issue 12) without HTTP: what is read from each framework's fitted
model, the best-effort fallbacks, the runner's typed input, and the frameworks recorded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from model_store.features import infer_feature_schema, native_categories
from model_store.loader import framework_versions
from serving.runners.runner import _categorical_dtype, assemble

CITIES = ["Lyon", "Nice", "Paris"]


def applicants(cities: list[str] = CITIES, rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows).astype(float),
            "city": pd.Categorical(rng.choice(cities, rows), categories=cities),
            "code": pd.Categorical(rng.choice([1, 2, 3], rows), categories=[1, 2, 3]),
            "k": rng.integers(0, 4, rows),
        }
    )
    target = ((frame["city"] == cities[-1]) ^ (frame["age"] > 50)).astype(int).to_numpy()
    return frame, target


def schema(model: object) -> list[tuple[str, str, list[object] | None]]:
    return [
        (f.name, f.type.value, list(f.allowed) if f.allowed is not None else None) for f in infer_feature_schema(model)
    ]


def runner_input(model: object, rows: pd.DataFrame) -> pd.DataFrame:
    """The DataFrame a runner builds from JSON-like columns (objects, ints, floats)."""
    dtypes = {name: _categorical_dtype(c) for name, c in native_categories(model).items()}
    columns = {
        "age": rows["age"].to_numpy(dtype=float),
        "city": np.array(rows["city"].astype(str).tolist(), dtype=object),
        "code": np.array(rows["code"].astype(int).tolist()),
        "k": rows["k"].to_numpy(dtype=np.int64),
    }
    frame = assemble(columns, list(columns), list(columns), dtypes)
    assert isinstance(frame, pd.DataFrame)
    return frame


def test_hist_gradient_boosting_schema_and_input() -> None:
    train, target = applicants()
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(train, target)
    assert schema(model) == [
        ("age", "number", None),
        ("city", "string", CITIES),
        ("code", "integer", [1, 2, 3]),
        ("k", "number", None),
    ]
    rows = train.head(20)
    assert model.predict_proba(runner_input(model, rows)).tolist() == model.predict_proba(rows).tolist()


def test_lightgbm_schema_and_input() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    train, target = applicants()
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(train, target)
    assert schema(model)[1:3] == [("city", "string", CITIES), ("code", "integer", [1, 2, 3])]
    rows = train.head(20)
    assert model.predict_proba(runner_input(model, rows)).tolist() == model.predict_proba(rows).tolist()


def test_lightgbm_with_other_categorical_columns_gives_no_categories() -> None:
    # categorical_feature= names an integer column too: the stored categories no longer say which
    # column is which, so none are read (the model then refuses string input itself).
    lightgbm = pytest.importorskip("lightgbm")
    train, target = applicants()
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(
        train, target, categorical_feature=["city", "code", "k"]
    )
    assert native_categories(model) == {}


def test_xgboost_schema_and_input() -> None:
    xgboost = pytest.importorskip("xgboost")
    train, target = applicants()
    model = xgboost.XGBClassifier(n_estimators=10, enable_categorical=True, tree_method="hist").fit(train, target)
    assert schema(model)[1:3] == [("city", "string", CITIES), ("code", "integer", [1, 2, 3])]
    rows = train.head(20)
    assert model.predict_proba(runner_input(model, rows)).tolist() == model.predict_proba(rows).tolist()


def test_xgboost_non_ascii_categories_are_left_unknown() -> None:
    # xgboost 3.2 stores string categories as UTF-8 bytes cut at character offsets: not readable.
    xgboost = pytest.importorskip("xgboost")
    train, target = applicants(["Lyon", "Paris", "Zürich"])
    model = xgboost.XGBClassifier(n_estimators=5, enable_categorical=True, tree_method="hist").fit(train, target)
    assert native_categories(model) == {"city": None, "code": [1, 2, 3]}
    assert schema(model)[1] == ("city", "string", None)


def test_models_without_native_categoricals_are_left_alone() -> None:
    train, target = applicants()
    numbers = train[["age", "k"]]
    assert native_categories(HistGradientBoostingClassifier(max_iter=5).fit(numbers, target)) == {}
    columns = {"age": numbers["age"].to_numpy(), "k": numbers["k"].to_numpy()}
    frame = assemble(columns, list(columns), list(columns), {})
    assert [str(t) for t in frame.dtypes] == ["float64", "int64"]


def test_framework_versions_of_the_referenced_globals() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    referenced = {"lightgbm.sklearn.LGBMClassifier", "collections.OrderedDict", "sklearn.tree.X", "numpy.dtype"}
    assert framework_versions(referenced) == {"lightgbm": lightgbm.__version__}
    assert framework_versions({"builtins.int", "_codecs.encode"}) == {}


# -- what trusting lightgbm/xgboost lets through, and no more ------------------------------------
def test_a_defaultdict_of_ordered_dicts_loads() -> None:
    # LightGBM's best_score: collections.OrderedDict stored as a class value (a defaultdict factory).
    import collections
    import tempfile

    from model_store.loader import detect_and_load
    from tests.support import joblib_bytes

    with tempfile.TemporaryFile() as file:
        file.write(joblib_bytes(collections.defaultdict(collections.OrderedDict)))
        loaded, _, _ = detect_and_load(file)
    assert loaded.default_factory is collections.OrderedDict


def test_a_native_handle_only_in_an_instance_of_a_trusted_class() -> None:
    import ctypes

    from sklearn.linear_model import LinearRegression

    from model_store.errors import UnsafeArtifact
    from model_store.safety import check_loaded

    xgboost = pytest.importorskip("xgboost")
    train, target = applicants()
    booster = xgboost.XGBClassifier(n_estimators=2, enable_categorical=True).fit(train, target).get_booster()
    assert type(booster.handle) is ctypes.c_void_p
    check_loaded(booster, ("xgboost",))
    with pytest.raises(UnsafeArtifact):
        check_loaded(booster)  # xgboost not trusted
    plain = LinearRegression()
    plain.handle = ctypes.c_void_p(1)
    with pytest.raises(UnsafeArtifact):
        check_loaded(plain, ("xgboost",))  # not held by a trusted class's instance
    booster.extra = [ctypes.c_void_p(1)]
    with pytest.raises(UnsafeArtifact):
        check_loaded(booster, ("xgboost",))  # not directly
    del booster.extra
    booster.text = ctypes.c_char_p(b"x")
    with pytest.raises(UnsafeArtifact):
        check_loaded(booster, ("xgboost",))  # not an opaque pointer
