"""The Open Inference Protocol (V2) on a real `maas serve`, over real HTTP: Triton's own client
(`tritonclient.http`) and raw requests, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import ADMIN, ADMIN_TOKEN, MIXED_ROWS, MIXED_SCHEMA, joblib_bytes
from tests.support import upload_live as upload
from tests.support.live import Server, environment

READER_TOKEN = "reader-secret-v2"


def start(serve: Callable[..., Server], database_url: str, tmp_path: Path, **variables: str) -> Server:
    env = environment(
        MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
        MAAS_DATABASE_URL=database_url,
        MAAS_STORE_DIR=str(tmp_path / "store"),
        **variables,
    )
    return serve(env=env, cwd=tmp_path)


def triton_inputs(rows: list[dict[str, Any]]) -> list[triton.InferInput]:
    """One InferInput per feature, each from a numpy array of its own dtype (JSON, not binary, data)."""
    frame = pd.DataFrame(rows)
    arrays = {
        "age": ("INT64", frame["age"].to_numpy(dtype=np.int64)),
        "income": ("FP64", frame["income"].to_numpy(dtype=np.float64)),
        "gender": ("BYTES", frame["gender"].to_numpy(dtype=np.object_)),
        "member": ("BOOL", frame["member"].to_numpy(dtype=np.bool_)),
    }
    inputs = []
    for name, (datatype, array) in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        inputs.append(tensor)
    return inputs


@pytest.mark.postgresql  # versions and aliases are resolved by the database
def test_tritonclient_drives_maas_serve(
    serve: Callable[..., Server], database_url: str, tmp_path: Path, mixed_pipeline: Any
) -> None:
    server = start(serve, database_url, tmp_path)
    payload = joblib_bytes(mixed_pipeline)
    for _ in range(2):
        created = upload(server, "mixed", payload, {"features": MIXED_SCHEMA, "example": MIXED_ROWS[0]})
        assert created.status_code == 201, created.text
    alias = server.put("/api/admin/models/mixed/aliases/production", json={"version": 1}, headers=ADMIN)
    assert alias.status_code == 200, alias.text

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "maas"
        assert client.is_model_ready("mixed") and client.is_model_ready("mixed", "1")
        assert client.is_model_ready("mixed", "production")
        assert not client.is_model_ready("mixed", "9") and not client.is_model_ready("nope")

        metadata = client.get_model_metadata("mixed")
        assert metadata["versions"] == ["1", "2"]
        assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
            ("age", "INT64", [-1]),
            ("income", "FP64", [-1]),
            ("gender", "BYTES", [-1]),
            ("member", "BOOL", [-1]),
        ]
        assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
        assert client.get_model_metadata("mixed", "production")["versions"] == ["1"]

        frame = pd.DataFrame(MIXED_ROWS)
        expected, expected_proba = mixed_pipeline.predict(frame), mixed_pipeline.predict_proba(frame)
        for version in ("", "1", "production", "latest"):
            result = client.infer(
                "mixed",
                triton_inputs(MIXED_ROWS),
                model_version=version,
                request_id="triton-1",
                outputs=[
                    triton.InferRequestedOutput("predict", binary_data=False),
                    triton.InferRequestedOutput("predict_proba", binary_data=False),
                ],
            )
            response = result.get_response()
            assert response["id"] == "triton-1"
            assert response["model_version"] == ("1" if version in ("1", "production") else "2")
            np.testing.assert_array_equal(result.as_numpy("predict"), expected)
            proba = result.as_numpy("predict_proba")
            assert proba is not None and proba.shape == (3, 2)
            # no engine asked for: the version's ONNX graph, within the contract's 1e-5 of the model
            np.testing.assert_allclose(proba, expected_proba, rtol=0, atol=1e-5)

        # No outputs named: `predict` alone.
        result = client.infer("mixed", triton_inputs(MIXED_ROWS[:1]))
        assert [o["name"] for o in result.get_response()["outputs"]] == ["predict"]
        np.testing.assert_array_equal(result.as_numpy("predict"), expected[:1])

        # Errors arrive as the protocol's {"error": ...}, which the client reads.
        with pytest.raises(InferenceServerException) as raised:
            client.infer("nope", triton_inputs(MIXED_ROWS))
        assert raised.value.status() == "404" and "nope" in raised.value.message()
        out_of_bounds = [{**MIXED_ROWS[0], "age": 12}]
        with pytest.raises(InferenceServerException) as raised:
            client.infer("mixed", triton_inputs(out_of_bounds))
        assert raised.value.status() == "422" and "Must be at least 18" in raised.value.message()
        binary = triton.InferInput("income", [1], "FP64")
        binary.set_data_from_numpy(np.array([1.0]), binary_data=True)
        with pytest.raises(InferenceServerException) as raised:
            client.infer("mixed", [binary])
        assert raised.value.status() == "400" and "binary" in raised.value.message()
    finally:
        client.close()


@pytest.mark.postgresql
def test_raw_requests(serve: Callable[..., Server], database_url: str, tmp_path: Path, mixed_pipeline: Any) -> None:
    server = start(serve, database_url, tmp_path)
    created = upload(server, "mixed", joblib_bytes(mixed_pipeline), {"features": MIXED_SCHEMA})
    assert created.status_code == 201, created.text
    body = {
        "id": "raw-1",
        "inputs": [
            {"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [[35], [61]]},
            {"name": "income", "shape": [2], "datatype": "FP32", "data": [42000, 30500.5]},
            {"name": "gender", "shape": [2], "datatype": "BYTES", "data": ["male", "female"]},
            {"name": "member", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        ],
        "outputs": [{"name": "predict_proba"}],
    }
    # No Content-Type at all, as tritonclient sends it.
    answer = server.post("/v2/models/mixed/versions/1/infer", data=json.dumps(body), headers={"X-Request-ID": "mine-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == "mine-1"
    got = answer.json()
    assert (got["model_name"], got["model_version"], got["id"]) == ("mixed", "1", "raw-1")
    (proba,) = got["outputs"]
    expected = mixed_pipeline.predict_proba(pd.DataFrame(MIXED_ROWS[:2]))
    assert proba["shape"] == [2, 2]
    assert proba["data"] == pytest.approx(expected.ravel().tolist(), rel=0, abs=1e-5)  # the ONNX engine's
    assert got["parameters"] == {"engine": "onnx"}

    for method, path, status in (
        ("GET", "/v2/nothing", 404),
        ("DELETE", "/v2/models/mixed", 405),
        ("GET", "/v2/models/mixed/versions/%2E%2E", 404),
        ("POST", "/v2/models/mixed/infer", 422),
    ):
        refused = server.request(method, path, json={"inputs": []})
        assert refused.status_code == status, refused.text
        assert set(refused.json()) == {"error"} and refused.headers["X-Request-ID"], refused.text
    too_big = server.post("/v2/models/mixed/infer", data=b"[" + b" " * 11_000_000 + b"]")
    assert too_big.status_code == 413 and set(too_big.json()) == {"error"}


def test_api_token(serve: Callable[..., Server], database_url: str, tmp_path: Path) -> None:
    server = start(serve, database_url, tmp_path, MAAS_API_TOKEN=READER_TOKEN)
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200
    refused = server.get("/v2/models/nope")
    assert refused.status_code == 401 and set(refused.json()) == {"error"}
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(server.url + "/v2", headers={"Authorization": f"Bearer {READER_TOKEN}"}, timeout=10).ok

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as raised:
            client.get_server_metadata()
        assert raised.value.status() == "401"
        assert client.get_server_metadata(headers={"Authorization": f"Bearer {READER_TOKEN}"})["name"] == "maas"
    finally:
        client.close()
