"""Versions resolved from memory for MAAS_ALIAS_TTL: an alias move or a delete made through another
worker is followed within it, one made through this worker at once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from serving.config import ConfigError, Settings
from tests.support import ADMIN, CREDIT_ROW, upload

pytestmark = pytest.mark.postgresql

TTL = 0.5


def served_version(client: Any, path: str = "/api/models/credit/versions/production/predict") -> int:
    r = client.post(path, json={"data": CREDIT_ROW})
    assert r.status_code == 200, r.json
    return int(r.json["version"])


def test_another_workers_alias_move_is_followed_within_the_ttl(make_app: Any, credit_pipeline: Any) -> None:
    writer = make_app(alias_ttl_seconds=TTL).test_client()
    reader = make_app(alias_ttl_seconds=TTL).test_client()
    assert upload(writer, "credit", credit_pipeline, {"aliases": ["production"]}).status_code == 201
    assert upload(writer, "credit", credit_pipeline).status_code == 201
    assert served_version(reader) == 1  # now remembered by the reader
    moved = writer.put("/api/admin/models/credit/aliases/production", json={"version": 2}, headers=ADMIN)
    assert moved.status_code == 200
    moved_at = time.monotonic()
    assert served_version(writer) == 2  # its own change: at once
    seen = []
    while time.monotonic() - moved_at < TTL * 3:
        seen.append((time.monotonic() - moved_at, served_version(reader)))
        time.sleep(0.02)
    # Once the new version is served it stays; it is served at the latest one TTL after the move.
    versions = [v for _, v in seen]
    assert versions == sorted(versions) and versions[-1] == 2
    assert versions[0] == 1, "the reader asked the database: nothing was resolved from memory"
    first_new = next(t for t, v in seen if v == 2)
    assert first_new <= TTL + 0.1, seen
    print(f"alias move followed by the other worker after {first_new * 1000:.0f} ms (TTL {TTL * 1000:.0f} ms)")


def test_a_delete_through_another_worker_is_followed_within_the_ttl(make_app: Any, credit_pipeline: Any) -> None:
    writer = make_app(alias_ttl_seconds=TTL).test_client()
    reader = make_app(alias_ttl_seconds=TTL).test_client()
    assert upload(writer, "credit", credit_pipeline).status_code == 201
    assert upload(writer, "credit", credit_pipeline).status_code == 201
    assert served_version(reader, "/api/models/credit/predict") == 2
    assert writer.delete("/api/admin/models/credit/versions/2", headers=ADMIN).status_code == 204
    assert served_version(writer, "/api/models/credit/predict") == 1
    time.sleep(TTL + 0.05)
    assert served_version(reader, "/api/models/credit/predict") == 1
    assert reader.post("/api/models/credit/versions/2/predict", json={"data": CREDIT_ROW}).status_code == 404


def test_a_change_is_answered_when_a_remembered_resolution_expires_meanwhile(
    make_app: Any, credit_pipeline: Any
) -> None:
    """A worker forgets what it resolved of a model it changes; an entry that expires between
    being listed and being removed must not fail the change (it answered 500 in CI). The memory
    here is a real TTLCache on a clock of the test's: still until the change, then 0.6 TTL later
    at every reading, so the entry is alive when listed and expired when removed."""
    from cachetools import TTLCache

    from serving.api.context import runtime

    readings: list[float] = []  # armed: each reading is 0.6 TTL after the one before

    def clock() -> float:
        if readings:
            readings.append(readings[-1] + 0.6 * TTL)
            return readings[-1]
        return 0.0

    app = make_app(alias_ttl_seconds=TTL)
    client = app.test_client()
    assert upload(client, "credit", credit_pipeline, {"aliases": ["production"]}).status_code == 201
    with app.app_context():
        rt = runtime()
        rt._fresh = TTLCache(16, ttl=TTL, timer=clock)
        assert served_version(client) == 1
        assert list(rt._fresh) == [("credit", "production")]  # remembered
    readings.append(0.0)
    r = client.put("/api/admin/models/credit/aliases/staging", json={"version": 1}, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert len(readings) >= 3, readings  # the entry was listed, then removed, on the moving clock
    assert served_version(client) == 1


def test_a_ttl_of_zero_asks_the_database_every_time(make_app: Any, credit_pipeline: Any) -> None:
    writer = make_app(alias_ttl_seconds=0).test_client()
    reader = make_app(alias_ttl_seconds=0).test_client()
    assert upload(writer, "credit", credit_pipeline, {"aliases": ["production"]}).status_code == 201
    assert upload(writer, "credit", credit_pipeline).status_code == 201
    assert served_version(reader) == 1
    assert (
        writer.put("/api/admin/models/credit/aliases/production", json={"version": 2}, headers=ADMIN).status_code == 200
    )
    assert served_version(reader) == 2


def test_maas_alias_ttl_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).alias_ttl_seconds == 1.0
    assert Settings.from_env({"MAAS_ALIAS_TTL": "0"}).alias_ttl_seconds == 0
    assert Settings.from_env({"MAAS_ALIAS_TTL": "0.25"}).alias_ttl_seconds == 0.25
    for bad in ("-1", "soon", "100000"):
        with pytest.raises(ConfigError, match="MAAS_ALIAS_TTL"):
            Settings.from_env({"MAAS_ALIAS_TTL": bad})
