"""The models data scientists train every day, uploaded as they are: predictions over HTTP equal
the model's own (issue: "The models people really train just work")."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.support import upload

# The schema (accepts_unseen, the types inferred) is stored and read back: both databases.
pytestmark = pytest.mark.postgresql

REVIEWS = [
    "great product, works well",
    "terrible, broke after a day",
    "works as described, great value",
    "awful support and it broke",
    "well made and great",
    "did not work, terrible",
] * 5
LIKED = [1, 0, 1, 0, 1, 0] * 5
NEW_REVIEWS = ["great, works", "broke, awful", "an unseen word only", ""]


def test_a_text_pipeline_fitted_on_a_list_of_documents(client: Any) -> None:
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(REVIEWS, LIKED)
    refused = upload(client, "reviews", model)
    assert refused.status_code == 422
    assert "one feature of type string" in refused.json["message"]
    created = upload(client, "reviews", model, {"features": [{"name": "review", "type": "string"}]})
    assert created.status_code == 201, created.json
    r = client.post("/api/models/reviews/predict", json={"data": {"review": NEW_REVIEWS}, "return_probabilities": True})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == model.predict(NEW_REVIEWS).tolist()
    assert [p["1"] for p in r.json["probabilities"]] == model.predict_proba(NEW_REVIEWS)[:, 1].tolist()
    two = upload(client, "reviews", model, {"features": [{"name": "a", "type": "string"}, {"name": "b"}]})
    assert two.status_code == 422 and "it takes one feature of type string" in two.json["message"]


def test_a_column_transformer_with_a_text_column_infers_string(client: Any) -> None:
    frame = pd.DataFrame(
        {
            "review": REVIEWS,
            "stars": np.tile([5.0, 1.0, 4.0, 2.0, 5.0, 1.0], 5),
            "channel": np.tile(["web", "shop", "web"], 10),
        }
    )
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("text", CountVectorizer(), "review"),
                        ("num", StandardScaler(), ["stars"]),
                        ("cat", OneHotEncoder(), ["channel"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, LIKED)
    created = upload(client, "mixed", model)
    assert created.status_code == 201, created.json
    assert [(f["name"], f["type"], f["allowed"]) for f in created.json["features"]] == [
        ("review", "string", None),
        ("stars", "number", None),
        ("channel", "string", ["shop", "web"]),
    ]
    rows = pd.DataFrame({"review": NEW_REVIEWS, "stars": [5.0, 1.0, 3.0, 2.0], "channel": ["web"] * 4})
    r = client.post("/api/models/mixed/predict", json={"data": rows.to_dict("records")})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == model.predict(rows).tolist()


def test_a_bool_column_is_boolean_when_the_example_shows_it(client: Any) -> None:
    """scikit-learn keeps no input dtypes: a bool column reaching a scaler is inferred `number`,
    and the upload's example (a JSON boolean) tells it was a bool column."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"income": rng.normal(40, 10, 200), "owner": rng.random(200) > 0.5})
    target = frame["owner"] ^ (frame["income"] > 45)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, target)
    guessed = upload(client, "homes", model)
    assert guessed.status_code == 201, guessed.json
    assert [f["type"] for f in guessed.json["features"]] == ["number", "number"]
    shown = upload(client, "homes", model, {"example": {"income": 41.5, "owner": True}})
    assert shown.status_code == 201, shown.json
    assert [f["type"] for f in shown.json["features"]] == ["number", "boolean"]
    data = {"income": [30.0, 50.0, 44.0], "owner": [True, False, True]}
    r = client.post("/api/models/homes/versions/2/predict", json={"data": data, "return_probabilities": True})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == model.predict(pd.DataFrame(data)).tolist()
    assert [p["True"] for p in r.json["probabilities"]] == model.predict_proba(pd.DataFrame(data))[:, 1].tolist()
    refused = client.post("/api/models/homes/versions/2/predict", json={"data": {"income": 30.0, "owner": 1}})
    assert refused.status_code == 422
    assert refused.json["errors"] == {"json": {"data": {"owner": ["Must be a boolean, not a number."]}}}


def test_a_one_hot_encoded_bool_column_is_boolean(client: Any) -> None:
    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"income": rng.normal(40, 10, 200), "owner": rng.random(200) > 0.5})
    target = frame["owner"] ^ (frame["income"] > 45)
    prepare = ColumnTransformer([("num", StandardScaler(), ["income"]), ("cat", OneHotEncoder(), ["owner"])])
    model = Pipeline([("prepare", prepare), ("clf", LogisticRegression())]).fit(frame, target)
    created = upload(client, "homes", model)
    assert created.status_code == 201, created.json
    owner = created.json["features"][1]
    assert (owner["type"], owner["allowed"]) == ("boolean", [False, True])
    data = {"income": [30.0, 50.0], "owner": [True, False]}
    r = client.post("/api/models/homes/predict", json={"data": data})
    assert r.json["predictions"] == model.predict(pd.DataFrame(data)).tolist()


def test_a_forest_saved_with_n_jobs_predicts_in_its_runner(client: Any) -> None:
    """n_jobs=2 would have joblib read the CPU count under /sys, which a runner may not: the runner
    sets n_jobs=1 (the same predictions)."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(8)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = RandomForestClassifier(n_estimators=20, n_jobs=2, random_state=0).fit(frame, frame["a"] > frame["b"])
    created = upload(client, "forest", model)
    assert created.status_code == 201, created.json
    rows = {"a": [0.5, -1.0, 2.0], "b": [0.1, 0.3, -2.0]}
    r = client.post("/api/models/forest/predict", json={"data": rows, "return_probabilities": True})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == model.predict(pd.DataFrame(rows)).tolist()
    assert [p["True"] for p in r.json["probabilities"]] == model.predict_proba(pd.DataFrame(rows))[:, 1].tolist()
