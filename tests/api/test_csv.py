"""CSV in and out on the path-based predict routes (API v1.1): the model's own predictions, and a
422/413/415 in the contract's JSON for every bad body."""

from __future__ import annotations

import csv
import io
from typing import Any

import pandas as pd
import pytest

from tests.support import loans, upload

SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "type": "integer", "minimum": 18, "maximum": 80},
    {"name": "income", "type": "number"},
    {"name": "gender", "type": "string", "allowed": ["female", "male"]},
    {"name": "region", "type": "string", "required": False, "allowed": ["north", "south", "east"]},
]
CSV = "text/csv"


@pytest.fixture
def credit(client: Any, lenient_credit_pipeline: Any) -> Any:
    assert upload(client, "credit", lenient_credit_pipeline, {"features": SCHEMA}).status_code == 201
    return client


def _portfolio(rows: int = 40) -> pd.DataFrame:
    frame, _ = loans(rows, seed=7)
    frame["age"] = frame["age"].astype(int)
    return frame


def _post(client: Any, body: str | bytes, path: str = "/api/models/credit/versions/1/predict", **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", {})
    return client.post(path, data=body, headers={"Content-Type": CSV, **headers}, **kwargs)


def test_a_portfolio_round_trip_gives_the_models_own_predictions(credit: Any, lenient_credit_pipeline: Any) -> None:
    frame = _portfolio()
    sent = frame.to_csv(index=False)  # what pandas writes: income as 51234.56789, age as 35
    # the model's own code (engine=sklearn), whose floats this compares to the bit
    r = _post(
        credit, sent, "/api/models/credit/predict?return_probabilities=true&engine=sklearn", headers={"Accept": CSV}
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == CSV
    answer = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    classes = [str(c) for c in lenient_credit_pipeline.classes_]
    assert answer[0] == [*frame.columns, "prediction", *(f"probability_{c}" for c in classes)]
    sent_rows = list(csv.reader(io.StringIO(sent)))[1:]
    assert [row[:4] for row in answer[1:]] == sent_rows  # the input as sent, field for field
    assert [int(row[4]) for row in answer[1:]] == lenient_credit_pipeline.predict(frame).tolist()
    proba = lenient_credit_pipeline.predict_proba(frame)
    for row, expected in zip(answer[1:], proba, strict=True):
        assert [float(p) for p in row[5:]] == expected.tolist()  # repr() round-trips a float exactly

    as_json = _post(credit, sent, "/api/models/credit/versions/latest/predict?return_probabilities=1&engine=sklearn")
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    assert as_json.json["predictions"] == lenient_credit_pipeline.predict(frame).tolist()
    assert [p[classes[1]] for p in as_json.json["probabilities"]] == proba[:, 1].tolist()
    assert "probabilities" not in _post(credit, sent).json


def test_each_field_is_read_as_its_features_type(credit: Any, lenient_credit_pipeline: Any) -> None:
    # a byte order mark (Excel), CRLF, an integer written 35.0, spaces around numbers, an empty
    # optional field, quoting, a trailing blank line
    body = '\ufeffincome,age,gender,region\r\n" 42000 ",35.0,male,\r\n6.1e4,52,"female",south\r\n\r\n'
    r = _post(credit, body.encode(), headers={"Accept": CSV})
    assert r.status_code == 200, r.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    expected = lenient_credit_pipeline.predict(
        pd.DataFrame(
            {"age": [35, 52], "income": [42000.0, 61000.0], "gender": ["male", "female"], "region": [None, "south"]}
        )
    )
    assert [int(row["prediction"]) for row in rows] == expected.tolist()
    assert rows[0]["income"] == " 42000 " and rows[0]["region"] == ""  # echoed as sent


def test_booleans(client: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"flag": [True, False] * 20, "x": [float(i) for i in range(40)]})
    model = LogisticRegression().fit(frame, frame["flag"].astype(int))
    schema = [{"name": "flag", "type": "boolean"}, {"name": "x", "type": "number"}]
    assert upload(client, "flags", model, {"features": schema}).status_code == 201
    r = _post(client, "flag,x\ntrue,1\nFALSE,2\nTrue,3\n", "/api/models/flags/predict")
    assert r.status_code == 200, r.json
    sent = pd.DataFrame({"flag": [True, False, True], "x": [1.0, 2.0, 3.0]})
    assert r.json["predictions"] == model.predict(sent).tolist()
    bad = _post(client, "flag,x\nyes,1\n", "/api/models/flags/predict")
    assert bad.status_code == 422
    assert bad.json["errors"] == {"json": {"data": {"flag": ["Not a boolean (true or false): 'yes'."]}}}


@pytest.mark.parametrize(
    "body, message, errors",
    [
        (
            "age,income,gender\n35,abc,male\n36,1,female\n",
            "The input does not match the feature schema of 'credit' version 1: 1 problem(s).",
            {"json": {"data": {"0": {"income": ["Not a number: 'abc'."]}}}},
        ),
        (
            "age,income,gender\n35.5,1,male\n",
            "The input does not match the feature schema of 'credit' version 1: 1 problem(s).",
            {"json": {"data": {"age": ["Not an integer: '35.5'."]}}},
        ),
        (
            "age,income,gender\n35,nan,male\n36,inf,male\n37,1_000,male\n",
            "The input does not match the feature schema of 'credit' version 1: 3 problem(s).",
            {
                "json": {
                    "data": {
                        "0": {"income": ["Not a number: 'nan'."]},
                        "1": {"income": ["Not a number: 'inf'."]},
                        "2": {"income": ["Not a number: '1_000'."]},
                    }
                }
            },
        ),
        (
            "age,income,gender,zip\n35,1,other,\n90,,male,\n",
            "The input does not match the feature schema of 'credit' version 1: 4 problem(s).",
            {
                "json": {
                    "data": {
                        "zip": ["Unknown feature."],
                        "0": {"gender": ["Must be one of: 'female', 'male'."]},
                        "1": {"age": ["Must be at most 80."], "income": ["Must not be null."]},
                    }
                }
            },
        ),
        (
            "age,gender\n35,male\n",
            "The input does not match the feature schema of 'credit' version 1: 1 problem(s).",
            {"json": {"data": {"income": ["Missing feature."]}}},
        ),
        ("age,income,gender\n", "The data has no rows.", {"json": {"data": ["No rows."]}}),
        (
            "",
            "The CSV body is empty: send a header row of feature names, then one row per record.",
            {"csv": {"body": ["No header row."]}},
        ),
        (
            "age,income,age\n1,2,3\n",
            "The CSV header names 'age' twice.",
            {"csv": {"body": ["Column 'age' twice."]}},
        ),
        (
            "age,income,gender\n35,1,male\n36,1\n",
            "CSV row 1 has 2 fields; the header has 3.",
            {"csv": {"body": {"1": ["2 fields; the header has 3."]}}},
        ),
        (
            'age,income,gender\n35,1,"male\n',
            "The CSV body cannot be read: unexpected end of data.",
            {"csv": {"body": ["unexpected end of data"]}},
        ),
        (
            b"age,income,gender\n35,1,m\xe4le\n",
            "The CSV body is not valid UTF-8 (byte 24).",
            {"csv": {"body": ["Not UTF-8."]}},
        ),
    ],
)
def test_bad_csv_is_422_in_the_contracts_shape(credit: Any, body: Any, message: str, errors: Any) -> None:
    r = _post(credit, body, headers={"Accept": CSV})
    assert r.status_code == 422 and r.mimetype == "application/json", r.get_data(as_text=True)
    assert r.json == {"code": 422, "status": "Unprocessable Entity", "message": message, "errors": errors}


def test_limits_content_types_and_the_query(make_app: Any, lenient_credit_pipeline: Any) -> None:
    app = make_app(max_batch_rows=5, max_request_bytes=4096)
    client = app.test_client()
    assert upload(client, "credit", lenient_credit_pipeline, {"features": SCHEMA}).status_code == 201
    six = "age,income,gender\n" + "35,1,male\n" * 6
    r = _post(client, six)
    assert r.status_code == 413 and r.json["message"] == "The request has 6 rows, more than the limit of 5."
    big = "age,income,gender\n" + "35,1,male\n" * 500
    assert _post(client, big).status_code == 413
    latin = _post(client, "age,income,gender\n35,1,male\n", headers={"Content-Type": "text/csv; charset=latin-1"})
    assert latin.status_code == 415 and latin.json["message"] == "Send the CSV as UTF-8, not latin-1."
    utf8 = _post(client, "age,income,gender\n35,1,male\n", headers={"Content-Type": "text/csv; charset=UTF-8"})
    assert utf8.status_code == 200
    query = _post(client, "age,income,gender\n35,1,male\n", "/api/models/credit/predict?return_probabilities=maybe")
    assert query.status_code == 422
    assert query.json["errors"] == {"query": {"return_probabilities": ["Not a valid boolean."]}}
    xml = client.post("/api/models/credit/predict", data="<a/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    assert xml.json["message"] == "Send the body as application/json or text/csv, not application/xml."
    # POST /api/predict names its model in the body: JSON only
    assert _post(client, "age,income,gender\n35,1,male\n", "/api/predict").status_code == 415


def test_documented_in_the_openapi_document(client: Any) -> None:
    spec = client.get("/openapi.json").json
    for path in ("/api/models/{name}/predict", "/api/models/{name}/versions/{selector}/predict"):
        operation = spec["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {"application/json", CSV}
        assert set(operation["responses"]["200"]["content"]) == {"application/json", CSV}
        assert any(p["name"] == "return_probabilities" for p in operation["parameters"])
    assert "/api/models/{name}/whatif" in spec["paths"]
    assert "/api/models/{name}/versions/{selector}/whatif" in spec["paths"]
