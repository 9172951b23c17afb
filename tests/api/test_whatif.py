"""What-if (API v1.1): every number answered is the model's own for that row, and bad requests are 422/413."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.support import upload

CREDIT_SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "type": "integer", "minimum": 18, "maximum": 80},
    {"name": "income", "type": "number"},
    {"name": "gender", "type": "string", "allowed": ["female", "male"]},
    {"name": "region", "type": "string", "allowed": ["north", "south", "east"]},
]
BASELINE = {"age": 35, "income": 42000.0, "gender": "male", "region": "north"}


@pytest.fixture
def credit(client: Any, credit_pipeline: Any) -> Any:
    created = upload(client, "credit", credit_pipeline, {"features": CREDIT_SCHEMA, "example": BASELINE})
    assert created.status_code == 201, created.json
    return client


def _swept_rows(baseline: dict[str, Any], feature: str, values: list[Any]) -> pd.DataFrame:
    return pd.DataFrame([{**baseline, feature: v} for v in values])[list(baseline)]


def test_every_number_is_the_models_own(credit: Any, credit_pipeline: Any) -> None:
    r = credit.post("/api/models/credit/versions/1/whatif", json={"data": BASELINE})
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["model"], body["version"], body["target"]) == ("credit", 1, "1")
    base = pd.DataFrame([BASELINE])
    assert body["baseline"]["prediction"] == credit_pipeline.predict(base)[0]
    assert body["baseline"]["score"] == pytest.approx(credit_pipeline.predict_proba(base)[0, 1], rel=1e-12)

    by_name = {f["name"]: f for f in body["features"]}
    assert set(by_name) == {"age", "income", "gender", "region"}
    # The grids: an integer's distinct integers over its bounds, a number's derived [0, 2b],
    # the allowed values of a string in their order.
    ages = by_name["age"]["values"]
    assert ages[0] == 18 and ages[-1] == 80 and all(type(a) is int for a in ages) and ages == sorted(set(ages))
    assert len(ages) == 25
    assert by_name["income"]["values"] == pytest.approx(np.linspace(0, 84000, 25).tolist(), abs=0)
    assert by_name["gender"]["values"] == ["female", "male"]
    assert by_name["region"]["values"] == ["north", "south", "east"]

    for name, feature in by_name.items():
        rows = _swept_rows(BASELINE, name, feature["values"])
        assert feature["predictions"] == credit_pipeline.predict(rows).tolist(), name
        assert feature["scores"] == pytest.approx(credit_pipeline.predict_proba(rows)[:, 1].tolist(), rel=1e-12)
        # ... and exactly what the predict route answers for those rows
        answered = credit.post(
            "/api/models/credit/versions/1/predict",
            json={"data": rows.to_dict("records"), "return_probabilities": True},
        ).json
        assert feature["predictions"] == answered["predictions"]
        # (to the last bits: a row's answer may differ by an ulp between two places in a batch)
        assert feature["scores"] == pytest.approx([p["1"] for p in answered["probabilities"]], rel=1e-12)
        assert feature["swing"] == max(feature["scores"]) - min(feature["scores"])

    swings = [f["swing"] for f in body["features"]]
    assert swings == sorted(swings, reverse=True)


def test_the_flip_is_the_nearest_value_that_changes_the_answer(credit: Any, credit_pipeline: Any) -> None:
    body = credit.post("/api/models/credit/whatif", json={"data": BASELINE, "features": ["income"], "points": 200}).json
    (income,) = body["features"]
    base_prediction = body["baseline"]["prediction"]
    flips = [v for v, p in zip(income["values"], income["predictions"], strict=True) if p != base_prediction]
    assert flips, "the income sweep must cross the decision boundary (the fixture's target depends on income)"
    nearest = min(flips, key=lambda v: abs(v - BASELINE["income"]))
    assert income["flip"]["value"] == nearest
    flipped = pd.DataFrame([{**BASELINE, "income": nearest}])
    assert income["flip"]["prediction"] == credit_pipeline.predict(flipped)[0] != base_prediction
    assert income["flip"]["score"] == pytest.approx(credit_pipeline.predict_proba(flipped)[0, 1], rel=1e-12)


def test_features_ranges_points_and_target(credit: Any, credit_pipeline: Any) -> None:
    r = credit.post(
        "/api/models/credit/versions/latest/whatif",
        json={
            "data": BASELINE,
            "features": ["age", "income"],
            "points": 5,
            "ranges": {"income": [10000, 150000], "age": [20, 22]},
            "target": "0",
        },
    )
    assert r.status_code == 200, r.json
    by_name = {f["name"]: f for f in r.json["features"]}
    assert by_name["income"]["values"] == [10000.0, 45000.0, 80000.0, 115000.0, 150000.0]
    assert by_name["age"]["values"] == [20, 21, 22]  # 5 points over 3 integers: each once
    rows = _swept_rows(BASELINE, "income", by_name["income"]["values"])
    assert by_name["income"]["scores"] == pytest.approx(credit_pipeline.predict_proba(rows)[:, 0].tolist(), rel=1e-12)
    assert r.json["target"] == "0"


def test_a_regressor_scores_by_its_prediction(client: Any, regressor: Any) -> None:
    assert upload(client, "reg", regressor).status_code == 201
    body = client.post("/api/models/reg/whatif", json={"data": {"x1": 0.5, "x2": -1.0}, "points": 3}).json
    assert body["target"] is None
    by_name = {f["name"]: f for f in body["features"]}
    assert by_name["x1"]["values"] == [-0.5, 0.5, 1.5]  # span max(|b|, 1) around b
    rows = _swept_rows({"x1": 0.5, "x2": -1.0}, "x1", by_name["x1"]["values"])
    assert by_name["x1"]["scores"] == by_name["x1"]["predictions"]
    assert by_name["x1"]["predictions"] == pytest.approx(regressor.predict(rows).tolist(), rel=1e-12)
    assert by_name["x1"]["swing"] == pytest.approx(6.0)  # 3 * x1 over a span of 2
    r = client.post("/api/models/reg/whatif", json={"data": {"x1": 0.5, "x2": -1.0}, "target": "1"})
    assert r.status_code == 422 and r.json["errors"] == {"json": {"target": ["The model has no predict_proba."]}}


def test_string_labels_and_the_default_target(client: Any, string_classifier: Any) -> None:
    assert upload(client, "bmi", string_classifier).status_code == 201
    body = client.post("/api/models/bmi/whatif", json={"data": {"height": 170.0, "weight": 70.0}}).json
    assert body["target"] == string_classifier.classes_[-1] == "light"
    assert body["baseline"]["prediction"] in ("heavy", "light")


@pytest.mark.parametrize(
    "request_body, errors",
    [
        ({"features": ["zip"]}, {"json": {"features": {"zip": ["Unknown feature."]}}}),
        ({"features": ["age", "age"]}, {"json": {"features": {"age": ["Listed twice."]}}}),
        ({"features": []}, {"json": {"features": ["Length must be between 1 and 10000."]}}),
        ({"ranges": {"zip": [0, 1]}}, {"json": {"ranges": {"zip": ["Unknown feature."]}}}),
        (
            {"ranges": {"gender": [0, 1]}},
            {"json": {"ranges": {"gender": ["Only a numeric feature without allowed values has a range."]}}},
        ),
        ({"ranges": {"age": [10, 50]}}, {"json": {"ranges": {"age": ["Outside the feature's bounds [18, 80]."]}}}),
        (
            {"ranges": {"income": [5, 5]}},
            {"json": {"ranges": {"income": ["The range's low end must be below its high end."]}}},
        ),
        ({"ranges": {"income": [1]}}, {"json": {"ranges": {"income": {"value": ["Length must be 2."]}}}}),
        ({"ranges": {"age": [20.2, 20.8]}}, {"json": {"ranges": {"age": ["[20.2, 20.8] holds no integer."]}}}),
        ({"points": 1}, {"json": {"points": ["Must be greater than or equal to 2 and less than or equal to 200."]}}),
        ({"points": 201}, {"json": {"points": ["Must be greater than or equal to 2 and less than or equal to 200."]}}),
        ({"target": "7"}, {"json": {"target": ["Must be one of: '0', '1'."]}}),
        ({"data": [BASELINE, BASELINE]}, {"json": {"data": ["2 rows, not 1."]}}),
        ({"data": {**BASELINE, "age": 200}}, {"json": {"data": {"age": ["Must be at most 80."]}}}),
        ({"data": None}, {"json": {"data": ["Field may not be null."]}}),
        ({"surprise": 1}, {"json": {"surprise": ["Unknown field."]}}),
    ],
)
def test_bad_requests_are_422(credit: Any, request_body: dict[str, Any], errors: dict[str, Any]) -> None:
    r = credit.post("/api/models/credit/versions/1/whatif", json={"data": BASELINE, **request_body})
    assert r.status_code == 422, r.json
    assert r.json["errors"] == errors
    assert r.json["code"] == 422 and r.json["status"] == "Unprocessable Entity" and r.json["message"]


def test_a_string_feature_without_allowed_values_is_not_swept(client: Any, lenient_credit_pipeline: Any) -> None:
    free = [{**f, "allowed": None} if f["name"] == "region" else f for f in CREDIT_SCHEMA]
    assert upload(client, "free", lenient_credit_pipeline, {"features": free}).status_code == 201
    r = client.post("/api/models/free/whatif", json={"data": BASELINE, "features": ["region"]})
    assert r.status_code == 422
    assert r.json["errors"] == {
        "json": {"features": {"region": ["A string feature without allowed values cannot be swept."]}}
    }
    swept = client.post("/api/models/free/whatif", json={"data": BASELINE}).json["features"]
    assert sorted(f["name"] for f in swept) == ["age", "gender", "income"]


def test_more_swept_rows_than_the_limit_is_413(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(max_batch_rows=40).test_client()
    assert upload(client, "credit", credit_pipeline, {"features": CREDIT_SCHEMA}).status_code == 201
    r = client.post("/api/models/credit/whatif", json={"data": BASELINE, "features": ["income", "age"]})
    assert r.status_code == 413 and r.json["message"] == "The request has 50 rows, more than the limit of 40."
    ok = client.post("/api/models/credit/whatif", json={"data": BASELINE, "features": ["income", "gender"]})
    assert ok.status_code == 200  # 27 rows


def test_unknown_model_and_version(credit: Any) -> None:
    assert credit.post("/api/models/ghost/whatif", json={"data": BASELINE}).status_code == 404
    assert credit.post("/api/models/credit/versions/9/whatif", json={"data": BASELINE}).status_code == 404


def test_the_baselines_own_value_is_never_a_flip(make_app: Any) -> None:
    """Float noise between two places in one batch (the baseline row, and the swept row that holds
    the baseline's value) makes two answers for one row; the baseline's own value is no change."""
    from tests.estimators.fixture_models import BatchNoiseRegressor

    client = make_app(trusted_modules=("tests",)).test_client()
    model = BatchNoiseRegressor().fit(pd.DataFrame({"x": [1.0]}))
    assert upload(client, "noisy", model).status_code == 201
    body = client.post("/api/models/noisy/whatif", json={"data": {"x": 2.0}, "ranges": {"x": [1, 3]}, "points": 3}).json
    (x,) = body["features"]
    assert x["values"] == [1.0, 2.0, 3.0]
    assert x["predictions"][1] != body["baseline"]["prediction"]  # the noise is there: same row, two answers
    assert x["flip"]["value"] in (1.0, 3.0)  # the nearest value that is a change, not 2.0 itself
