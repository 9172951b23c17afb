"""Named admin tokens, the audit trail and the access log (API v1.1), through the Flask test client."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from registry.models import Event
from serving.telemetry.logs import ACCESS_LOGGER
from tests.support import ADMIN, ADMIN_TOKEN, CREDIT_ROW, upload

# Each change and its event share one transaction: both databases.
pytestmark = pytest.mark.postgresql

ALICE = {"Authorization": "Bearer tok-alice"}
CI = {"Authorization": "Bearer tok-ci"}
NAMED = (("alice", "tok-alice"), ("ci", "tok-ci"))


@pytest.fixture
def named(make_app: Any) -> Any:
    """A client of an app with MAAS_ADMIN_TOKEN (label admin) and MAAS_ADMIN_TOKENS alice and ci."""
    return make_app(admin_tokens=NAMED).test_client()


def events(client: Any, **query: Any) -> list[dict[str, Any]]:
    answer = client.get("/api/admin/events", query_string=query, headers=ADMIN)
    assert answer.status_code == 200, answer.json
    return answer.json


def alias_of(client: Any, model: str, alias: str) -> int | None:
    aliases: dict[str, int] = client.get(f"/api/models/{model}").json["aliases"]
    return aliases.get(alias)


# -- named admin tokens ----------------------------------------------------------------------
def test_each_named_token_acts_under_its_label_and_the_single_token_under_admin(
    named: Any, credit_pipeline: Any
) -> None:
    assert upload(named, "credit", credit_pipeline, headers=ALICE).status_code == 201
    assert upload(named, "credit", credit_pipeline, headers=CI).status_code == 201
    assert named.put("/api/admin/models/credit/aliases/prod", json={"version": 1}, headers=ADMIN).status_code == 200
    trail = events(named)
    assert [(e["actor"], e["action"], e["version"]) for e in trail] == [
        ("admin", "alias_set", 1),
        ("ci", "upload", 2),
        ("alice", "upload", 1),
    ]


@pytest.mark.parametrize("authorization", [None, "Bearer tok-bob", "Bearer tok-alic", "Bearer alice:tok-alice"])
def test_a_token_that_is_none_of_them_is_401(named: Any, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = named.get("/api/admin/events", headers=headers)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_named_tokens_alone_enable_admin_and_pass_the_api_token_check(make_app: Any) -> None:
    client = make_app(admin_token=None, admin_tokens=NAMED, api_token="reader").test_client()
    assert client.get("/api/admin/events", headers=ALICE).status_code == 200
    assert client.get("/api/admin/events", headers=ADMIN).status_code == 401  # MAAS_ADMIN_TOKEN unset
    assert client.get("/api/models", headers=CI).status_code == 200
    assert client.get("/api/models", headers={"Authorization": "Bearer reader"}).status_code == 200
    assert client.get("/api/admin/events", headers={"Authorization": "Bearer reader"}).status_code == 401
    assert client.get("/api/models").status_code == 401
    assert make_app(admin_token=None).test_client().get("/api/admin/events", headers=ALICE).status_code == 403


# -- the audit trail ----------------------------------------------------------------------
def test_every_change_is_recorded_with_what_changed(named: Any, credit_pipeline: Any) -> None:
    first = upload(named, "credit", credit_pipeline, {"aliases": ["prod"]}, headers=ALICE).json
    second = upload(named, "credit", credit_pipeline, {"aliases": ["prod"]}, headers=CI).json
    assert named.put("/api/admin/models/credit/aliases/prod", json={"version": 1}, headers=ADMIN).status_code == 200
    assert named.delete("/api/admin/models/credit/aliases/prod", headers=ALICE).status_code == 204
    patched = named.patch(
        "/api/admin/models/credit/versions/2", json={"description": "better", "tags": {"team": "risk"}}, headers=CI
    )
    assert patched.status_code == 200
    assert named.patch("/api/admin/models/credit", json={"description": "loans"}, headers=CI).status_code == 200
    assert named.delete("/api/admin/models/credit/versions/1", headers=ALICE).status_code == 204

    trail = events(named, model="credit")
    assert [e["id"] for e in trail] == sorted((e["id"] for e in trail), reverse=True)
    assert all(set(e) == {"id", "at", "actor", "action", "model", "version", "alias", "detail"} for e in trail)
    assert all(e["model"] == "credit" and e["at"].endswith("+00:00") for e in trail)
    got = [(e["actor"], e["action"], e["version"], e["alias"], e["detail"]) for e in reversed(trail)]
    stored_1 = {"sha256": first["sha256"], "size_bytes": first["size_bytes"]}
    stored_2 = {"sha256": second["sha256"], "size_bytes": second["size_bytes"]}
    assert got == [
        ("alice", "upload", 1, None, {**stored_1, "format": "joblib"}),
        ("alice", "alias_set", 1, "prod", {"previous_version": None, "version": 1}),
        ("ci", "upload", 2, None, {**stored_2, "format": "joblib"}),
        ("ci", "alias_set", 2, "prod", {"previous_version": 1, "version": 2}),
        ("admin", "alias_set", 1, "prod", {"previous_version": 2, "version": 1}),
        ("alice", "alias_delete", 1, "prod", {"previous_version": 1}),
        (
            "ci",
            "model_update",
            2,
            None,
            {"description": {"old": None, "new": "better"}, "tags": {"old": {}, "new": {"team": "risk"}}},
        ),
        ("ci", "model_update", None, None, {"description": {"old": None, "new": "loans"}}),
        ("alice", "version_delete", 1, None, stored_1),
    ]


def test_a_forced_model_delete_records_its_aliases_and_versions(named: Any, credit_pipeline: Any) -> None:
    upload(named, "credit", credit_pipeline, headers=ALICE)
    upload(named, "credit", credit_pipeline, {"aliases": ["prod", "canary"]}, headers=ALICE)
    upload(named, "other", credit_pipeline, headers=ALICE)
    assert named.delete("/api/admin/models/credit?force=true", headers=CI).status_code == 204
    trail = events(named, model="credit")
    deletes = [(e["action"], e["version"], e["alias"]) for e in trail if e["actor"] == "ci"]
    assert deletes == [  # newest first: the versions' deletes after the aliases'
        ("version_delete", 2, None),
        ("version_delete", 1, None),
        ("alias_delete", 2, "prod"),
        ("alias_delete", 2, "canary"),
    ]
    assert all(e["detail"]["model_deleted"] is True for e in trail if e["actor"] == "ci")
    # Events outlive the model; another model's are not among them.
    assert {e["model"] for e in events(named)} == {"credit", "other"}
    assert events(named, model="nobody") == []


def test_a_refused_change_records_nothing(named: Any, credit_pipeline: Any) -> None:
    upload(named, "credit", credit_pipeline, {"aliases": ["prod"]}, headers=ALICE)
    before = events(named)
    assert named.delete("/api/admin/models/credit/versions/1", headers=CI).status_code == 409
    assert named.put("/api/admin/models/credit/aliases/prod", json={"version": 9}, headers=CI).status_code == 404
    assert named.delete("/api/admin/models/credit?force=false", headers=CI).status_code == 409
    assert upload(named, "credit", b"not a model", headers=CI).status_code == 422
    assert events(named) == before


def test_events_are_paginated_like_the_other_lists(named: Any, credit_pipeline: Any) -> None:
    upload(named, "credit", credit_pipeline, headers=ALICE)
    for version in (1, 1, 1, 1):
        named.put("/api/admin/models/credit/aliases/prod", json={"version": version}, headers=ALICE)
    everything = events(named)
    assert len(everything) == 5
    page = named.get("/api/admin/events?page=2&page_size=2", headers=ADMIN)
    assert page.status_code == 200
    assert [e["id"] for e in page.json] == [e["id"] for e in everything[2:4]]
    assert json.loads(page.headers["X-Pagination"]) == {
        "total": 5,
        "total_pages": 3,
        "first_page": 1,
        "last_page": 3,
        "page": 2,
        "previous_page": 1,
        "next_page": 3,
    }
    assert named.get("/api/admin/events?page_size=0", headers=ADMIN).status_code == 422


def test_the_events_route_is_in_the_openapi_document(client: Any) -> None:
    spec = client.get("/openapi.json").json
    get = spec["paths"]["/api/admin/events"]["get"]
    assert {p["name"] for p in get["parameters"]} >= {"model", "page", "page_size"}
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    ref = schema["items"]["$ref"].rsplit("/", 1)[-1]
    properties = spec["components"]["schemas"][ref]["properties"]
    assert list(properties) == ["id", "at", "actor", "action", "model", "version", "alias", "detail"]
    assert properties["action"]["enum"] == ["upload", "alias_set", "alias_delete", "version_delete", "model_update"]


# -- a change and its event: committed together or not at all ----------------------------------
def test_an_event_that_cannot_be_written_undoes_its_change(named: Any, credit_pipeline: Any) -> None:
    upload(named, "credit", credit_pipeline, {"aliases": ["prod"]}, headers=ALICE)
    upload(named, "credit", credit_pipeline, headers=ALICE)
    before = events(named)

    def refuse(*_: Any) -> None:
        raise RuntimeError("the events table refused the row")

    event.listen(Event, "before_insert", refuse)
    try:
        moved = named.put("/api/admin/models/credit/aliases/prod", json={"version": 2}, headers=CI)
        deleted = named.delete("/api/admin/models/credit/versions/2", headers=CI)
        uploaded = upload(named, "credit", credit_pipeline, headers=CI)
    finally:
        event.remove(Event, "before_insert", refuse)
    assert (moved.status_code, deleted.status_code, uploaded.status_code) == (500, 500, 500)
    assert alias_of(named, "credit", "prod") == 1
    assert [v["version"] for v in named.get("/api/models/credit/versions").json] == [2, 1]
    assert events(named) == before


def test_a_change_that_fails_after_its_event_was_written_leaves_neither(named: Any, credit_pipeline: Any) -> None:
    upload(named, "credit", credit_pipeline, {"aliases": ["prod"]}, headers=ALICE)
    upload(named, "credit", credit_pipeline, headers=ALICE)
    before = events(named)
    seen: list[int] = []

    def fail_at_commit(session: Session) -> None:
        # The event is in the transaction (written, the alias moved) when the commit fails.
        written = list(session.scalars(select(Event.id).where(Event.action == "alias_set", Event.version == 2)))
        if written:
            seen.extend(written)
            raise RuntimeError("the commit failed")

    event.listen(Session, "before_commit", fail_at_commit)
    try:
        moved = named.put("/api/admin/models/credit/aliases/prod", json={"version": 2}, headers=CI)
    finally:
        event.remove(Session, "before_commit", fail_at_commit)
    assert moved.status_code == 500
    assert seen, "no event was written before the commit"
    assert alias_of(named, "credit", "prod") == 1
    assert events(named) == before


# -- the access log ------------------------------------------------------------------------
def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]


def test_one_access_line_per_request_with_the_route_and_the_resolved_version(
    client: Any, credit_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    upload(client, "credit", credit_pipeline, {"aliases": ["prod"]})
    upload(client, "credit", credit_pipeline)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    caplog.clear()
    predicted = client.post(
        "/api/models/credit/versions/prod/predict", json={"data": CREDIT_ROW}, headers={"X-Request-ID": "p-1"}
    )
    assert predicted.status_code == 200
    assert client.post("/api/models/credit/predict", json={"data": CREDIT_ROW}).status_code == 200
    assert client.post("/api/predict", json={"model": "credit", "version": "prod", "data": {"x": 1}}).status_code == 422
    assert client.get("/api/models/credit/versions/latest").status_code == 200
    assert client.get("/api/models/nobody").status_code == 404
    assert client.get("/no/such/thing?q=1").status_code == 404
    assert client.get("/health/live").status_code == 200
    v2_inputs = [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in CREDIT_ROW.items()
    ]
    assert client.post("/v2/models/credit/versions/prod/infer", json={"inputs": v2_inputs}).status_code == 200
    assert client.get("/v2/models/credit").status_code == 200
    assert client.get("/v2/models/credit/versions/1/ready").status_code == 200
    lines = access_lines(caplog)
    assert len(lines) == 10
    first = lines[0]
    assert list(first) == ["time", "method", "route", "status", "duration_ms", "request_id", "model", "version"]
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    got = [(x["method"], x["route"], x["status"], x.get("model"), x.get("version")) for x in lines]
    assert got == [
        ("POST", "/api/models/<name>/versions/<selector>/predict", 200, "credit", 1),
        ("POST", "/api/models/<name>/predict", 200, "credit", 2),
        ("POST", "/api/predict", 422, "credit", 1),  # resolved, then the row was refused
        ("GET", "/api/models/<name>/versions/<selector>", 200, "credit", 2),
        ("GET", "/api/models/<name>", 404, None, None),  # no such model: its name is not logged
        ("GET", None, 404, None, None),
        ("GET", "/health/live", 200, None, None),
        ("POST", "/v2/models/<name>/versions/<version>/infer", 200, "credit", 1),
        ("GET", "/v2/models/<name>", 200, "credit", 2),
        ("GET", "/v2/models/<name>/versions/<version>/ready", 200, "credit", 1),
    ]
    assert first["request_id"] == "p-1"
    assert all(len(x["request_id"]) == 32 for x in lines[1:])


def test_the_access_log_holds_no_token_payload_query_or_user(
    make_app: Any, credit_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(admin_tokens=NAMED, api_token="reader-secret").test_client()
    caplog.set_level(logging.DEBUG)
    upload(client, "credit", credit_pipeline, headers=ALICE)
    row = {**CREDIT_ROW, "region": "payload-secret-region"}
    client.post("/api/models/credit/predict", json={"data": row}, headers={"Authorization": "Bearer reader-secret"})
    client.get("/api/models?page=1&query-secret=1", headers=CI)
    client.get("/api/models/payload-secret-name", headers=CI)
    client.get("/api/models", headers={"Authorization": "Basic dXNlci1zZWNyZXQ6cGFzcw=="})  # user-secret:pass
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER)
    assert text.count("\n") == 4
    for secret in ("tok-alice", "tok-ci", "reader-secret", "payload-secret", "query-secret", "user-secret", "alice"):
        assert secret not in text
    assert ADMIN_TOKEN not in text
