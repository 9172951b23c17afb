"""SQLite's "database is locked" never reaches a client.

Another process holds SQLite's write lock (BEGIN IMMEDIATE, as a backup script or a second
`maas` would) while clients upload, move aliases, delete and predict against `maas serve
--workers 4`. The writes wait on the busy timeout (WAL mode lets the reads go on meanwhile) and
succeed once the lock is let go: no 5xx, no "locked" in any answer or in the log.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ADMIN, ADMIN_TOKEN, CREDIT_ROW, joblib_bytes, live_server
from tests.support.live import HTTP_TIMEOUT_S, Server

HOLD_S = 2.0  # how long the other process keeps the write lock
# Fewer writers than workers: each waiting write holds a sync worker, and one must stay free
# to show that reads go on meanwhile.
WRITERS = 3


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    database = tmp_path / "registry.db"
    with live_server("sqlite", tmp_path, f"sqlite:///{database}", workers=4, MAAS_ADMIN_TOKEN=ADMIN_TOKEN) as live:
        yield live.server, database


def test_a_held_write_lock_delays_writes_and_never_fails_them(
    sqlite_server: tuple[Server, Path], credit_pipeline: Any
) -> None:
    server, database = sqlite_server
    payload = joblib_bytes(credit_pipeline)

    def upload(session: requests.Session) -> requests.Response:
        return session.post(
            server.url + "/api/admin/models/credit/versions",
            files={"file": ("m.joblib", payload, "application/octet-stream")},
            headers=ADMIN,
            timeout=HTTP_TIMEOUT_S,
        )

    for _ in range(2):
        assert upload(server.session).status_code == 201
    assert (
        server.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN).status_code == 200
    )
    assert server.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW}).status_code == 200

    holder = sqlite3.connect(database, isolation_level=None, timeout=30, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, as another process would take it
    locked_at = time.monotonic()
    released = threading.Event()

    def release() -> None:
        time.sleep(HOLD_S)
        released.set()  # before the COMMIT: a write can only finish after it
        holder.execute("COMMIT")
        holder.close()

    threading.Thread(target=release, daemon=True).start()

    def writer(i: int) -> tuple[requests.Response, bool]:
        with requests.Session() as session:
            if i % 3 == 0:
                answer = upload(session)
            elif i % 3 == 1:
                answer = session.put(
                    server.url + "/api/admin/models/credit/aliases/production",
                    json={"version": 1 + i % 2},
                    headers=ADMIN,
                    timeout=HTTP_TIMEOUT_S,
                )
            else:
                answer = session.patch(
                    server.url + "/api/admin/models/credit",
                    json={"description": f"written while held {i}"},
                    headers=ADMIN,
                    timeout=HTTP_TIMEOUT_S,
                )
            return answer, released.is_set()

    reads_while_locked = Counter[int]()
    with ThreadPoolExecutor(WRITERS) as pool:
        writes = [pool.submit(writer, i) for i in range(WRITERS)]
        # WAL: readers are not blocked by the writer's lock.
        while not released.is_set():
            answer = server.post("/api/predict", json={"model": "credit", "version": "production", "data": CREDIT_ROW})
            reads_while_locked[answer.status_code] += 1
            time.sleep(0.05)
        results = [w.result() for w in writes]

    statuses = Counter(answer.status_code for answer, _ in results)
    for answer, _ in results:
        assert answer.status_code in (200, 201), answer.text
        assert "locked" not in answer.text.lower()
    assert set(reads_while_locked) == {200}, reads_while_locked
    # Every write waited for the lock (else the lock was not held and this proved nothing).
    assert all(after_release for _, after_release in results), "a write finished while the lock was held"
    waited = time.monotonic() - locked_at
    assert server.get("/api/models/credit").json()["latest_version"] == 2 + sum(1 for i in range(WRITERS) if i % 3 == 0)
    log = server.log.read_text(errors="replace")
    assert "locked" not in log and "Traceback" not in log, server.output()
    print(
        f"\nSQLite write lock held {HOLD_S} s by another process: {WRITERS} writes {dict(statuses)} "
        f"(all after the lock was let go; {waited:.2f} s in all), "
        f"{sum(reads_while_locked.values())} predictions meanwhile "
        f"{dict(reads_while_locked)}"
    )
