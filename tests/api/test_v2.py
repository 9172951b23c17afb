"""The Open Inference Protocol (V2) routes through the Flask test client: metadata, readiness,
infer (the same answers as the JSON predict route), and every error in the protocol's shape."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from tests.support import ADMIN, MIXED_ROWS, MIXED_SCHEMA, upload

ROWS = MIXED_ROWS


@pytest.fixture
def mixed(client: Any, mixed_pipeline: Pipeline) -> Any:
    created = upload(client, "mixed", mixed_pipeline, {"features": MIXED_SCHEMA, "example": ROWS[0]})
    assert created.status_code == 201, created.json
    return client


def tensors(rows: list[dict[str, Any]], *, nested: bool = False) -> list[dict[str, Any]]:
    datatypes = {"age": "INT64", "income": "FP64", "gender": "BYTES", "member": "BOOL"}
    out = []
    for name, datatype in datatypes.items():
        values = [row[name] for row in rows]
        shape = [len(rows), 1] if nested else [len(rows)]
        out.append(
            {"name": name, "shape": shape, "datatype": datatype, "data": [[v] for v in values] if nested else values}
        )
    return out


def error_of(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


# -- health and metadata ----------------------------------------------------------------------
def test_health_and_server_metadata(client: Any) -> None:
    assert client.get("/v2/health/live").get_json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True}
    server = client.get("/v2")
    assert server.status_code == 200
    assert server.get_json()["name"] == "maas" and server.get_json()["extensions"] == []
    assert isinstance(server.get_json()["version"], str)
    assert server.headers["X-Request-ID"]


@pytest.mark.postgresql  # resolving a selector is a query
def test_model_metadata_from_the_feature_schema(mixed: Any) -> None:
    body = mixed.get("/v2/models/mixed").get_json()
    assert body["name"] == "mixed" and body["versions"] == ["1"] and body["platform"] == "sklearn"
    assert body["inputs"] == [
        {"name": "age", "datatype": "INT64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "gender", "datatype": "BYTES", "shape": [-1]},
        {"name": "member", "datatype": "BOOL", "shape": [-1]},
    ]
    assert body["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    for selector in ("1", "latest"):
        assert mixed.get(f"/v2/models/mixed/versions/{selector}").get_json() == body
    error_of(mixed.get("/v2/models/nope"), 404)
    error_of(mixed.get("/v2/models/mixed/versions/9"), 404)
    error_of(mixed.get("/v2/models/mixed/versions/staging"), 404)


@pytest.mark.postgresql
def test_versions_lists_every_version_and_a_selector_names_one(client: Any, credit_pipeline: Any) -> None:
    for _ in range(2):
        assert upload(client, "credit", credit_pipeline).status_code == 201
    alias = client.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN)
    assert alias.status_code == 200
    assert client.get("/v2/models/credit").get_json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/credit/versions/production").get_json()["versions"] == ["1"]
    body = client.get("/v2/models/credit/versions/2").get_json()
    assert [i["datatype"] for i in body["inputs"]] == ["FP64", "FP64", "BYTES", "BYTES"]
    ready = client.get("/v2/models/credit/versions/production/ready")
    assert ready.status_code == 200 and ready.get_json() == {"name": "credit", "version": "1", "ready": True}
    assert client.get("/v2/models/credit/ready").get_json()["version"] == "2"
    error_of(client.get("/v2/models/credit/versions/3/ready"), 404)
    error_of(client.get("/v2/models/nope/ready"), 404)


# -- infer --------------------------------------------------------------------------------------
@pytest.mark.postgresql
@pytest.mark.parametrize("nested", [False, True], ids=["shape-N", "shape-N-1"])
def test_infer_answers_what_predict_answers(mixed: Any, mixed_pipeline: Pipeline, nested: bool) -> None:
    body = {
        "id": "req-7",
        "inputs": tensors(ROWS, nested=nested),
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    answer = mixed.post("/v2/models/mixed/versions/1/infer", json=body)
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    assert (got["model_name"], got["model_version"], got["id"]) == ("mixed", "1", "req-7")
    predict, proba = got["outputs"]
    frame = pd.DataFrame(ROWS)
    assert predict == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [3],
        "data": mixed_pipeline.predict(frame).tolist(),
    }
    assert proba["name"] == "predict_proba" and proba["datatype"] == "FP64" and proba["shape"] == [3, 2]
    # V2 asks for no engine: the version's ONNX graph answers, within the contract's 1e-5 of the model
    assert proba["data"] == pytest.approx(mixed_pipeline.predict_proba(frame).ravel().tolist(), rel=0, abs=1e-5)

    same = mixed.post("/api/models/mixed/versions/1/predict", json={"data": ROWS, "return_probabilities": True})
    assert predict["data"] == same.get_json()["predictions"]
    assert proba["data"] == [p for row in same.get_json()["probabilities"] for p in row.values()]


@pytest.mark.postgresql
def test_infer_defaults_and_a_body_without_content_type(mixed: Any) -> None:
    body = json.dumps({"inputs": tensors(ROWS[:1])})
    answer = mixed.post("/v2/models/mixed/infer", data=body)  # no Content-Type, as tritonclient sends
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    assert "id" not in got and [o["name"] for o in got["outputs"]] == ["predict"]
    only_proba = mixed.post(
        "/v2/models/mixed/infer", json={"inputs": tensors(ROWS), "outputs": [{"name": "predict_proba"}]}
    )
    assert [o["name"] for o in only_proba.get_json()["outputs"]] == ["predict_proba"]
    # JSON under another Content-Type (what `curl -d` sends) is read as JSON too.
    as_form = mixed.post("/v2/models/mixed/infer", data=body, content_type="application/x-www-form-urlencoded")
    assert as_form.status_code == 200, as_form.get_json()
    assert mixed.post("/v2/models/mixed/infer", data=body, content_type="text/plain").status_code == 200
    # Any number type into a number feature.
    ints = tensors(ROWS)
    ints[1] = {"name": "income", "shape": [3], "datatype": "INT32", "data": [42000, 30500, 90000]}
    assert mixed.post("/v2/models/mixed/infer", json={"inputs": ints}).status_code == 200


@pytest.mark.postgresql
def test_string_labels_are_bytes_and_regressions_fp64(client: Any, string_classifier: Any, regressor: Any) -> None:
    assert upload(client, "labels", string_classifier).status_code == 201
    assert upload(client, "linear", regressor).status_code == 201
    rows = {"height": [180.0, 150.0], "weight": [60.0, 95.0]}
    inputs = [{"name": k, "shape": [2], "datatype": "FP64", "data": v} for k, v in rows.items()]
    got = client.post("/v2/models/labels/infer", json={"inputs": inputs}).get_json()
    assert got["outputs"][0]["datatype"] == "BYTES"
    assert got["outputs"][0]["data"] == string_classifier.predict(pd.DataFrame(rows)).tolist()
    assert client.get("/v2/models/labels").get_json()["outputs"][0]["datatype"] == "BYTES"

    inputs = [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in {"x1": 1.0, "x2": 2.0}.items()]
    got = client.post("/v2/models/linear/infer", json={"inputs": inputs}).get_json()
    assert got["outputs"][0]["datatype"] == "FP64" and got["outputs"][0]["data"] == pytest.approx([0.0], abs=1e-9)
    metadata = client.get("/v2/models/linear").get_json()
    assert metadata["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    refused = client.post("/v2/models/linear/infer", json={"inputs": inputs, "outputs": [{"name": "predict_proba"}]})
    assert "predict_proba" in error_of(refused, 422)


# -- errors, in the protocol's shape -------------------------------------------------------------
def _with(inputs: list[dict[str, Any]], name: str, **changes: Any) -> list[dict[str, Any]]:
    return [{**t, **changes} if t["name"] == name else t for t in inputs]


BAD_BODIES: dict[str, Any] = {
    "wrong shape": lambda t: {"inputs": _with(t, "age", shape=[3, 2])},
    "three dimensions": lambda t: {"inputs": _with(t, "age", shape=[3, 1, 1])},
    "shape and data disagree": lambda t: {"inputs": _with(t, "age", shape=[2])},
    "mismatched lengths": lambda t: {"inputs": _with(_with(t, "age", shape=[2], data=[35, 61]), "income", shape=[3])},
    "unknown input": lambda t: {"inputs": [*t, {"name": "zip", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}]},
    "input twice": lambda t: {"inputs": [*t, t[0]]},
    "missing input": lambda t: {"inputs": t[1:]},
    "no inputs": lambda t: {"inputs": []},
    "FP64 into an integer": lambda t: {"inputs": _with(t, "age", datatype="FP64")},
    "BYTES into a number": lambda t: {"inputs": _with(t, "income", datatype="BYTES")},
    "FP16": lambda t: {"inputs": _with(t, "income", datatype="FP16")},
    "no such datatype": lambda t: {"inputs": _with(t, "income", datatype="FP128")},
    "BYTES holding numbers": lambda t: {"inputs": _with(t, "gender", data=[1, 2, 3])},
    "BOOL holding numbers": lambda t: {"inputs": _with(t, "member", data=[1, 0, 1])},
    "INT64 holding floats": lambda t: {"inputs": _with(t, "age", data=[35.5, 61, 23])},
    "INT8 out of range": lambda t: {"inputs": _with(t, "age", datatype="INT8", data=[35, 61, 300])},
    "FP64 holding strings": lambda t: {"inputs": _with(t, "income", data=["1", "2", "3"])},
    "nested garbage": lambda t: {"inputs": _with(t, "income", data=[[[1]], {"a": 1}, [2, 3]])},
    "data not a list": lambda t: {"inputs": _with(t, "income", data={"a": 1})},
    "huge shape": lambda t: {"inputs": _with(t, "income", shape=[10**30])},
    "negative shape": lambda t: {"inputs": _with(t, "income", shape=[-3])},
    "out of bounds": lambda t: {"inputs": _with(t, "age", data=[35, 61, 12])},
    "not allowed": lambda t: {"inputs": _with(t, "gender", data=["male", "other", "female"])},
    "null for a required feature": lambda t: {"inputs": _with(t, "income", data=[1.0, None, 2.0])},
    "unknown output": lambda t: {"inputs": t, "outputs": [{"name": "explain"}]},
    "unknown field": lambda t: {"inputs": t, "extra": 1},
    "id not a string": lambda t: {"inputs": t, "id": 7},
    "inputs not a list": lambda t: {"inputs": {"age": [1]}},
}


@pytest.mark.parametrize("what", BAD_BODIES)
def test_bad_tensors_are_422_in_the_v2_shape(mixed: Any, what: str) -> None:
    body = BAD_BODIES[what](tensors(ROWS))
    answer = mixed.post("/v2/models/mixed/infer", json=body)
    error_of(answer, 422)
    assert answer.headers["X-Request-ID"]


@pytest.mark.parametrize("count", [100_000, 100_001])
def test_100000_inputs(mixed: Any, count: int) -> None:
    inputs = [{"name": f"f{i}", "shape": [1], "datatype": "FP64", "data": [1.0]} for i in range(count)]
    message = error_of(mixed.post("/v2/models/mixed/infer", json={"inputs": inputs}), 422)
    assert ("no such input" if count == 100_000 else "More than 100000 inputs") in message


def test_the_detail_is_in_the_message(mixed: Any) -> None:
    message = error_of(mixed.post("/v2/models/mixed/infer", json=BAD_BODIES["out of bounds"](tensors(ROWS))), 422)
    assert "(2.age: Must be at least 18)" in message
    message = error_of(mixed.post("/v2/models/mixed/infer", json=BAD_BODIES["missing input"](tensors(ROWS))), 422)
    assert message.endswith("(age: Missing feature)")


NAN_BODY = b'{"inputs": [{"name": "income", "shape": [1], "datatype": "FP64", "data": [NaN]}]}'


@pytest.mark.parametrize(
    ("what", "raw", "headers", "status"),
    [
        ("not JSON", b"{", {}, 400),
        ("NaN in FP64 data", NAN_BODY, {}, 400),
        ("Infinity in FP64 data", NAN_BODY.replace(b"NaN", b"-Infinity"), {}, 400),
        ("an array", b"[]", {}, 400),
        ("empty", b"", {}, 400),
        ("deep", b"[" * 100 + b"]" * 100, {}, 400),
        ("binary tensor extension", b"{}", {"Inference-Header-Content-Length": "2"}, 400),
        ("a form", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
    ],
)
def test_bad_bodies(mixed: Any, what: str, raw: bytes, headers: dict[str, str], status: int) -> None:
    error_of(mixed.post("/v2/models/mixed/infer", data=raw, headers=headers), status)


def test_routing_errors_and_limits_are_in_the_v2_shape(make_app: Any, mixed_pipeline: Pipeline) -> None:
    client = make_app(max_request_bytes=2000, max_batch_rows=5).test_client()
    assert upload(client, "mixed", mixed_pipeline, {"features": MIXED_SCHEMA}).status_code == 201
    error_of(client.get("/v2/nothing"), 404)
    error_of(client.get("/v2/models/mixed/infer"), 405)
    assert "POST" in client.get("/v2/models/mixed/infer").headers["Allow"]
    error_of(client.delete("/v2/health/live"), 405)
    error_of(client.post("/v2/models/mixed/infer", data=b"x" * 3000), 413)
    error_of(client.post("/v2/models/mixed/infer", json={"inputs": tensors(ROWS * 2)}), 413)
    # ... and the rest of the service keeps the contract's shape
    assert set(client.get("/api/nothing").get_json()) == {"code", "status", "message"}


def test_api_token_is_required_but_for_health(make_app: Any) -> None:
    client = make_app(api_token="reader-secret").test_client()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/models/nope", "/v2/models/nope/ready", "/v2/nothing"):
        answer = client.get(path)
        error_of(answer, 401)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    error_of(client.post("/v2/models/nope/infer", json={}), 401)
    assert client.get("/v2", headers={"Authorization": "Bearer reader-secret"}).status_code == 200
    assert client.get("/v2", headers=ADMIN).status_code == 200


def test_openapi_documents_the_v2_operations(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    paths = spec["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
    ):
        assert "get" in paths[path], path
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        operation = paths[path]["post"]
        assert "application/json" in operation["requestBody"]["content"]
        assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("V2Error")
