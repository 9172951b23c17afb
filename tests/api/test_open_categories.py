"""Encoders that take categories they were not fitted on (API v1.1 `accepts_unseen`): the fitted
categories are still listed, an unseen value is accepted as the model accepts it, and strict
encoders stay strict (issue: "The models people really train just work")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from tests.support import upload

# The schema (accepts_unseen, the types inferred) is stored and read back: both databases.
pytestmark = pytest.mark.postgresql

CITIES = ["Lyon", "Nice", "Paris"]
UNSEEN = {"income": [30.0, 55.0, 41.0], "city": ["Lyon", "Brest", "Paris"], "floor": [1, 9, 2]}


def _fitted(city_encoder: Any, floor_encoder: Any) -> Pipeline:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "income": rng.normal(40, 10, 300),
            "city": rng.choice(CITIES, 300),
            "floor": rng.choice([1, 2, 3], 300),
        }
    )
    target = (frame["income"] > 40) ^ (frame["city"] == "Paris")
    prepare = ColumnTransformer(
        [("num", StandardScaler(), ["income"]), ("city", city_encoder, ["city"]), ("floor", floor_encoder, ["floor"])]
    )
    return Pipeline([("prepare", prepare), ("clf", LogisticRegression())]).fit(frame, target)


LENIENT = {
    "onehot-ignore": lambda: (OneHotEncoder(handle_unknown="ignore"), OneHotEncoder(handle_unknown="ignore")),
    "onehot-infrequent": lambda: (
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5),
        OneHotEncoder(handle_unknown="infrequent_if_exist"),
    ),
    "ordinal-unknown-value": lambda: (
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
    ),
}


@pytest.mark.parametrize("encoders", LENIENT.values(), ids=LENIENT.keys())
def test_lenient_encoders_list_their_categories_and_take_unseen_ones(client: Any, encoders: Any) -> None:
    model = _fitted(*encoders())
    created = upload(client, "flats", model)
    assert created.status_code == 201, created.json
    city, floor = created.json["features"][1:]
    assert city == {
        "name": "city",
        "type": "string",
        "required": True,
        "allowed": CITIES,
        "minimum": None,
        "maximum": None,
        "accepts_unseen": True,
    }
    assert floor["type"] == "integer" and floor["allowed"] == [1, 2, 3] and floor["accepts_unseen"] is True
    assert client.get("/api/models/flats/versions/1").json["features"] == created.json["features"]
    r = client.post("/api/models/flats/predict", json={"data": UNSEEN, "return_probabilities": True})
    assert r.status_code == 200, r.json
    frame = pd.DataFrame(UNSEEN)
    assert r.json["predictions"] == model.predict(frame).tolist()
    assert [p["True"] for p in r.json["probabilities"]] == pytest.approx(
        model.predict_proba(frame)[:, 1].tolist(), rel=1e-12
    )
    # The type is still enforced: an unseen value must be a value of the feature's type.
    wrong = client.post("/api/models/flats/predict", json={"data": {**UNSEEN, "floor": [1, "9", 2]}})
    assert wrong.status_code == 422
    assert wrong.json["errors"] == {"json": {"data": {"1": {"floor": ["Must be an integer, not a string."]}}}}


def test_strict_encoders_stay_strict(client: Any) -> None:
    model = _fitted(OneHotEncoder(), OrdinalEncoder())
    created = upload(client, "flats", model)
    assert created.status_code == 201, created.json
    assert [f["accepts_unseen"] for f in created.json["features"]] == [False, False, False]
    r = client.post("/api/models/flats/predict", json={"data": UNSEEN})
    assert r.status_code == 422
    assert r.json["errors"] == {
        "json": {
            "data": {"1": {"city": ["Must be one of: 'Lyon', 'Nice', 'Paris'."], "floor": ["Must be one of: 1, 2, 3."]}}
        }
    }


def test_a_declared_feature_may_accept_unseen_values(client: Any) -> None:
    model = _fitted(OneHotEncoder(handle_unknown="ignore"), OneHotEncoder(handle_unknown="ignore"))
    declared = [
        {"name": "income", "minimum": 0},
        {"name": "city", "type": "string", "allowed": ["Paris"], "accepts_unseen": True},
        {"name": "floor", "type": "integer", "allowed": [1, 2, 3]},
    ]
    created = upload(client, "flats", model, {"features": declared})
    assert created.status_code == 201, created.json
    assert [f["accepts_unseen"] for f in created.json["features"]] == [False, True, False]
    ok = client.post("/api/models/flats/predict", json={"data": {**UNSEEN, "floor": [1, 3, 2]}})
    assert ok.status_code == 200, ok.json
    assert ok.json["predictions"] == model.predict(pd.DataFrame({**UNSEEN, "floor": [1, 3, 2]})).tolist()
    refused = client.post("/api/models/flats/predict", json={"data": UNSEEN})
    assert refused.status_code == 422
    assert refused.json["errors"] == {"json": {"data": {"1": {"floor": ["Must be one of: 1, 2, 3."]}}}}


def test_accepts_unseen_without_allowed_values_is_refused_and_records_nothing(client: Any) -> None:
    model = _fitted(OneHotEncoder(handle_unknown="ignore"), OneHotEncoder(handle_unknown="ignore"))
    city: dict[str, Any] = {"name": "city", "type": "string", "accepts_unseen": True}
    declared = [{"name": "income"}, city, {"name": "floor"}]
    r = upload(client, "flats", model, {"features": declared})
    assert r.status_code == 422
    assert r.json["errors"] == {
        "form": {
            "metadata": {
                "features": {"1": {"accepts_unseen": ["accepts_unseen applies to a feature with allowed values only."]}}
            }
        }
    }
    not_boolean = upload(client, "flats", model, {"features": [{**city, "accepts_unseen": "yes"}]})
    assert not_boolean.status_code == 422
    assert client.get("/api/models").json == []


def test_csv_and_whatif_take_an_unseen_value_and_sweep_the_known_ones(client: Any) -> None:
    model = _fitted(OneHotEncoder(handle_unknown="ignore"), OneHotEncoder(handle_unknown="ignore"))
    assert upload(client, "flats", model).status_code == 201
    body = "income,city,floor\n30,Brest,7\n55,Paris,2\n"
    r = client.post("/api/models/flats/predict", data=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.json
    frame = pd.DataFrame({"income": [30.0, 55.0], "city": ["Brest", "Paris"], "floor": [7, 2]})
    assert r.json["predictions"] == model.predict(frame).tolist()
    baseline = {"income": 30.0, "city": "Brest", "floor": 7}
    w = client.post("/api/models/flats/whatif", json={"data": baseline, "features": ["city", "floor"]})
    assert w.status_code == 200, w.json
    sweeps = {f["name"]: f for f in w.json["features"]}
    assert sweeps["city"]["values"] == CITIES
    assert sweeps["floor"]["values"] == [1, 2, 3]
    rows = pd.DataFrame([{**baseline, "city": c} for c in CITIES])
    assert sweeps["city"]["predictions"] == model.predict(rows).tolist()
