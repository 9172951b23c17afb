"""The registry database goes away under a running `maas serve`, and comes back.

PostgreSQL only: SQLite is a file inside the server's own process and cannot be unreachable on
its own. The server reaches PostgreSQL through a TCP relay on a port of its own; stopping the
relay closes every connection and its port (what a stopped PostgreSQL looks like to a client),
starting it again on the same port brings the database back.

While the database is gone: `/health/ready` answers 503 within a second, predictions of versions
this worker already served keep answering (resolved from memory), everything else answers 503 in
the contract's shape, and nothing crashes. When it returns, everything recovers by itself.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy.engine import make_url

from registry.db import is_disconnect, make_engine
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    CREDIT_ROW,
    joblib_bytes,
    live_server,
    postgres_database,
)
from tests.support.live import MAAS, Server, environment, free_port

# Only a bound on the test's own waiting; nothing is timed.
RECOVERY_WAIT_S = 30.0
READY_DEADLINE_S = 1.0


class Relay:
    """A TCP relay 127.0.0.1:port -> target that can be stopped (port closed, connections
    dropped) and started again on the same port; or, in a blackhole, keep accepting
    connections and never answer on them (a database host that hangs)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.blackhole = False

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._run(blackhole=False)

    def stop(self) -> None:
        """Close the port and every connection (a stopped PostgreSQL)."""
        self._halt()
        if self._listener is not None:
            self._listener.close()

    def go_dark(self) -> None:
        """Drop every connection; from now on accept new ones and never answer on them."""
        self._halt()
        self._run(blackhole=True)

    def restore(self) -> None:
        """Relay again after go_dark()."""
        self._halt()
        self._run(blackhole=False)

    def _run(self, *, blackhole: bool) -> None:
        self.blackhole = blackhole
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()
            self._conns.clear()

    def _serve(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    if key.data is None:
                        client, _ = self._listener.accept()
                        if self.blackhole:  # held open, never answered
                            with self._lock:
                                self._conns.append(client)
                            continue
                        try:
                            upstream = socket.create_connection(self.target, timeout=5)
                        except OSError:
                            client.close()
                            continue
                        with self._lock:
                            self._conns += [client, upstream]
                        sel.register(client, selectors.EVENT_READ, upstream)
                        sel.register(upstream, selectors.EVENT_READ, client)
                    else:
                        source, sink = key.fileobj, key.data
                        try:
                            chunk = source.recv(65536)  # type: ignore[union-attr]
                            if chunk:
                                sink.sendall(chunk)
                                continue
                        except OSError:
                            pass
                        for s in (source, sink):
                            with contextlib.suppress(KeyError, ValueError):
                                sel.unregister(s)
                            with contextlib.suppress(OSError):
                                s.close()  # type: ignore[union-attr]
        finally:
            for key in list(sel.get_map().values()):
                if key.fileobj is not self._listener:
                    with contextlib.suppress(OSError):
                        key.fileobj.close()  # type: ignore[union-attr]
            sel.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


def predict(server: Server, path: str, body: dict[str, Any]) -> requests.Response:
    return server.post(path, json=body)


def wait_until(check: Any, what: str, server: Server) -> float:
    """Poll `check()` until true; returns the seconds it took (a figure, not an assertion)."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_WAIT_S:
        with contextlib.suppress(requests.RequestException):
            if check():
                return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {RECOVERY_WAIT_S} s:\n{server.output()}")


@pytest.mark.parametrize("mode", ["refused", "blackhole"])
def test_database_outage_and_recovery(
    postgres_url: str, tmp_path: Path, credit_pipeline: Any, regressor: Any, mode: str
) -> None:
    """`refused`: the port closed, as a stopped PostgreSQL; `blackhole`: connections accepted and
    never answered, as a host that hangs (each new connection then waits out the connect timeout)."""
    parsed = make_url(postgres_url)
    relay = Relay((parsed.host or "127.0.0.1", parsed.port or 5432))
    relay.start()
    url = parsed.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    try:
        # One worker: what "already served" means is per worker, and with one the test knows which.
        with live_server("postgresql", tmp_path, url, workers=1, MAAS_ADMIN_TOKEN=ADMIN_TOKEN) as live:
            _outage_and_recovery(live.server, relay, mode, credit_pipeline, regressor)
    finally:
        relay.stop()


def _upload(server: Server, name: str, model: Any) -> requests.Response:
    return server.post(
        f"/api/admin/models/{name}/versions",
        files={"file": ("model.joblib", joblib_bytes(model), "application/octet-stream")},
        headers=ADMIN,
    )


def _outage_and_recovery(server: Server, relay: Relay, mode: str, credit_pipeline: Any, regressor: Any) -> None:
    for _ in range(2):
        assert _upload(server, "credit", credit_pipeline).status_code == 201
    assert _upload(server, "rent", regressor).status_code == 201
    alias = server.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN)
    assert alias.status_code == 200, alias.text
    worker = server.get("/health/live")
    assert worker.status_code == 200

    warmed: dict[str, tuple[str, dict[str, Any]]] = {
        "by number": ("/api/predict", {"model": "credit", "version": 1, "data": CREDIT_ROW}),
        "by digits": ("/api/models/credit/versions/1/predict", {"data": CREDIT_ROW}),
        "by alias": ("/api/predict", {"model": "credit", "version": "production", "data": CREDIT_ROW}),
        "latest": ("/api/models/credit/predict", {"data": CREDIT_ROW, "return_probabilities": True}),
    }
    before = {}
    for what, (path, body) in warmed.items():
        answer = predict(server, path, body)
        assert answer.status_code == 200, (what, answer.text)
        before[what] = answer.json()
    assert before["by alias"]["version"] == 1 and before["latest"]["version"] == 2

    # -- the database goes away ----------------------------------------------------------------
    relay.stop() if mode == "refused" else relay.go_dark()
    started = time.monotonic()
    ready = server.get("/health/ready", timeout=READY_DEADLINE_S)  # raises if slower than that
    ready_s = time.monotonic() - started
    assert ready.status_code == 503, ready.text
    assert "database" in ready.json()["message"], ready.text
    assert server.get("/health/live").json() == {"status": "ok"}

    rounds = 3
    for _ in range(rounds):  # also after the first failure has opened the "use memory" window
        for what, (path, body) in warmed.items():
            answer = predict(server, path, body)
            assert answer.status_code == 200, (what, answer.text)
            assert answer.json() == before[what], what
        time.sleep(0.4)

    unavailable: dict[str, tuple[str, str, dict[str, Any]]] = {
        "version never served here": (
            "POST",
            "/api/predict",
            {"json": {"model": "credit", "version": 2, "data": CREDIT_ROW}},
        ),
        "model never served here": ("POST", "/api/models/rent/predict", {"json": {"data": {"x1": 0.5, "x2": 1.0}}}),
        "listing": ("GET", "/api/models", {}),
        "detail": ("GET", "/api/models/credit/versions/1", {}),
        "alias move": (
            "PUT",
            "/api/admin/models/credit/aliases/production",
            {"json": {"version": 2}, "headers": ADMIN},
        ),
        "upload": (
            "POST",
            "/api/admin/models/during-outage/versions",
            {"files": {"file": ("m.joblib", joblib_bytes(regressor), "application/octet-stream")}, "headers": ADMIN},
        ),
    }
    for what, (method, path, kwargs) in unavailable.items():
        answer = server.request(method, path, **kwargs)
        assert answer.status_code == 503, (what, answer.text)
        body = answer.json()
        assert body["code"] == 503 and body["status"] == "Service Unavailable", (what, body)
        assert "database" in body["message"] and "Traceback" not in answer.text, (what, body)
    assert server.process.poll() is None, "maas serve died with the database"

    # -- the database comes back -----------------------------------------------------------------
    relay.start() if mode == "refused" else relay.restore()
    recovered_s = wait_until(lambda: server.get("/health/ready", timeout=5).status_code == 200, "ready again", server)
    assert server.get("/api/models/during-outage").status_code == 404, "an upload refused with 503 left a version"
    assert _upload(server, "after", regressor).status_code == 201
    moved = server.put("/api/admin/models/credit/aliases/production", json={"version": 2}, headers=ADMIN)
    assert moved.status_code == 200, moved.text
    # Back on the database: the alias move shows at once (memory is only the fallback).
    answer = predict(server, "/api/predict", {"model": "credit", "version": "production", "data": CREDIT_ROW})
    assert answer.status_code == 200 and answer.json()["version"] == 2, answer.text
    answer = predict(server, "/api/models/rent/predict", {"data": {"x1": 0.5, "x2": 1.0}})
    assert answer.status_code == 200, answer.text
    assert server.process.poll() is None
    log = server.log.read_text(errors="replace")
    assert "unhandled error" not in log and "WORKER TIMEOUT" not in log, server.output()
    assert log.count("Booting worker") == 1, "a worker died and was replaced"
    print(
        f"\ndatabase outage ({mode}): /health/ready 503 in {ready_s * 1000:.0f} ms; "
        f"{rounds * len(warmed)} predictions of served versions answered 200 from memory; "
        f"{len(unavailable)} other requests 503; ready again {recovered_s:.2f} s after the database returned"
    )


def test_serve_without_its_database_says_so_and_exits(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = environment(MAAS_DATABASE_URL=f"postgresql+psycopg://maas:s3cret@127.0.0.1:{closed}/maas")
    run = subprocess.run(
        [*MAAS, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"cannot reach the registry database at postgresql+psycopg://maas:***@127.0.0.1:{closed}/maas" in run.stderr
    assert "Traceback" not in run.stderr and "s3cret" not in run.stderr + run.stdout


def _error_of(engine: Any, statement: str, *setup: str) -> BaseException:
    try:
        with engine.connect() as conn:
            for line in setup:
                conn.exec_driver_sql(line)
            conn.exec_driver_sql(statement)
    except Exception as exc:  # noqa: BLE001 - the error is what the test is about
        return exc
    raise AssertionError(f"{statement!r} did not fail")


def test_only_a_database_out_of_reach_counts_as_a_disconnect(tmp_path: Path) -> None:
    """Real errors: a prediction may fall back on memory only when the database cannot be
    reached, never because a statement failed on a database that answers."""
    sqlite = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    assert not is_disconnect(_error_of(sqlite, "SELECT * FROM no_such_table"))
    sqlite.dispose()
    (tmp_path / "registry.db").unlink()
    (tmp_path / "registry.db").mkdir()  # a directory where the file was: it cannot be opened
    assert is_disconnect(_error_of(sqlite, "SELECT 1"))
    closed = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    assert is_disconnect(_error_of(closed, "SELECT 1"))


def test_a_failed_statement_on_postgresql_is_not_a_disconnect(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        canceled = _error_of(engine, "SELECT pg_sleep(5)", "SET statement_timeout = 50")
        assert type(getattr(canceled, "orig", None)).__name__ == "QueryCanceled", canceled
        assert not is_disconnect(canceled)
        assert not is_disconnect(_error_of(engine, "SELECT * FROM no_such_table"))
        # The server ending this session (as a restart does) is one.
        terminated = _error_of(engine, "SELECT pg_terminate_backend(pg_backend_pid())")
        assert is_disconnect(terminated), terminated
    finally:
        engine.dispose()
