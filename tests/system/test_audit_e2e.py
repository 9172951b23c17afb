"""Named admin tokens, the audit trail and the access log (API v1.1) of `maas serve` over real HTTP."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import CREDIT_ROW, joblib_bytes
from tests.support.live import Server, environment

# The audit trail is written in the database's transactions and read after a restart: both databases.
pytestmark = pytest.mark.postgresql


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(server: Server, name: str, payload: bytes, token: str, metadata: dict[str, Any] | None = None) -> Any:
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    return server.post(
        f"/api/admin/models/{name}/versions",
        files={"file": ("model.joblib", payload, "application/octet-stream")},
        data=data,
        headers=bearer(token),
    )


def access_lines(server: Server) -> list[dict[str, Any]]:
    """The JSON objects of the server's log (stdout and stderr), waiting briefly for the last ones."""
    lines: list[dict[str, Any]] = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_a_revoked_token_keeps_its_label_in_old_events(
    serve: Callable[..., Server], database_url: str, tmp_path: Path, credit_pipeline: Any
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    alice, ci = secrets.token_hex(16), secrets.token_hex(16)
    variables = {"MAAS_DATABASE_URL": database_url, "MAAS_STORE_DIR": str(tmp_path / "store")}
    server = serve(env=environment(MAAS_ADMIN_TOKENS=f"alice:{alice},ci:{ci}", **variables), cwd=workdir)
    payload = joblib_bytes(credit_pipeline)
    assert upload(server, "credit", payload, alice, {"aliases": ["prod"]}).status_code == 201
    assert upload(server, "credit", payload, ci).status_code == 201
    moved = server.put("/api/admin/models/credit/aliases/prod", json={"version": 2}, headers=bearer(ci))
    assert moved.status_code == 200, moved.text
    before = server.get("/api/admin/events?model=credit", headers=bearer(alice)).json()
    assert [(e["actor"], e["action"]) for e in before] == [
        ("ci", "alias_set"),
        ("ci", "upload"),
        ("alice", "alias_set"),
        ("alice", "upload"),
    ]
    assert server.stop() == 0, server.output()

    # alice's token is revoked: the server restarts without it.
    server = serve(env=environment(MAAS_ADMIN_TOKENS=f"ci:{ci}", **variables), cwd=workdir)
    refused = server.put("/api/admin/models/credit/aliases/prod", json={"version": 1}, headers=bearer(alice))
    assert refused.status_code == 401
    assert server.get("/api/admin/events", headers=bearer(alice)).status_code == 401
    assert server.request("DELETE", "/api/admin/models/credit/aliases/prod", headers=bearer(ci)).status_code == 204
    after = server.get("/api/admin/events?model=credit&page_size=2&page=1", headers=bearer(ci))
    assert after.status_code == 200, after.text
    assert json.loads(after.headers["X-Pagination"])["total"] == 5
    everything = server.get("/api/admin/events?model=credit", headers=bearer(ci)).json()
    assert everything[1:] == before  # alice's events as they were, label and all
    assert everything[0]["actor"] == "ci" and everything[0]["action"] == "alias_delete"
    assert everything[0]["detail"] == {"previous_version": 2}
    assert [e["id"] for e in after.json()] == [e["id"] for e in everything[:2]]


def test_the_access_log_is_one_json_line_per_request_and_holds_no_secret(
    serve: Callable[..., Server], database_url: str, tmp_path: Path, credit_pipeline: Any
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    admin, reader = f"admin-{secrets.token_hex(12)}", f"reader-{secrets.token_hex(12)}"
    payload_value = f"payload-{secrets.token_hex(8)}"
    query_value = f"query-{secrets.token_hex(8)}"
    path_value = f"pathname-{secrets.token_hex(8)}"
    basic_user = f"user-{secrets.token_hex(8)}"
    server = serve(
        env=environment(
            MAAS_ADMIN_TOKENS=f"ops:{admin}",
            MAAS_API_TOKEN=reader,
            MAAS_DATABASE_URL=database_url,
            MAAS_STORE_DIR=str(tmp_path / "store"),
        ),
        cwd=workdir,
    )
    start = len(access_lines(server))  # wait_ready's own probes are logged too
    assert upload(server, "credit", joblib_bytes(credit_pipeline), admin, {"aliases": ["prod"]}).status_code == 201
    answers = [
        server.post(
            "/api/models/credit/versions/prod/predict",
            json={"data": CREDIT_ROW},
            headers={**bearer(reader), "X-Request-ID": "mine-1"},
        ),
        server.post(
            "/api/predict",
            json={"model": "credit", "data": {**CREDIT_ROW, "region": payload_value}},
            headers=bearer(admin),
        ),
        server.get(f"/api/models?page=1&secret={query_value}", headers=bearer(reader)),
        server.get(f"/api/models/{path_value}", headers=bearer(reader)),
        server.get(
            "/api/models", headers={"Authorization": "Basic " + base64.b64encode(f"{basic_user}:pw".encode()).decode()}
        ),
        server.get("/health/live"),
    ]
    assert [a.status_code for a in answers] == [200, 422, 200, 404, 401, 200]
    # A request gunicorn refuses itself (a bad request line) gets a line of the same shape.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(f"GET /api/models?x={query_value} HTTP/9.9\r\nHost: x\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 400")

    deadline = time.monotonic() + 10
    while len(access_lines(server)) < start + 1 + len(answers) + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = access_lines(server)[start:]
    assert len(lines) == 1 + len(answers) + 1, server.output()
    keys = ["time", "method", "route", "status", "duration_ms", "request_id"]
    got = [(x["method"], x["route"], x["status"], x.get("model"), x.get("version")) for x in lines]
    assert got == [
        ("POST", "/api/admin/models/<anytext:name>/versions", 201, "credit", 1),
        ("POST", "/api/models/<name>/versions/<selector>/predict", 200, "credit", 1),
        ("POST", "/api/predict", 422, "credit", 1),
        ("GET", "/api/models", 200, None, None),
        ("GET", "/api/models/<name>", 404, None, None),
        ("GET", "/api/models", 401, None, None),
        ("GET", "/health/live", 200, None, None),
        (None, None, 400, None, None),
    ]
    for line, answer in zip(lines[1:], answers, strict=False):
        assert list(line)[:6] == keys and line["request_id"] == answer.headers["X-Request-ID"]
    assert lines[1]["request_id"] == "mine-1"
    assert lines[-1]["request_id"] is None
    assert all(x["time"].endswith("+00:00") and x["duration_ms"] >= 0 for x in lines)

    log = server.log.read_text(errors="replace")
    for secret in (admin, reader, payload_value, query_value, path_value, basic_user):
        assert secret not in log, secret
    assert '"GET /api/models' not in log  # gunicorn's own access line (the raw request line) is off
    assert requests.get(server.url + "/health/live", timeout=10).status_code == 200
