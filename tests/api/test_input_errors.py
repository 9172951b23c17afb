"""Input rows refused: the domain errors of serving/inference, and the contract's JSON for each."""

from __future__ import annotations

from typing import Any

import pytest

from model_store.features import FeatureSpec, FeatureType
from serving.inference.errors import InvalidRows, TooManyRows
from serving.inference.inputs import InputSchema
from tests.support import CREDIT_ROW, upload

SCHEMA = InputSchema(
    "m",
    1,
    [FeatureSpec("age", FeatureType.NUMBER, minimum=0), FeatureSpec("grade", FeatureType.STRING, allowed=("a", "b"))],
    None,
    max_rows=3,
)


def test_invalid_rows_carry_the_detail_of_data() -> None:
    with pytest.raises(InvalidRows) as raised:
        SCHEMA.check([{"age": -1, "grade": "a"}, {"age": True, "grade": "c"}])
    assert raised.value.message == "The input does not match the feature schema of 'm' version 1: 3 problem(s)."
    assert raised.value.errors == {
        "0": {"age": ["Must be at least 0."]},
        "1": {"age": ["Must be a number, not a boolean."], "grade": ["Must be one of: 'a', 'b'."]},
    }


def test_too_many_rows_says_how_many() -> None:
    with pytest.raises(TooManyRows) as raised:
        SCHEMA.check({"age": [1, 2, 3, 4], "grade": ["a"] * 4})
    assert (raised.value.count, raised.value.limit) == (4, 3)
    assert raised.value.message == "The request has 4 rows, more than the limit of 3."


def test_each_is_answered_with_the_contracts_json(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(max_batch_rows=5).test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    r = client.post("/api/predict", json={"model": "credit", "data": []})
    assert (r.status_code, r.json) == (
        422,
        {
            "code": 422,
            "status": "Unprocessable Entity",
            "message": "The data has no rows.",
            "errors": {"json": {"data": ["No rows."]}},
        },
    )
    r = client.post("/api/predict", json={"model": "credit", "data": [CREDIT_ROW] * 6})
    assert (r.status_code, r.json) == (
        413,
        {
            "code": 413,
            "status": "Request Entity Too Large",
            "message": "The request has 6 rows, more than the limit of 5.",
        },
    )


def test_an_upload_example_over_the_row_limit_is_refused(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(max_batch_rows=5).test_client()
    r = upload(client, "credit", credit_pipeline, {"example": [CREDIT_ROW] * 6})
    assert r.status_code == 422
    assert r.json["message"] == (
        "The example does not fit the feature schema: The request has 6 rows, more than the limit of 5."
    )
    assert client.get("/api/models/credit").status_code == 404
