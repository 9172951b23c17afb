"""The upload's `metadata` form part, loaded by its schema: the exact 422 of each problem."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.support import ADMIN, joblib_bytes

NOT_VALID_JSON = {"form": {"metadata": ["Not valid JSON."]}}
NOT_AN_OBJECT = {"form": {"metadata": ["Not an object."]}}


def _post(client: Any, parts: dict[str, Any]) -> Any:
    boundary, body = encode_multipart(parts)
    return client.post(
        "/api/admin/models/m/versions",
        data=body,
        headers=ADMIN,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def _file(model: Any) -> FileStorage:
    return FileStorage(io.BytesIO(joblib_bytes(model)), "m.joblib")


@pytest.mark.parametrize(
    "metadata, message, errors",
    [
        (
            "{not json",
            "'metadata' is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2).",
            NOT_VALID_JSON,
        ),
        ('{"description": NaN}', "'metadata' is not valid JSON: NaN is not a JSON value.", NOT_VALID_JSON),
        ("[" * 100 + "]" * 100, "'metadata' is nested deeper than 64 levels.", NOT_VALID_JSON),
        ("[1, 2]", "'metadata' must be a JSON object.", NOT_AN_OBJECT),
        ("null", "'metadata' must be a JSON object.", NOT_AN_OBJECT),
        (
            '{"tags": {"a": 1}, "colour": "red"}',
            "The upload metadata is invalid: see errors.",
            {"form": {"metadata": {"tags": {"a": {"value": ["Not a valid string."]}}, "colour": ["Unknown field."]}}},
        ),
        (
            '{"features": [{"name": "age", "type": "date"}]}',
            "The upload metadata is invalid: see errors.",
            {
                "form": {
                    "metadata": {"features": {"0": {"type": ["Must be one of: number, integer, string, boolean."]}}}
                }
            },
        ),
        (
            '{"features": [{"name": "age", "allowed": ["x"]}]}',
            "The upload metadata is invalid: see errors.",
            {"form": {"metadata": {"features": {"0": {"allowed": ["Values not of type number: ['x']."]}}}}},
        ),
        (
            '{"features": [{"name": "age", "allowed": [1, 1e999, ' + "9" * 400 + "]}]}",
            "The upload metadata is invalid: see errors.",
            {
                "form": {
                    "metadata": {"features": {"0": {"allowed": [f"Values not of type number: [inf, {'9' * 400}]."]}}}
                }
            },
        ),
    ],
)
def test_a_bad_metadata_part_is_answered_with_its_own_message(
    client: Any, credit_pipeline: Any, metadata: str, message: str, errors: dict[str, Any]
) -> None:
    r = _post(client, {"file": _file(credit_pipeline), "metadata": metadata})
    assert (r.status_code, r.json) == (
        422,
        {"code": 422, "status": "Unprocessable Entity", "message": message, "errors": errors},
    )


@pytest.mark.parametrize("metadata", ["", "  \n", "{}"])
def test_blank_or_empty_metadata_is_no_metadata(client: Any, credit_pipeline: Any, metadata: str) -> None:
    r = _post(client, {"file": _file(credit_pipeline), "metadata": metadata})
    assert r.status_code == 201 and r.json["description"] is None and r.json["tags"] == {}


def test_declared_features_are_recorded(client: Any, lenient_credit_pipeline: Any) -> None:
    features = (
        '[{"name": "age", "minimum": 0, "maximum": 120}, {"name": "income"},'
        ' {"name": "gender", "type": "string", "required": false, "allowed": ["female", "male"]},'
        ' {"name": "region", "type": "string"}]'
    )
    r = _post(client, {"file": _file(lenient_credit_pipeline), "metadata": f'{{"features": {features}}}'})
    assert r.status_code == 201, r.json
    assert r.json["features"][0] == {
        "name": "age",
        "type": "number",
        "required": True,
        "allowed": None,
        "minimum": 0.0,
        "maximum": 120.0,
        "accepts_unseen": False,
    }
    assert r.json["features"][2]["allowed"] == ["female", "male"] and r.json["features"][2]["required"] is False


def test_the_rest_of_the_body_is_answered_first(client: Any, credit_pipeline: Any) -> None:
    """As before the schema loaded the metadata: its problems wait until the body is otherwise right."""
    request_invalid = {"code": 422, "status": "Unprocessable Entity", "message": "The request is invalid: see errors."}
    r = _post(client, {"metadata": "{not json"})
    assert r.json == {**request_invalid, "errors": {"multipart": {"file": ["Missing data for required field."]}}}
    r = _post(client, {"file": _file(credit_pipeline), "other": "x", "metadata": "[1]"})
    assert r.json == {**request_invalid, "errors": {"multipart": {"other": ["Unknown field."]}}}
    r = _post(client, {"file": _file(credit_pipeline), "metadata": FileStorage(io.BytesIO(b"{}"), "m.json")})
    assert r.json == {**request_invalid, "errors": {"multipart": {"metadata": ["Not a valid string."]}}}


@pytest.mark.parametrize(
    "example",
    [
        {"age": 35, "income": 42000.5, "gender": "male", "region": "north"},
        {"age": [35, 52], "income": [42000, 61000.25], "gender": ["male", "female"], "region": ["north", "south"]},
        [{"age": 35, "income": 42000, "gender": "male", "region": "north"}],
    ],
    ids=["record", "columns", "records"],
)
def test_the_example_is_kept_as_given(client: Any, credit_pipeline: Any, example: Any) -> None:
    created = client.post(
        "/api/admin/models/m/versions",
        data={"file": _file(credit_pipeline), "metadata": json.dumps({"example": example})},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.json
    assert created.json["example"] == example
    read = client.get("/api/models/m/versions/1").json
    # as given: the same values, types and key order (an int stays an int, 42000.5 stays a float)
    assert json.dumps(read["example"]) == json.dumps(example)
    without = client.post("/api/admin/models/m/versions", data={"file": _file(credit_pipeline)}, headers=ADMIN)
    assert without.status_code == 201 and without.json["example"] is None
    assert client.get("/api/models/m/versions/latest").json["example"] is None
    # summaries stay as they were: the example is in the full form only
    assert all("example" not in v for v in client.get("/api/models/m/versions").json)
