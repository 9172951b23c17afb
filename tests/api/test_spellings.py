"""More spellings of `data` (API v1.1): rows as arrays, MLflow's scoring format; positional features."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.support import CREDIT_ROW, upload

X = [[0.5, -1.25, 2.0], [-0.75, 1.5, 0.0], [1.0, 1.0, -3.0]]
NAMES = ["x0", "x1", "x2"]
CREDIT_ROWS = [CREDIT_ROW, {"age": 61.0, "income": 30500.5, "gender": "female", "region": "east"}]
CREDIT_ORDER = ["age", "income", "gender", "region"]


@pytest.fixture
def positional(client: Any, numpy_model: Any) -> Any:
    r = upload(client, "plain", numpy_model, {"features": "positional"})
    assert r.status_code == 201, r.json
    assert r.json["features"] == [
        {"name": n, "type": "number", "required": True, "allowed": None, "minimum": None, "maximum": None}
        | {"accepts_unseen": False}
        for n in NAMES
    ]
    return numpy_model


@pytest.fixture
def credit(client: Any, credit_pipeline: Any) -> Any:
    assert upload(client, "credit", credit_pipeline).status_code == 201
    return credit_pipeline


def _predict(client: Any, body: dict[str, Any], route: str = "/api/predict", model: str = "plain") -> Any:
    if route == "/api/predict":
        body = {"model": model, **body}
    r = client.post(route, json=body)
    assert r.status_code == 200, r.json
    return r.json


ROUTES = ["/api/predict", "/api/models/plain/predict", "/api/models/plain/versions/1/predict"]


@pytest.mark.parametrize("route", ROUTES)
def test_positional_model_predicts_from_every_spelling(client: Any, positional: Any, route: str) -> None:
    expected = positional.predict(np.array(X)).tolist()
    records = [dict(zip(NAMES, row, strict=True)) for row in X]
    bodies: list[dict[str, Any]] = [
        {"data": X},
        {"data": records},
        {"dataframe_split": {"columns": NAMES, "data": X}},
        {"dataframe_split": {"columns": NAMES, "data": X, "index": [7, 8, 9]}},
        {"dataframe_records": records},
    ]
    for body in bodies:
        assert _predict(client, body, route)["predictions"] == expected, body
    answer = _predict(client, {"data": X, "return_probabilities": True}, route)
    served = np.array([[p[str(c)] for c in positional.classes_] for p in answer["probabilities"]])
    np.testing.assert_allclose(served, positional.predict_proba(np.array(X)))


def test_the_seed_route_takes_the_spellings(client: Any, positional: Any) -> None:
    r = client.post("/api", json={"dataframe_split": {"columns": NAMES, "data": X}})
    assert r.status_code == 200, r.json
    assert r.json["predictions"] == positional.predict(np.array(X)).tolist()
    r = client.post("/api", json={"data": X[:1]})
    assert r.json["predictions"] == positional.predict(np.array(X[:1])).tolist()


def test_named_model_from_columns_in_another_order_and_from_rows(client: Any, credit: Any) -> None:
    expected = credit.predict(pd.DataFrame(CREDIT_ROWS)).tolist()
    shuffled = ["region", "income", "age", "gender"]
    split = {"columns": shuffled, "data": [[row[c] for c in shuffled] for row in CREDIT_ROWS]}
    assert _predict(client, {"dataframe_split": split}, model="credit")["predictions"] == expected
    rows = [[row[c] for c in CREDIT_ORDER] for row in CREDIT_ROWS]
    assert _predict(client, {"data": rows}, model="credit")["predictions"] == expected
    assert _predict(client, {"dataframe_records": CREDIT_ROWS}, model="credit")["predictions"] == expected
    one = _predict(client, {"data": rows[:1]}, "/api/models/credit/predict")
    assert one["predictions"] == expected[:1]


def test_whatif_baseline_as_one_row(client: Any, credit: Any) -> None:
    route = "/api/models/credit/whatif"
    as_row = client.post(route, json={"data": [[CREDIT_ROW[c] for c in CREDIT_ORDER]], "features": ["age"]})
    as_record = client.post(route, json={"data": CREDIT_ROW, "features": ["age"]})
    assert as_row.status_code == 200, as_row.json
    assert as_row.json == as_record.json
    two = client.post(route, json={"data": [[CREDIT_ROW[c] for c in CREDIT_ORDER]] * 2})
    assert two.status_code == 422 and "exactly one record" in two.json["message"]


def _refused(client: Any, body: dict[str, Any], model: str = "plain") -> Any:
    r = client.post("/api/predict", json={"model": model, **body})
    assert r.status_code == 422, r.json
    assert r.json["code"] == 422 and r.json["status"] == "Unprocessable Entity"
    return r.json


def test_rows_of_the_wrong_length_are_named(client: Any, positional: Any) -> None:
    answer = _refused(client, {"data": [[1, 2, 3], [1, 2], [1, 2, 3, 4], [1, 2, 3]]})
    assert answer["message"] == (
        "Each row given as an array needs 3 values, one per feature in the schema's order (x0, x1, x2); "
        "2 row(s) do not: see errors."
    )
    assert answer["errors"] == {
        "json": {"data": {"1": {"_schema": ["2 values, not 3."]}, "2": {"_schema": ["4 values, not 3."]}}}
    }
    one = _refused(client, {"data": [[1]]})
    assert one["errors"] == {"json": {"data": {"0": {"_schema": ["1 value, not 3."]}}}}


def test_rows_and_records_do_not_mix(client: Any, positional: Any) -> None:
    mixed = (
        "The data mixes rows given as arrays with records given as objects (or other values): "
        "use arrays only or objects only."
    )
    answer = _refused(client, {"data": [[1, 2, 3], {"x0": 1, "x1": 2, "x2": 3}, 4]})
    assert answer["message"] == mixed
    assert answer["errors"] == {
        "json": {
            "data": {
                "1": {"_schema": ["Must be an array of values (a row), as row 0 is, not an object."]},
                "2": {"_schema": ["Must be an array of values (a row), as row 0 is, not a number."]},
            }
        }
    }
    answer = _refused(client, {"data": [{"x0": 1, "x1": 2, "x2": 3}, [1, 2, 3]]})
    assert answer["message"] == mixed
    assert answer["errors"] == {
        "json": {"data": {"1": {"_schema": ["Must be an object (a record), as row 0 is, not an array."]}}}
    }


def test_values_in_rows_are_checked_per_row_and_feature(client: Any, credit: Any) -> None:
    rows = [["35", 42000.0, "male", "north"], [35.0, 42000.0, "other", None], [35.0, 42000.0, "male", "north"]]
    answer = _refused(client, {"data": rows}, model="credit")
    assert answer["message"] == "The input does not match the feature schema of 'credit' version 1: 3 problem(s)."
    assert answer["errors"]["json"]["data"] == {
        "0": {"age": ["Must be a number, not a string."]},
        "1": {"gender": ["Must be one of: 'female', 'male'."], "region": ["Must not be null."]},
    }
    split = {"columns": ["region", "age", "income", "gender", "colour"], "data": [["north", 35, 1.0, "male", "red"]]}
    answer = _refused(client, {"dataframe_split": split}, model="credit")
    assert answer["errors"]["json"]["data"] == {"colour": ["Unknown feature."]}


@pytest.mark.parametrize(
    "body, message, errors",
    [
        (
            {},
            "The rows are missing: send them as 'data' (or as MLflow's 'dataframe_split' or 'dataframe_records').",
            {"data": ["Missing data for required field."]},
        ),
        (
            {"data": X, "dataframe_split": {"columns": NAMES, "data": X}},
            "Send the rows once: the body has 'data' and 'dataframe_split'; "
            "use exactly one of 'data', 'dataframe_split', 'dataframe_records'.",
            {"_schema": ["Exactly one of data, dataframe_split, dataframe_records; not data and dataframe_split."]},
        ),
        (
            {"dataframe_records": [], "dataframe_split": {"columns": NAMES, "data": X}},
            "Send the rows once: the body has 'dataframe_split' and 'dataframe_records'; "
            "use exactly one of 'data', 'dataframe_split', 'dataframe_records'.",
            {
                "_schema": [
                    "Exactly one of data, dataframe_split, dataframe_records; not "
                    + "dataframe_split and dataframe_records."
                ]
            },
        ),
        (
            {"dataframe_split": {"columns": NAMES, "data": [[1, 2, 3], [1, 2], "row"]}},
            "Each row of 'dataframe_split.data' needs 3 values, one per column; 2 row(s) do not: see errors.",
            {
                "dataframe_split": {
                    "data": {
                        "1": ["2 values, not 3 (one per column)."],
                        "2": ["Must be an array of values, one per column."],
                    }
                }
            },
        ),
        (
            {"dataframe_split": {"columns": NAMES, "data": {"x0": [1]}}},
            "'dataframe_split.data' must be an array of rows.",
            {"dataframe_split": {"data": ["Not a valid list."]}},
        ),
        (
            {"dataframe_split": {"columns": ["x0", "x1", "x0", "x1"], "data": [[1, 2, 3, 4]]}},
            "'dataframe_split.columns' names a column more than once: x0, x1.",
            {"dataframe_split": {"columns": ["Named more than once: x0, x1."]}},
        ),
    ],
)
def test_spelling_problems_are_422_with_their_own_message(
    client: Any, positional: Any, body: dict[str, Any], message: str, errors: dict[str, Any]
) -> None:
    for route in ("/api/predict", "/api/models/plain/predict"):
        sent = {"model": "plain", **body} if route == "/api/predict" else body
        r = client.post(route, json=sent)
        assert r.status_code == 422, r.json
        assert r.json == {"code": 422, "status": "Unprocessable Entity", "message": message, "errors": {"json": errors}}


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"dataframe_split": {"columns": [0, 1, 2], "data": X}}, {"columns": {"0": ["Not a valid string."]}}),
        ({"dataframe_split": {"data": X}}, {"columns": ["Missing data for required field."]}),
        ({"dataframe_split": {"columns": NAMES}}, {"data": ["Missing data for required field."]}),
        ({"dataframe_split": {"columns": NAMES, "data": X, "orient": "split"}}, {"orient": ["Unknown field."]}),
        ({"dataframe_split": [NAMES, X]}, {"_schema": ["Invalid input type."]}),
    ],
)
def test_malformed_dataframe_split_is_422(client: Any, positional: Any, body: dict[str, Any], errors: Any) -> None:
    answer = _refused(client, body)
    assert answer["message"] == "The request is invalid: see errors."
    detail = answer["errors"]["json"]["dataframe_split"]
    for key, value in errors.items():
        assert key in detail and (value == detail[key] or value.items() <= detail[key].items()), detail


def test_malformed_dataframe_records_is_422(client: Any, positional: Any) -> None:
    answer = _refused(client, {"dataframe_records": [{"x0": 1, "x1": 2, "x2": 3}, [1, 2, 3]]})
    assert answer["errors"] == {"json": {"dataframe_records": {"1": ["Not a valid mapping type."]}}}
    assert _refused(client, {"dataframe_records": []})["message"] == "The data has no rows."
    assert _refused(client, {"dataframe_split": {"columns": NAMES, "data": []}})["message"] == "The data has no rows."
    answer = _refused(client, {"dataframe_split": {"columns": [], "data": [[], []]}})
    assert answer["errors"]["json"]["data"]["1"] == {name: ["Missing feature."] for name in NAMES}


# -- positional features at upload --------------------------------------------------------------
def test_a_model_without_names_is_refused_without_positional(client: Any, numpy_model: Any) -> None:
    r = upload(client, "plain", numpy_model)
    assert r.status_code == 422
    assert r.json["message"] == (
        "The feature schema cannot be inferred: the model was fitted without feature names (no feature_names_in_). "
        "Fit it on a pandas DataFrame, give 'features' in the upload metadata, or send "
        '{"features": "positional"} in it to have its features named x0, x1, ... (all numbers, in the order the '
        "model takes them)."
    )
    assert client.get("/api/models/plain").status_code == 404


def test_a_model_with_names_cannot_be_positional(client: Any, credit_pipeline: Any) -> None:
    r = upload(client, "credit", credit_pipeline, {"features": "positional"})
    assert r.status_code == 422
    assert r.json["message"] == (
        "The model was fitted with feature names (age, income, gender, region): its features are inferred from "
        'them. Positional features (x0, x1, ...) are for models fitted without names: leave out "positional".'
    )
    assert client.get("/api/models/credit").status_code == 404


@pytest.mark.parametrize(
    "features, error",
    [
        ("Positional", ['Must be a list of features, or "positional".']),
        ({"x0": "number"}, ['Must be a list of features, or "positional".']),
        ([], ["Must list from 1 to 10000 features."]),
    ],
)
def test_features_is_a_list_or_positional(client: Any, numpy_model: Any, features: Any, error: list[str]) -> None:
    r = upload(client, "plain", numpy_model, {"features": features})
    assert r.status_code == 422
    assert r.json["errors"] == {"form": {"metadata": {"features": error}}}


def test_positional_upload_with_an_example_in_rows(client: Any, numpy_model: Any) -> None:
    r = upload(client, "plain", numpy_model, {"features": "positional", "example": X})
    assert r.status_code == 201, r.json
    assert r.json["example"] == X
    bad = upload(client, "plain", numpy_model, {"features": "positional", "example": [[1, 2]]})
    assert bad.status_code == 422
    assert bad.json["message"].startswith("The example does not fit the feature schema: Each row given as an array")
