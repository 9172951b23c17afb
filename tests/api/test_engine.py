"""The backend engine (API v1.1): versions compiled to ONNX at upload, verified, and served by
onnxruntime in their runner; `engine` in the request and in every answer."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.api.context import runtime
from tests.estimators.fixture_models import PickyRegressor
from tests.support import upload

# Uploads, versions and the store meet the database: both databases.
pytestmark = pytest.mark.postgresql

PROBABILITY_TOLERANCE = 1e-5


def _frame(rows: int = 300, features: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])


@pytest.fixture(scope="module")
def numeric_pipeline() -> Any:
    frame = _frame()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, (frame.f0 + frame.f1 > 0).astype(int))


@pytest.fixture(scope="module")
def forest() -> Any:
    """An odd number of fully grown trees: no row's vote is a tie (which the graph may break another way)."""
    frame = _frame(features=4, seed=1)
    return RandomForestClassifier(n_estimators=21, random_state=0).fit(frame, (frame.f0 * frame.f1 > 0).astype(int))


@pytest.fixture(scope="module")
def linear() -> Any:
    frame = _frame(features=3, seed=2)
    return LinearRegression().fit(frame, 3 * frame.f0 - 2 * frame.f1 + 0.5 * frame.f2 + 1)


CREDIT_ROWS = pd.DataFrame(
    {
        "age": [25, 35, 52, 61, 44],
        "income": [21000.0, 42000.0, 61000.0, 88000.0, 35000.0],
        "gender": ["female", "male", "female", "male", "male"],
        "region": ["north", "south", "east", "north", "east"],
    }
)


def _models(request: pytest.FixtureRequest) -> dict[str, tuple[Any, pd.DataFrame]]:
    return {
        "numeric": (request.getfixturevalue("numeric_pipeline"), _frame(50, seed=9)),
        "credit": (request.getfixturevalue("credit_pipeline"), CREDIT_ROWS),
        "forest": (request.getfixturevalue("forest"), _frame(50, 4, seed=8)),
        "linear": (request.getfixturevalue("linear"), _frame(50, 3, seed=7)),
    }


@pytest.mark.parametrize("name", ["numeric", "credit", "forest", "linear"])
def test_a_model_that_converts_is_compiled_and_answers_as_itself(
    client: Any, request: pytest.FixtureRequest, name: str
) -> None:
    model, rows = _models(request)[name]
    created = upload(client, name, model)
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn", "onnx"], created.json["engine_detail"]
    assert created.json["engine_detail"] is None
    assert client.get(f"/api/models/{name}/versions/1").json["engines"] == ["sklearn", "onnx"]

    classifier = hasattr(model, "predict_proba")
    answers = {}
    for engine in ("onnx", "sklearn", "auto"):
        body = {"data": rows.to_dict("records"), "engine": engine, "return_probabilities": classifier}
        r = client.post(f"/api/models/{name}/versions/1/predict", json=body)
        assert r.status_code == 200, r.json
        assert r.json["engine"] == ("onnx" if engine == "auto" else engine)
        answers[engine] = r.json
    # The frame as the service builds it from JSON, one array per column: its memory layout (and so
    # the last bit of a dot product) may differ from a frame made of one 2-D array, with some pandas.
    own = model.predict(pd.DataFrame(rows.to_dict("list")))
    for engine, answer in answers.items():
        if classifier:
            assert answer["predictions"] == own.tolist(), engine
            proba = np.array([[p[str(c)] for c in model.classes_] for p in answer["probabilities"]])
            np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=0, atol=PROBABILITY_TOLERANCE)
        else:
            np.testing.assert_allclose(answer["predictions"], own, rtol=1e-5)
    assert answers["sklearn"]["predictions"] == own.tolist()  # the model's own code, to the bit


def test_a_model_fitted_on_an_array_is_compiled_with_one_matrix_input(client: Any, numpy_model: Any) -> None:
    created = upload(client, "plain", numpy_model, {"features": "positional"})
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn", "onnx"], created.json["engine_detail"]
    rows = np.random.default_rng(5).normal(size=(20, 3))
    answers = [
        client.post(
            "/api/models/plain/predict", json={"data": rows.tolist(), "engine": e, "return_probabilities": True}
        ).json
        for e in ("onnx", "sklearn")
    ]
    for answer in answers:
        assert answer["predictions"] == numpy_model.predict(rows).tolist()
        proba = np.array([[p["0"], p["1"]] for p in answer["probabilities"]])
        np.testing.assert_allclose(proba, numpy_model.predict_proba(rows), rtol=0, atol=PROBABILITY_TOLERANCE)


def test_the_other_predict_routes_and_whatif_say_which_engine_answered(client: Any, credit_pipeline: Any) -> None:
    assert upload(client, "credit", credit_pipeline).status_code == 201
    row = CREDIT_ROWS.iloc[0].to_dict()
    row["age"] = int(row["age"])
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("/api/predict", {"model": "credit", "data": row}, "onnx"),
        ("/api", {"data": row, "engine": "sklearn"}, "sklearn"),
        ("/api/models/credit/predict", {"data": row, "engine": "onnx"}, "onnx"),
    ]
    for path, body, answered in calls:
        r = client.post(path, json=body)
        assert r.status_code == 200, r.json
        assert r.json["engine"] == answered
    for engine in ("auto", "sklearn", "onnx"):
        r = client.post("/api/models/credit/whatif", json={"data": row, "engine": engine})
        assert r.status_code == 200, r.json
        assert r.json["engine"] == ("onnx" if engine == "auto" else engine)
    # the same sweep, both engines: the same labels, scores within the tolerance
    onnx, sklearn = (
        client.post("/api/models/credit/whatif", json={"data": row, "engine": e}).json for e in ("onnx", "sklearn")
    )
    for a, b in zip(onnx["features"], sklearn["features"], strict=True):
        assert a["predictions"] == b["predictions"]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=PROBABILITY_TOLERANCE)


def test_v2_infer_names_its_engine_in_the_parameters(client: Any, credit_pipeline: Any) -> None:
    assert upload(client, "credit", credit_pipeline).status_code == 201
    inputs = [
        {"name": "age", "shape": [2], "datatype": "INT64", "data": [35, 52]},
        {"name": "income", "shape": [2], "datatype": "FP64", "data": [42000.0, 61000.0]},
        {"name": "gender", "shape": [2], "datatype": "BYTES", "data": ["male", "female"]},
        {"name": "region", "shape": [2], "datatype": "BYTES", "data": ["north", "east"]},
    ]
    frame = pd.DataFrame({i["name"]: i["data"] for i in inputs})
    for asked, answered in [(None, "onnx"), ("auto", "onnx"), ("sklearn", "sklearn"), ("onnx", "onnx")]:
        body: dict[str, Any] = {"inputs": inputs}
        if asked is not None:
            body["parameters"] = {"engine": asked}
        r = client.post("/v2/models/credit/infer", json=body)
        assert r.status_code == 200, r.json
        assert r.json["parameters"] == {"engine": answered}
        assert r.json["outputs"][0]["data"] == credit_pipeline.predict(frame).tolist()
    r = client.post("/v2/models/credit/infer", json={"inputs": inputs, "parameters": {"engine": "gpu"}})
    assert r.status_code in (400, 422), r.json
    assert "engine" in str(r.json), r.json


def test_a_csv_body_names_its_engine_in_the_query(client: Any, credit_pipeline: Any) -> None:
    assert upload(client, "credit", credit_pipeline).status_code == 201
    sent = CREDIT_ROWS.to_csv(index=False)
    for engine in ("sklearn", "onnx"):
        r = client.post(f"/api/models/credit/predict?engine={engine}", data=sent, content_type="text/csv")
        assert r.status_code == 200, r.json
        assert r.json["engine"] == engine
        assert r.json["predictions"] == credit_pipeline.predict(CREDIT_ROWS).tolist()
    r = client.post("/api/models/credit/predict?engine=fast", data=sent, content_type="text/csv")
    assert r.status_code == 422, r.json


def test_rows_with_missing_values_go_to_sklearn(client: Any) -> None:
    """The graph is verified on complete rows only: a missing value is the model's own code's
    business (auto), and a request that insists on onnx is told so."""
    frame = _frame(200, 2, seed=4)
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(frame, (frame.f0 > 0).astype(int))
    schema = [{"name": "f0", "type": "number", "required": False}, {"name": "f1", "type": "number"}]
    created = upload(client, "imputed", model, {"features": schema})
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn", "onnx"], created.json["engine_detail"]
    complete, missing = {"f0": 0.5, "f1": 1.0}, {"f0": None, "f1": 1.0}
    assert client.post("/api/models/imputed/predict", json={"data": complete}).json["engine"] == "onnx"
    r = client.post("/api/models/imputed/predict", json={"data": missing})
    assert r.status_code == 200, r.json
    assert r.json["engine"] == "sklearn"
    assert r.json["predictions"] == model.predict(pd.DataFrame([{"f0": np.nan, "f1": 1.0}])).tolist()
    r = client.post("/api/models/imputed/predict", json={"data": missing, "engine": "onnx"})
    assert r.status_code == 422, r.json
    assert "missing values" in r.json["message"]


def test_an_unknown_engine_is_422(client: Any, credit_pipeline: Any) -> None:
    assert upload(client, "credit", credit_pipeline).status_code == 201
    r = client.post(
        "/api/models/credit/predict", json={"data": CREDIT_ROWS.iloc[:1].to_dict("records"), "engine": "tf"}
    )
    assert r.status_code == 422, r.json
    assert "engine" in str(r.json["errors"]), r.json


def test_a_model_that_does_not_convert_serves_with_sklearn_and_says_why(make_app: Any) -> None:
    client = make_app(trusted_modules=("tests",)).test_client()
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    created = upload(client, "picky", PickyRegressor().fit(frame, [1.0, 2.0, 3.0]), {"example": {"x": 2.0}})
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn"]
    assert "skl2onnx" in created.json["engine_detail"], created.json["engine_detail"]
    auto = client.post("/api/models/picky/predict", json={"data": {"x": 2.0}})
    assert auto.status_code == 200 and auto.json["engine"] == "sklearn"
    r = client.post("/api/models/picky/predict", json={"data": {"x": 2.0}, "engine": "onnx"})
    assert r.status_code == 422, r.json
    assert "no onnx engine" in r.json["message"]
    r = client.post("/api/models/picky/whatif", json={"data": {"x": 2.0}, "engine": "onnx"})
    assert r.status_code == 422, r.json
    v2 = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2.0]}], "parameters": {"engine": "onnx"}}
    r = client.post("/v2/models/picky/infer", json=v2)
    assert r.status_code == 422, r.json
    assert "no onnx engine" in r.json["error"], r.json


def test_an_artifact_above_the_compile_limit_serves_with_sklearn_and_says_why(
    make_app: Any, numeric_pipeline: Any
) -> None:
    """MAAS_COMPILE_MAX_BYTES: a larger artifact is not compiled in the upload (a big ensemble
    would take minutes and gigabytes there); the same model under the limit is."""
    frame = _frame(5, seed=4)
    client = make_app(compile_max_bytes=100).test_client()
    created = upload(client, "big", numeric_pipeline)
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn"]
    detail = created.json["engine_detail"]
    assert f"({created.json['size_bytes']} bytes) is larger than MAAS_COMPILE_MAX_BYTES (100 bytes)" in detail, detail
    r = client.post("/api/models/big/predict", json={"data": frame.to_dict("records"), "return_probabilities": True})
    assert r.status_code == 200 and r.json["engine"] == "sklearn", r.json
    assert r.json["predictions"] == numeric_pipeline.predict(frame).tolist()
    r = client.post("/api/models/big/predict", json={"data": frame.to_dict("records"), "engine": "onnx"})
    assert r.status_code == 422 and "no onnx engine" in r.json["message"], r.json

    off = make_app(compile_max_bytes=0).test_client()
    created = upload(off, "never", numeric_pipeline)
    assert created.status_code == 201 and created.json["engines"] == ["sklearn"], created.json
    assert created.json["engine_detail"] == "not compiled: MAAS_COMPILE_MAX_BYTES is 0"

    under = make_app(compile_max_bytes=created.json["size_bytes"]).test_client()
    assert upload(under, "fits", numeric_pipeline).json["engines"] == ["sklearn", "onnx"]


def test_the_compile_limit_is_read_from_the_environment() -> None:
    from serving.config import ConfigError, Settings

    assert Settings.from_env({}).compile_max_bytes == 64 << 20
    assert Settings.from_env({"MAAS_COMPILE_MAX_BYTES": "0"}).compile_max_bytes == 0
    assert Settings.from_env({"MAAS_COMPILE_MAX_BYTES": "1000"}).compile_max_bytes == 1000
    with pytest.raises(ConfigError, match="MAAS_COMPILE_MAX_BYTES must be at least 0"):
        Settings.from_env({"MAAS_COMPILE_MAX_BYTES": "-1"})


def test_a_text_pipeline_whose_graph_needs_other_operators_serves_with_sklearn(client: Any) -> None:
    """skl2onnx tokenizes with an operator of the com.microsoft domain: the runner's check refuses
    the graph at upload already, and the version says so."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    reviews = ["great food and friendly staff", "cold soup, rude waiter", "lovely evening", "never again, awful"]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(reviews, [1, 0, 1, 0])
    created = upload(client, "text", model, {"features": [{"name": "review", "type": "string"}]})
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn"]
    assert "refused" in created.json["engine_detail"] and "com.microsoft" in created.json["engine_detail"]
    r = client.post("/api/models/text/predict", json={"data": {"review": reviews[0]}})
    assert r.status_code == 200 and r.json["engine"] == "sklearn", r.json
    assert r.json["predictions"] == model.predict([reviews[0]]).tolist()


def _booster(kind: str) -> tuple[Any, pd.DataFrame, str]:
    """(a fitted gradient-boosting model, rows it never saw, the module to trust)."""
    frame = _frame(400, 4, seed=6)
    three = np.digitize(frame.f0 + frame.f1, [-0.7, 0.7])  # three classes
    value = 3 * frame.f0 - frame.f1 * frame.f2 + 10
    if kind.startswith("lightgbm"):
        lightgbm = pytest.importorskip("lightgbm")
        options = {"n_estimators": 25, "verbose": -1, "random_state": 0}
        model = {
            "lightgbm-binary": lambda: lightgbm.LGBMClassifier(**options).fit(frame, (frame.f0 > 0).astype(int)),
            "lightgbm-multiclass": lambda: lightgbm.LGBMClassifier(**options).fit(frame, three),
            "lightgbm-regressor": lambda: lightgbm.LGBMRegressor(**options).fit(frame, value),
            "lightgbm-pipeline": lambda: make_pipeline(StandardScaler(), lightgbm.LGBMClassifier(**options)).fit(
                frame, np.where(frame.f1 > 0, "yes", "no")
            ),
        }[kind]()
        return model, _frame(60, 4, seed=16), "lightgbm"
    xgboost = pytest.importorskip("xgboost")
    options = {"n_estimators": 25, "max_depth": 4, "random_state": 0}
    model = {
        "xgboost-binary": lambda: xgboost.XGBClassifier(**options).fit(frame, (frame.f0 > 0).astype(int)),
        "xgboost-multiclass": lambda: xgboost.XGBClassifier(**options).fit(frame, three),
        "xgboost-regressor": lambda: xgboost.XGBRegressor(**options).fit(frame, value),
    }[kind]()
    return model, _frame(60, 4, seed=17), "xgboost"


@pytest.mark.parametrize(
    "kind",
    [
        "lightgbm-binary",
        "lightgbm-multiclass",
        "lightgbm-regressor",
        "lightgbm-pipeline",
        "xgboost-binary",
        "xgboost-multiclass",
        "xgboost-regressor",
    ],
)
def test_lightgbm_and_xgboost_models_are_compiled_with_onnxmltools(make_app: Any, kind: str) -> None:
    """LightGBM and XGBoost (alone, or as a pipeline's last step) convert through onnxmltools'
    converters, verify, and answer as the model does on rows the verification never saw."""
    model, rows, module = _booster(kind)
    client = make_app(trusted_modules=(module,)).test_client()
    created = upload(client, "boosted", model)
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn", "onnx"], created.json["engine_detail"]
    assert created.json["engine_detail"] is None
    records = rows.to_dict("records")
    classifier = hasattr(model, "classes_")
    r = client.post(
        "/api/models/boosted/predict", json={"data": records, "engine": "onnx", "return_probabilities": classifier}
    )
    assert r.status_code == 200, r.json
    assert r.json["engine"] == "onnx"
    want = model.predict(rows)
    if classifier:
        assert r.json["predictions"] == want.tolist()
        got = np.array([[p[str(c)] for c in model.classes_] for p in r.json["probabilities"]])
        assert np.abs(got - model.predict_proba(rows)).max() <= PROBABILITY_TOLERANCE
    else:  # onnxruntime's trees sum in float32
        assert np.allclose(r.json["predictions"], want, rtol=1e-5, atol=1e-5)
    auto = client.post("/api/models/boosted/predict", json={"data": records[:1]})
    assert auto.status_code == 200 and auto.json["engine"] == "onnx", auto.json


def test_lightgbm_on_category_columns_serves_with_sklearn_and_says_why(make_app: Any) -> None:
    """onnxmltools' graph of a LightGBM model fitted on category columns expects the category
    codes in one input, not the columns: it does not convert, and the version says why."""
    lightgbm = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"x": rng.normal(size=300), "colour": pd.Categorical(rng.choice(["red", "green", "blue"], size=300))}
    )
    target = ((frame.colour == "red") ^ (frame.x > 0)).astype(int)
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, min_child_samples=5).fit(frame, target)
    client = make_app(trusted_modules=("lightgbm",)).test_client()
    created = upload(client, "coloured", model)
    assert created.status_code == 201, created.json
    assert created.json["engines"] == ["sklearn"], created.json
    assert "skl2onnx cannot convert it" in created.json["engine_detail"], created.json["engine_detail"]
    rows = frame.iloc[:5]
    r = client.post("/api/models/coloured/predict", json={"data": rows.astype({"colour": str}).to_dict("records")})
    assert r.status_code == 200 and r.json["engine"] == "sklearn", r.json
    assert r.json["predictions"] == model.predict(rows).tolist()


def test_a_fresh_runner_opens_the_stored_graph(app: Any, credit_pipeline: Any, numpy_model: Any) -> None:
    """A worker that did not upload the version (its runner gone) loads the graph from the store,
    its inputs named by the version's schema (x0, x1, ... for a model fitted on an array)."""
    client = app.test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    assert upload(client, "plain", numpy_model, {"features": "positional"}).status_code == 201
    with app.app_context():
        runtime().runners.close()  # every runner killed: the next request starts and loads one
    row = {"age": 35, "income": 42000.0, "gender": "male", "region": "north"}
    r = client.post("/api/models/credit/predict", json={"data": row, "engine": "onnx", "return_probabilities": True})
    assert r.status_code == 200, r.json
    assert r.json["engine"] == "onnx"
    assert r.json["predictions"] == credit_pipeline.predict(pd.DataFrame([row])).tolist()
    rows = [[0.5, -1.25, 2.0], [-0.75, 1.5, 0.0]]
    r = client.post("/api/models/plain/predict", json={"data": rows, "engine": "onnx"})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == numpy_model.predict(np.array(rows)).tolist()


def test_a_graph_the_runner_refuses_leaves_the_version_on_sklearn(
    app: Any, credit_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored graph that does not pass the runner's check (here: replaced behind the store's
    back, with its sha256 recorded to match) costs the version its ONNX engine, not its service."""
    import hashlib

    from onnx import helper

    from registry.models import ModelVersion

    client = app.test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    hostile = helper.make_model(
        helper.make_graph([helper.make_node("Evil", ["age"], ["label"], domain="custom")], "g", [], []),
        opset_imports=[helper.make_opsetid("", 18)],
    ).SerializeToString()
    with app.app_context():
        rt = runtime()
        stored = rt.store.put(__import__("io").BytesIO(hostile))
        with rt.db.write() as session:
            version = session.query(ModelVersion).one()
            version.onnx_sha256 = stored.sha256
        rt.runners.close()
    assert stored.sha256 == hashlib.sha256(hostile).hexdigest()
    row = {"age": 35, "income": 42000.0, "gender": "male", "region": "north"}
    with caplog.at_level("WARNING"):
        r = client.post("/api/models/credit/predict", json={"data": row})
    assert r.status_code == 200, r.json
    assert r.json["engine"] == "sklearn"
    assert "serves without its ONNX engine" in caplog.text
    assert client.post("/api/models/credit/predict", json={"data": row, "engine": "onnx"}).status_code == 422


def test_one_row_timing(app: Any, numeric_pipeline: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Not an assertion: the figures for whoever reads the report (pytest -s): one row through the
    test client, and through the runner alone (the protocol's round trip and the model call)."""
    client = app.test_client()
    assert upload(client, "numeric", numeric_pipeline).status_code == 201
    row = _frame(1, seed=3).iloc[0].to_dict()
    figures = {}
    with app.app_context():
        rt = runtime()
        ref = rt.resolve("numeric", "latest")
        runner = rt.runner(ref)
        inputs = rt.input_schema(ref, runner.facts)
        columns, rows = inputs.check(row)
    for engine in ("sklearn", "onnx"):
        body = {"data": row, "engine": engine, "return_probabilities": True}
        for _ in range(20):
            client.post("/api/models/numeric/predict", json=body)
        started = time.perf_counter()
        for _ in range(200):
            client.post("/api/models/numeric/predict", json=body)
        figures[f"route {engine}"] = (time.perf_counter() - started) / 200 * 1e3
        started = time.perf_counter()
        for _ in range(200):
            runner.predict(columns, rows, inputs.column_names, True, engine)
        figures[f"runner {engine}"] = (time.perf_counter() - started) / 200 * 1e3
    with capsys.disabled():
        print("\none row, ms: " + ", ".join(f"{what} {ms:.3f}" for what, ms in figures.items()))
