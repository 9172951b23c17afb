"""Predictions through the Flask test client, on real models, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.estimators.fixture_models import PickyRegressor
from tests.support import CREDIT_ROW, loans, upload


@pytest.fixture
def credit(client: Any, credit_pipeline: Any) -> Any:
    response = upload(client, "credit", credit_pipeline, {"aliases": ["production"]})
    assert response.status_code == 201, response.json
    return credit_pipeline


def expected(model: Any, rows: list[dict[str, Any]]) -> list[Any]:
    return model.predict(pd.DataFrame(rows)).tolist()


ROWS = [
    CREDIT_ROW,
    {"age": 61.0, "income": 30500.5, "gender": "female", "region": "east"},
    {"age": 23.0, "income": 71000.0, "gender": "female", "region": "south"},
]


def test_one_record(client: Any, credit: Any) -> None:
    r = client.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW})
    assert r.status_code == 200
    assert r.json == {"model": "credit", "version": 1, "engine": "onnx", "predictions": expected(credit, [CREDIT_ROW])}


def test_columnar(client: Any, credit: Any) -> None:
    columns = {k: [row[k] for row in ROWS] for k in CREDIT_ROW}
    r = client.post("/api/predict", json={"model": "credit", "data": columns})
    assert r.status_code == 200
    assert r.json["predictions"] == expected(credit, ROWS)


def test_records(client: Any, credit: Any) -> None:
    r = client.post("/api/predict", json={"model": "credit", "data": ROWS})
    assert r.status_code == 200
    assert r.json["predictions"] == expected(credit, ROWS)


def test_probabilities(client: Any, credit: Any) -> None:
    r = client.post("/api/predict", json={"model": "credit", "data": ROWS, "return_probabilities": True})
    assert r.status_code == 200
    proba = credit.predict_proba(pd.DataFrame(ROWS))
    assert r.json["predictions"] == credit.predict(pd.DataFrame(ROWS)).tolist()
    assert len(r.json["probabilities"]) == 3
    for row, probs in zip(r.json["probabilities"], proba, strict=True):
        assert set(row) == {"0", "1"}
        assert row["0"] == pytest.approx(probs[0])
        assert row["1"] == pytest.approx(probs[1])


def test_probabilities_of_nested_pipelines_match_the_model(client: Any, credit_pipeline: Any) -> None:
    frame, target = loans(seed=5)
    nested = Pipeline(
        [
            ("prepare", credit_pipeline.named_steps["prepare"]),
            ("nothing", "passthrough"),
            (
                "inner",
                Pipeline(
                    [("scale", StandardScaler()), ("forest", RandomForestClassifier(n_estimators=15, random_state=0))]
                ),
            ),
        ]
    ).fit(frame, target)
    assert upload(client, "nested", nested).status_code == 201
    rows = frame.head(40)
    r = client.post(
        "/api/predict",
        json={"model": "nested", "data": rows.to_dict(orient="records"), "return_probabilities": True},
    )
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == nested.predict(rows).tolist()
    served = np.array([[p[str(c)] for c in nested.classes_] for p in r.json["probabilities"]])
    np.testing.assert_allclose(served, nested.predict_proba(rows))


def test_probabilities_absent_unless_asked(client: Any, credit: Any) -> None:
    r = client.post("/api/predict", json={"model": "credit", "data": ROWS})
    assert "probabilities" not in r.json


@pytest.mark.postgresql  # resolving a selector is a query
@pytest.mark.parametrize("selector", [1, "1", "production", "latest", None])
def test_version_selectors(client: Any, credit: Any, selector: Any) -> None:
    r = client.post("/api/predict", json={"model": "credit", "version": selector, "data": CREDIT_ROW})
    assert r.status_code == 200
    assert r.json["version"] == 1


@pytest.mark.parametrize(
    "selector", [2, "2", "staging", "LATEST", True, 1.5, -1, 0, "", "1.0", 2**70, str(2**70), "٣", [1], {"a": 1}]
)
@pytest.mark.postgresql  # resolving a selector is a query
def test_unknown_selectors_are_404(client: Any, credit: Any, selector: Any) -> None:
    r = client.post("/api/predict", json={"model": "credit", "version": selector, "data": CREDIT_ROW})
    assert r.status_code == 404
    assert r.json["code"] == 404 and r.json["status"] == "Not Found" and r.json["message"]


def test_path_variants(client: Any, credit: Any, regressor: Any) -> None:
    assert upload(client, "credit", regressor).status_code == 201
    r = client.post("/api/models/credit/versions/production/predict", json={"data": CREDIT_ROW})
    assert r.status_code == 200 and r.json["version"] == 1
    r = client.post("/api/models/credit/versions/1/predict", json={"data": CREDIT_ROW})
    assert r.status_code == 200 and r.json["version"] == 1
    r = client.post("/api/models/credit/predict", json={"data": {"x1": 1.0, "x2": 2.0}})
    assert r.status_code == 200 and r.json["version"] == 2
    assert r.json["predictions"][0] == pytest.approx(3 * 1 - 2 * 2 + 1)
    r = client.post("/api/models/credit/versions/latest/predict", json={"data": {"x1": 0, "x2": 0}})
    assert r.status_code == 200 and r.json["predictions"][0] == pytest.approx(1.0)


@pytest.mark.postgresql  # resolving a selector is a query
def test_latest_moves_with_uploads_and_deletes(client: Any, credit: Any, credit_pipeline: Any) -> None:
    from tests.support import ADMIN

    assert upload(client, "credit", credit_pipeline).status_code == 201
    assert client.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW}).json["version"] == 2
    assert client.delete("/api/admin/models/credit/versions/2", headers=ADMIN).status_code == 204
    r = client.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW})
    assert r.json["version"] == 1
    r = client.post("/api/predict", json={"model": "credit", "version": 2, "data": CREDIT_ROW})
    assert r.status_code == 404


def test_string_labels(client: Any, string_classifier: Any) -> None:
    assert upload(client, "bmi", string_classifier).status_code == 201
    rows = [{"height": 180.0, "weight": 100.0}, {"height": 180.0, "weight": 55.0}]
    r = client.post("/api/predict", json={"model": "bmi", "data": rows, "return_probabilities": True})
    assert r.status_code == 200
    assert r.json["predictions"] == string_classifier.predict(pd.DataFrame(rows)).tolist()
    assert all(isinstance(p, str) for p in r.json["predictions"])
    assert set(r.json["probabilities"][0]) == {"heavy", "light"}


def test_numpy_fitted_model_with_declared_schema(client: Any, numpy_model: Any) -> None:
    features = [{"name": n, "type": "number"} for n in ("a", "b", "c")]
    assert upload(client, "plain", numpy_model, {"features": features}).status_code == 201
    r = client.post("/api/predict", json={"model": "plain", "data": {"a": [1, -1], "b": [1, -1], "c": [0, 0]}})
    assert r.status_code == 200
    assert r.json["predictions"] == numpy_model.predict(np.array([[1, 1, 0], [-1, -1, 0]])).tolist()


def test_regressor_without_predict_proba(client: Any, regressor: Any) -> None:
    assert upload(client, "reg", regressor).status_code == 201
    r = client.post("/api/predict", json={"model": "reg", "data": {"x1": 1, "x2": 1}, "return_probabilities": True})
    assert r.status_code == 422
    assert "predict_proba" in r.json["message"]


# -- schema checks ----------------------------------------------------------------------------
def test_missing_unknown_and_wrong_type_named_for_one_row(client: Any, credit: Any) -> None:
    row = {"age": "35", "gender": "other", "region": "north", "colour": "red"}
    r = client.post("/api/predict", json={"model": "credit", "data": row})
    assert r.status_code == 422
    errors = r.json["errors"]["json"]["data"]
    assert set(errors) == {"age", "income", "gender", "colour"}
    assert errors["income"] == ["Missing feature."]
    assert errors["colour"] == ["Unknown feature."]
    assert "number" in errors["age"][0]
    assert "one of" in errors["gender"][0]


def test_errors_name_rows_for_many_rows(client: Any, credit: Any) -> None:
    rows = [dict(CREDIT_ROW), dict(CREDIT_ROW, age=True), dict(CREDIT_ROW), {**CREDIT_ROW, "region": None}]
    r = client.post("/api/predict", json={"model": "credit", "data": rows})
    assert r.status_code == 422
    errors = r.json["errors"]["json"]["data"]
    assert set(errors) == {"1", "3"}
    assert set(errors["1"]) == {"age"} and set(errors["3"]) == {"region"}


def test_columnar_errors_name_rows(client: Any, credit: Any) -> None:
    columns = {k: [row[k] for row in ROWS] for k in CREDIT_ROW}
    columns["income"][2] = "lots"
    r = client.post("/api/predict", json={"model": "credit", "data": columns})
    assert r.status_code == 422
    assert set(r.json["errors"]["json"]["data"]) == {"2"}


def test_large_columnar_batch_predicts_and_names_each_bad_row(client: Any, credit: Any) -> None:
    rng = np.random.default_rng(9)
    n = 3000
    columns: dict[str, list[Any]] = {
        "age": rng.integers(18, 90, n).tolist(),  # JSON integers in a number feature
        "income": rng.normal(50_000, 9_000, n).round(2).tolist(),
        "gender": rng.choice(["female", "male"], n).tolist(),
        "region": rng.choice(["east", "north", "south"], n).tolist(),
    }
    r = client.post("/api/predict", json={"model": "credit", "data": columns})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == credit.predict(pd.DataFrame(columns)).tolist()

    columns["age"][17] = 2**80  # a huge integer is still a number
    columns["age"][18] = 10**400  # past float64: out of range
    columns["income"][5] = "__inf__"  # becomes 1e999, a JSON number that parses as infinity
    columns["income"][2999] = None
    columns["region"][1234] = "atlantis"
    raw = json.dumps({"model": "credit", "data": columns}).replace('"__inf__"', "1e999")
    r = client.post("/api/predict", data=raw, content_type="application/json")
    assert r.status_code == 422, r.json
    errors = r.json["errors"]["json"]["data"]
    assert set(errors) == {"5", "18", "1234", "2999"}
    assert errors["5"] == {"income": ["Number out of range."]}
    assert errors["18"] == {"age": ["Number out of range."]}
    assert errors["2999"] == {"income": ["Must not be null."]}
    assert list(errors["1234"]) == ["region"]
    assert "one of" in errors["1234"]["region"][0]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"age": [1, 2], "income": 3}, "mixes"),
        ({"age": [1, 2], "income": [1]}, "one length"),
        ([], "no rows"),
        ({"age": []}, "no rows"),
        ("rows", "must be an object"),
        (42, "must be an object"),
        ([CREDIT_ROW, 3], "does not match"),
    ],
)
def test_bad_shapes_are_422(client: Any, credit: Any, data: Any, fragment: str) -> None:
    r = client.post("/api/predict", json={"model": "credit", "data": data})
    assert r.status_code == 422
    assert fragment in r.json["message"].lower()


def test_bounds_allowed_and_optional_from_declared_schema(client: Any) -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"x1": rng.normal(size=50), "x2": rng.integers(1, 4, 50).astype(float)})
    regressor = make_pipeline(SimpleImputer(), LinearRegression()).fit(frame, 3 * frame["x1"] - 2 * frame["x2"] + 1)
    features = [
        {"name": "x1", "type": "number", "minimum": 0, "maximum": 10},
        {"name": "x2", "type": "integer", "required": False, "allowed": [1, 2, 3]},
    ]
    assert upload(client, "bounded", regressor, {"features": features}).status_code == 201
    ok = client.post("/api/predict", json={"model": "bounded", "data": [{"x1": 0, "x2": 3}, {"x1": 10}]})
    assert ok.status_code == 200, ok.json
    assert ok.json["predictions"][0] == pytest.approx(3 * 0 - 2 * 3 + 1)
    assert ok.json["predictions"][1] == pytest.approx(
        regressor.predict(pd.DataFrame({"x1": [10.0], "x2": [np.nan]}))[0]
    )
    bad = client.post(
        "/api/predict",
        json={"model": "bounded", "data": [{"x1": -1, "x2": 3}, {"x1": 11, "x2": 4}, {"x1": 1, "x2": 2.0}]},
    )
    assert bad.status_code == 422
    errors = bad.json["errors"]["json"]["data"]
    assert "at least" in errors["0"]["x1"][0]
    assert "at most" in errors["1"]["x1"][0] and "one of" in errors["1"]["x2"][0]
    assert "integer" in errors["2"]["x2"][0]


def test_allowed_and_range_hold_for_clean_columns(client: Any, numpy_model: Any) -> None:
    """Columns of well-typed values (checked whole, not value by value) still get every rule."""
    features = [
        {"name": "a", "type": "integer", "allowed": [1, 2, 3]},
        {"name": "b", "type": "number", "allowed": [0.5, 1.5]},
        {"name": "c", "type": "number"},
    ]
    assert upload(client, "plain", numpy_model, {"features": features}).status_code == 201
    ok = client.post("/api/predict", json={"model": "plain", "data": {"a": [1, 3], "b": [0.5, 1.5], "c": [0, 1e300]}})
    assert ok.status_code == 200, ok.json
    for data, row, name, words in (
        ({"a": [1, 7], "b": [0.5, 1.5], "c": [0, 0]}, "1", "a", "one of"),
        ({"a": [1, 2], "b": [2.5, 1.5], "c": [0, 0]}, "0", "b", "one of"),
        ({"a": [1, 2], "b": [0.5, 1.5], "c": [0, 1.75e308]}, "1", "c", "out of range"),
        ({"a": 7, "b": 0.5, "c": 0}, None, "a", "one of"),
    ):
        r = client.post("/api/predict", json={"model": "plain", "data": data})
        assert r.status_code == 422, (data, r.json)
        errors = r.json["errors"]["json"]["data"]
        named = errors if row is None else errors[row]
        assert list(named) == [name] and words in named[name][0].lower(), errors


def test_row_limit_is_413(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(max_batch_rows=5).test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    r = client.post("/api/predict", json={"model": "credit", "data": [CREDIT_ROW] * 6})
    assert r.status_code == 413 and "limit of 5" in r.json["message"]
    assert client.post("/api/predict", json={"model": "credit", "data": [CREDIT_ROW] * 5}).status_code == 200


def test_body_limit_is_413(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(max_request_bytes=2000).test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    r = client.post("/api/predict", json={"model": "credit", "data": [CREDIT_ROW] * 40})
    assert r.status_code == 413
    assert r.json["code"] == 413 and r.json["message"]


# -- bodies ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"model": "credit", "data": {"age": NaN}}',
        b'{"model": "credit", "data": {"age": Infinity}}',
        b'{"model": "credit", "data": {"age": -Infinity}}',
        b"[1, 2]",
        b'"text"',
        b"",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 65 + b"1" + b"}" * 65,
    ],
)
def test_bad_json_is_400(client: Any, credit: Any, body: bytes) -> None:
    r = client.post("/api/predict", data=body, content_type="application/json")
    assert r.status_code == 400
    assert r.json["code"] == 400 and r.json["status"] == "Bad Request" and r.json["message"]


def test_wrong_content_type_is_415(client: Any, credit: Any) -> None:
    r = client.post("/api/predict", data="model=credit", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415 and r.json["message"]


def test_missing_model_field_is_422(client: Any, credit: Any) -> None:
    r = client.post("/api/predict", json={"data": CREDIT_ROW})
    assert r.status_code == 422
    assert "model" in r.json["errors"]["json"]


@pytest.mark.parametrize("name", ["nope", "Credit", "credit\n", "../credit", "c" * 300, "crédit", "cred\x00it"])
def test_unknown_or_invalid_model_is_404(client: Any, credit: Any, name: str) -> None:
    r = client.post("/api/predict", json={"model": name, "data": CREDIT_ROW})
    assert r.status_code == 404 and r.json["message"]


# -- the seed's route ------------------------------------------------------------------------
@pytest.mark.postgresql  # resolving a selector is a query
def test_seed_route_with_single_model(client: Any, credit: Any) -> None:
    r = client.post("/api", json={"data": CREDIT_ROW})
    assert r.status_code == 200 and r.json["model"] == "credit"
    info = client.get("/api")
    assert info.status_code == 200
    assert info.json["model_name"] == "credit" and info.json["version"] == 1
    assert info.json["feature_names"] == ["age", "income", "gender", "region"]
    assert info.json["features"][2]["allowed"] == ["female", "male"]


@pytest.mark.postgresql  # resolving a selector is a query
def test_seed_route_without_default_is_404(client: Any, credit: Any, regressor: Any) -> None:
    assert upload(client, "reg", regressor).status_code == 201
    r = client.post("/api", json={"data": CREDIT_ROW})
    assert r.status_code == 404 and "MAAS_DEFAULT_MODEL" in r.json["message"]
    assert client.get("/api").status_code == 404
    named = client.post("/api", json={"model": "reg", "data": {"x1": 0, "x2": 0}})
    assert named.status_code == 200


@pytest.mark.postgresql  # resolving a selector is a query
def test_seed_route_with_configured_default(make_app: Any, credit_pipeline: Any, regressor: Any) -> None:
    client = make_app(default_model="reg").test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    assert upload(client, "reg", regressor).status_code == 201
    r = client.post("/api", json={"data": {"x1": 0, "x2": 0}})
    assert r.status_code == 200 and r.json["model"] == "reg"


@pytest.mark.postgresql  # resolving a selector is a query
def test_no_models_at_all(client: Any) -> None:
    assert client.post("/api", json={"data": {"a": 1}}).status_code == 404
    assert client.post("/api/predict", json={"model": "x", "data": {"a": 1}}).status_code == 404


# -- failures stay narrow ----------------------------------------------------------------------
def test_model_error_is_422_and_next_request_works(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(trusted_modules=("tests",)).test_client()
    picky = PickyRegressor().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    uploaded = upload(client, "picky", picky)
    assert uploaded.status_code == 201, uploaded.json
    assert upload(client, "credit", credit_pipeline).status_code == 201
    r = client.post("/api/predict", json={"model": "picky", "data": {"a": [1, -1], "b": [1, 1]}})
    assert r.status_code == 422
    assert "ValueError" in r.json["message"]
    assert "/secret" not in r.get_data(as_text=True) and "Traceback" not in r.get_data(as_text=True)
    ok = client.post("/api/predict", json={"model": "picky", "data": {"a": [1, 2], "b": [1, 1]}})
    assert ok.status_code == 200 and ok.json["predictions"] == [2.0, 3.0]
    assert client.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW}).status_code == 200


def test_a_models_exception_tells_the_client_its_class_and_the_log_its_traceback(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.estimators.fixture_models import FussyRegressor

    client = make_app(trusted_modules=("tests",)).test_client()
    frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
    assert upload(client, "picky", PickyRegressor().fit(frame)).status_code == 201
    assert upload(client, "fussy", FussyRegressor().fit(frame)).status_code == 201
    with caplog.at_level("WARNING", logger="serving.runners.pool"):
        fussy = client.post(
            "/api/models/fussy/predict",
            json={"data": {"a": [1, 99], "b": [1, 2]}},
            headers={"X-Request-ID": "trace-fussy-1"},
        )
        picky = client.post("/api/models/picky/predict", json={"data": {"a": -1, "b": 1}})
    assert fussy.status_code == 422
    assert fussy.json["message"] == (
        "Model Version 1 of 'fussy' failed on this input (ValueError: a row sums to more than 100)."
    )
    # A message that names a file stays in the log: the client gets the class only.
    assert picky.status_code == 422
    assert picky.json["message"] == "Model Version 1 of 'picky' failed on this input (ValueError)."
    logged = {r.getMessage().split(" raised ")[0]: r.getMessage() for r in caplog.records}
    assert set(logged) == {"Version 1 of 'fussy'", "Version 1 of 'picky'"}
    for name, frame_name in (("fussy", "_refuse_large"), ("picky", "predict")):
        message = logged[f"Version 1 of '{name}'"]
        assert "Traceback (most recent call last)" in message and f"in {frame_name}" in message, message
    assert "negative input at /secret/path/model.py" in logged["Version 1 of 'picky'"]
    # Each line names the request it was written for: the client's id, or the one it was given.
    ids = {r.getMessage().split(" raised ")[0]: getattr(r, "request_id", None) for r in caplog.records}
    assert ids == {"Version 1 of 'fussy'": "trace-fussy-1", "Version 1 of 'picky'": picky.headers["X-Request-ID"]}


# -- artifacts damaged on disk ----------------------------------------------------------------
def test_damaged_or_vanished_artifact_is_503_for_that_version_only(
    make_app: Any, settings: Any, credit_pipeline: Any, regressor: Any, string_classifier: Any
) -> None:
    client = make_app().test_client()
    shas = {}
    for name, model in (("credit", credit_pipeline), ("reg", regressor), ("bmi", string_classifier)):
        r = upload(client, name, model)
        assert r.status_code == 201, r.json
        shas[name] = r.json["sha256"]
    store = Path(settings.store_dir)
    [damaged] = [p for p in store.rglob(shas["credit"]) if p.is_file()]
    [vanished] = [p for p in store.rglob(shas["reg"]) if p.is_file()]
    original = damaged.read_bytes()
    damaged.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    vanished.unlink()

    # A new worker: nothing cached yet; failures not remembered (MAAS_ARTIFACT_RETRY: test_artifact_retry.py).
    cold = make_app(artifact_retry_seconds=0).test_client()
    credit = {"model": "credit", "data": CREDIT_ROW}
    for body, words in ((credit, "damaged"), ({"model": "reg", "data": {"x1": 1, "x2": 2}}, "missing")):
        r = cold.post("/api/predict", json=body)
        assert r.status_code == 503, r.json
        assert r.json["code"] == 503 and words in r.json["message"]
        assert f"Version 1 of '{body['model']}' cannot be served" in r.json["message"]
        assert "Traceback" not in r.get_data(as_text=True)
    r = cold.post("/api/predict", json={"model": "bmi", "data": {"height": 180.0, "weight": 100.0}})
    assert r.status_code == 200, r.json
    assert (
        r.json["predictions"] == string_classifier.predict(pd.DataFrame([{"height": 180.0, "weight": 100.0}])).tolist()
    )
    assert cold.get("/api/models/credit/versions/1").status_code == 200  # the registry still lists it

    damaged.write_bytes(original)  # repaired: the same worker serves it again, with no restart
    r = cold.post("/api/predict", json=credit)
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == credit_pipeline.predict(pd.DataFrame([CREDIT_ROW])).tolist()
