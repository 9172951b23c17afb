"""A scale-out deployment on loopback, as deploy/README.md describes it: two `maas serve` replicas
(A and B, 2 workers each) on one PostgreSQL registry and one model store, behind HAProxy running
the repository's own deploy/haproxy.cfg. A steady stream of predictions goes through the balancer
the whole time, while:

1. version 1 of a model is uploaded through A and predicted at once through the balancer and
   through B, which has never seen it;
2. the alias the stream predicts by is moved from version 1 to version 2 through B: no request
   sent more than MAAS_ALIAS_TTL (1 s) after the move is answered by version 1;
3. a model B has served is deleted through A: B answers 404 for it within the TTL;
4. replica A is killed (SIGKILL to its process group: gunicorn, its workers and their runners):
   only the requests it was answering fail, and every request sent 2 s after the kill succeeds;
5. A is restarted on its port: HAProxy's health check puts it back in the rotation, it answers
   requests again, and none fails.

The store is an S3 bucket of moto's standalone server over real HTTP, each replica with a local
cache of its own.
The figures (how long the alias move took to be seen, requests failed while a replica died...)
are printed to the terminal, also under `pytest -q`.

PostgreSQL only (MAAS_TEST_DATABASE_URL; skipped without it, as every PostgreSQL test is). HAProxy
(and moto for the S3 store) missing: skipped, except where CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tests.support import ADMIN, ADMIN_TOKEN, REPO, joblib_bytes, postgres_database
from tests.support import upload_live as upload
from tests.support.live import Server, ServerFailed, environment, free_port, launch
from tests.support.s3 import S3Endpoint

IN_CI = os.environ.get("CI") == "true"
HAPROXY_CONFIG = REPO / "deploy" / "haproxy.cfg"
PREFIX = "deploy"
MODEL = "credit"
ALIAS = "champion"
THROWAWAY = "tmp"
ROW = {"x1": 1.0, "x2": -1.0}  # version 1 (x1 > 0) says 1, version 2 (x2 > 0) says 0

# The contract (API v1.1, MAAS_ALIAS_TTL): an alias move or a delete reaches every worker and
# replica within this many seconds.
ALIAS_TTL_S = 1.0
# Every request sent this long after the kill must succeed: HAProxy's check (every 500 ms, out
# after 2 failures) has taken A out by then, and until it has, a refused connection is retried on B.
KILLED_GRACE_S = 2.0

CLIENTS = 3  # threads streaming predictions through the balancer
CLIENT_PAUSE_S = 0.01  # between one client's requests: a steady stream the 2-core machine keeps up with
STREAM_MAX_REQUESTS = 20_000
STREAM_MAX_S = 75.0
REQUEST_TIMEOUT_S = 15.0
STEADY_S = 1.5  # the stream on version 1 everywhere before the move (every worker has resolved it)
AFTER_MOVE_S = 2.0
DELETE_WATCH_S = 1.6
AFTER_KILL_S = 4.5
AFTER_RESTART_S = 1.0  # once the restarted A has answered A_AGAIN of the stream's requests
A_AGAIN = 30
LB_DEADLINE_S = 15.0  # for HAProxy to answer, and to mark a replica up or down
POLL_S = 0.05


def unavailable(reason: str) -> NoReturn:
    """Skip, except in CI (CI=true), where a missing tool is a failure."""
    if IN_CI:
        pytest.fail(f"{reason}, and CI=true: this test must run in CI")
    pytest.skip(reason)


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def now() -> float:
    return time.monotonic()


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float) -> float:
    """Poll until `condition()`, failing after `deadline_s`; returns when it first held."""
    deadline = now() + deadline_s
    while not condition():
        if now() > deadline:
            pytest.fail(f"{what}: not after {deadline_s:.0f} s")
        time.sleep(POLL_S)
    return now()


# -- the store ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Store:
    """The store variables of each replica, and (S3) the bucket's objects."""

    variables: Callable[[str], dict[str, str]]
    objects: Callable[[], list[str]]


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A bucket of its own on moto's S3 server (tests/conftest.py's `s3`, over real HTTP), with a
    local cache of each replica's own."""
    if importlib.util.find_spec("boto3") is None or importlib.util.find_spec("moto") is None:
        unavailable("boto3 and moto[server] are not installed: the S3 store cannot be tested")
    s3: S3Endpoint = request.getfixturevalue("s3")
    bucket = s3.new_bucket()
    variables = {
        "MAAS_STORE_URL": f"s3://{bucket}/{PREFIX}",
        **s3.environment(),
        # nothing of this machine's own AWS configuration
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }

    def objects() -> list[str]:
        client = s3.client()
        try:
            listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/")
            return [str(o["Key"]) for o in listed.get("Contents", [])]
        finally:
            client.close()

    return Store(lambda replica: {**variables, "MAAS_STORE_CACHE_DIR": str(tmp_path / f"cache-{replica}")}, objects)


@pytest.fixture
def registry_url(postgres_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own (skipped without MAAS_TEST_DATABASE_URL)."""
    yield from postgres_database(template=postgres_template)


# -- the replicas ---------------------------------------------------------------------------------
def ready(*servers: Server) -> None:
    for server in servers:
        try:
            server.wait_ready()
        except ServerFailed as exc:
            pytest.fail(str(exc))


def stream_ids(log: Path) -> set[str]:
    """The request ids of the stream's requests in a replica's access log (one JSON object per
    line, on its stderr)."""
    ids = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                ids.add(str(json.loads(line).get("request_id")))
    return {i for i in ids if i.startswith("stream-")}


# -- the balancer ---------------------------------------------------------------------------------
STATS_CONFIG = """
# The test's own addition to deploy/haproxy.cfg: the stats page, whose CSV says each replica's state.
listen stats
    bind 127.0.0.1:{port}
    stats enable
    stats uri /
"""


@dataclass
class Balancer:
    process: subprocess.Popen[bytes]
    port: int
    stats_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def servers(self) -> dict[str, dict[str, str]]:
        """Each replica's row of HAProxy's stats CSV (status UP/DOWN..., stot, wretr, wredis...)."""
        text = requests.get(f"http://127.0.0.1:{self.stats_port}/;csv", timeout=2).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas" and row["svname"] in ("a", "b")}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_balancer(haproxy: str, a: Server, b: Server, root: Path) -> Balancer:
    port, stats_port = free_port(), free_port()
    extra = root / "haproxy-stats.cfg"
    extra.write_text(STATS_CONFIG.format(port=stats_port))
    log = root / "haproxy.log"
    env = environment(
        MAAS_LB_BIND=f"127.0.0.1:{port}",
        MAAS_REPLICA_A=f"127.0.0.1:{a.port}",
        MAAS_REPLICA_B=f"127.0.0.1:{b.port}",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [haproxy, "-db", "-f", str(HAPROXY_CONFIG), "-f", str(extra)],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Balancer(process, port, stats_port, log)


def in_rotation(row: dict[str, str]) -> bool:
    """Whether HAProxy sends a replica requests: "UP", or "UP 1/2" (a check failed, one more takes
    it out), once checked ("INI": not yet; "* L7OK": the last check passed, the next under way)."""
    return row["status"].startswith("UP") and row["check_status"].lstrip("* ") not in ("", "INI")


class Watch:
    """HAProxy's view of each replica, polled every POLL_S in a thread: when each change of
    whether it is in the rotation, or of its status ("UP 1/2": a check failed), was first seen."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.changes: list[tuple[float, str, bool, str]] = []
        self.current: dict[str, tuple[bool, str]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="haproxy-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.balancer.servers()
                seen = now()
                with self._lock:
                    for name, row in rows.items():
                        state = (in_rotation(row), row["status"])
                        if self.current.get(name) != state:
                            self.current[name] = state
                            self.changes.append((seen, name, *state))
            except requests.ConnectionError as exc:
                if self.current:  # refused before HAProxy listens: not an error yet
                    self.errors.append(repr(exc))
            except Exception as exc:  # noqa: BLE001 - reported by the test, never lost in a thread
                self.errors.append(repr(exc))
            self._stop.wait(POLL_S)

    def up(self, name: str) -> bool:
        with self._lock:
            return self.current.get(name, (False, ""))[0]

    def first_change(self, name: str, up: bool, after: float) -> float | None:
        with self._lock:
            return next((t for t, n, u, _ in self.changes if n == name and u == up and t >= after), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# -- the stream of predictions --------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    request_id: str
    sent: float
    received: float
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    version: int | None
    predictions: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Stream:
    """CLIENTS threads, each with a Session of its own, predicting `body` through `url` until
    stopped (or STREAM_MAX_REQUESTS, or STREAM_MAX_S); every request is recorded."""

    url: str
    body: dict[str, Any]
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    deadline: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.started = now()
        self.deadline = self.started + STREAM_MAX_S
        for client in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(client,), name=f"stream-{client}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _client(self, client: int) -> None:
        try:
            with requests.Session() as session:
                for n in range(STREAM_MAX_REQUESTS):
                    if self._stop.is_set() or now() > self.deadline or self.count() >= STREAM_MAX_REQUESTS:
                        return
                    self._one(session, f"stream-{client}-{n}")
                    self._stop.wait(CLIENT_PAUSE_S)
        except Exception as exc:  # noqa: BLE001 - reported by the test, never lost in a thread
            self.errors.append(repr(exc))

    def _one(self, session: requests.Session, request_id: str) -> None:
        sent = now()
        try:
            r = session.post(self.url, json=self.body, headers={"X-Request-ID": request_id}, timeout=REQUEST_TIMEOUT_S)
            received = now()
            if r.status_code == 200:
                body = r.json()
                answer = Answer(request_id, sent, received, 200, body["version"], body["predictions"])
            else:
                answer = Answer(request_id, sent, received, r.status_code, None, error=r.text[:200])
        except requests.RequestException as exc:  # no HTTP answer, or a 200 that is not JSON
            answer = Answer(request_id, sent, now(), None, None, error=f"{type(exc).__name__}: {exc}"[:300])
        with self._lock:
            self.answers.append(answer)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def stop(self) -> list[Answer]:
        """Every answer so far, by send time (a client still waiting for one is left behind)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)
        if any(t.is_alive() for t in self._threads):
            self.errors.append("a stream client did not stop")
        with self._lock:
            return sorted(self.answers, key=lambda a: a.sent)


# -- the models -----------------------------------------------------------------------------------
def two_versions() -> tuple[Pipeline, Pipeline]:
    """Two pipelines on the same numeric features that disagree on ROW."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    models = []
    for column in ("x1", "x2"):
        model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
        models.append(model.fit(frame, (frame[column] > 0).astype(int)))
    return models[0], models[1]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


# -- the scenario ---------------------------------------------------------------------------------
def test_two_replicas_behind_haproxy(
    tmp_path: Path,
    registry_url: str,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    haproxy = haproxy_binary()
    if haproxy is None:
        unavailable("HAProxy is not installed (Debian: apt-get install haproxy)")
    started = now()
    v1, v2 = two_versions()
    frame = pd.DataFrame([ROW])
    expected = {1: v1.predict(frame).tolist(), 2: v2.predict(frame).tolist()}
    assert expected[1] != expected[2], "the two versions must disagree on ROW"

    runtime_dir = tmp_path / "xdg-runtime"  # gunicorn's control socket would go here: kept disabled
    runtime_dir.mkdir()

    def replica_env(name: str) -> dict[str, str]:
        env = environment(
            MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
            MAAS_DATABASE_URL=registry_url,
            **store.variables(name),
        )
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / f"metrics-{name}")
        return env

    for name in ("a", "b"):
        (tmp_path / f"cwd-{name}").mkdir()
    env_a, env_b = replica_env("a"), replica_env("b")
    servers: list[Server] = []
    balancer: Balancer | None = None
    watch: Watch | None = None
    stream: Stream | None = None
    figures: list[str] = []
    try:
        a = launch(env=env_a, cwd=tmp_path / "cwd-a", log=tmp_path / "a-1.log")
        servers.append(a)
        b = launch(env=env_b, cwd=tmp_path / "cwd-b", log=tmp_path / "b.log")
        servers.append(b)
        ready(a, b)
        balancer = start_balancer(haproxy, a, b, tmp_path)
        lb = Server(balancer.process, balancer.port, balancer.log)  # its requests only (never stopped as one)
        watch = checks = Watch(balancer)
        wait_for(
            f"HAProxy marking both replicas up\n{balancer.output()}",
            lambda: checks.up("a") and checks.up("b"),
            LB_DEADLINE_S,
        )
        figures.append(f"replicas and balancer ready after {now() - started:.1f} s")

        # 1. Uploaded through A, served at once through the balancer and by B (which never saw it).
        first = upload(a, MODEL, joblib_bytes(v1), {"description": "version 1"})
        assert first.status_code == 201, first.text
        uploaded = now()
        body = {"model": MODEL, "data": ROW}
        for where, server in (("balancer", lb), ("balancer", lb), ("B", b)):
            r = server.post("/api/predict", json=body)
            assert r.status_code == 200, f"through {where}: {r.status_code} {r.text}"
            assert (r.json()["version"], r.json()["predictions"]) == (1, expected[1]), r.text
        figures.append(f"upload through A: predicted through the balancer and by B within {ms(now() - uploaded)}")
        stored = store.objects()
        assert stored, "the upload left nothing in the store"
        # B fetched the artifact from the bucket into its own cache
        assert [f for f in (tmp_path / "cache-b").rglob("*") if f.is_file()], "nothing in B's cache"

        # 2. The stream predicts by the alias; the alias moves to version 2 through B.
        alias_path = f"/api/admin/models/{MODEL}/aliases/{ALIAS}"
        r = a.put(alias_path, json={"version": 1}, headers=ADMIN)
        assert r.status_code == 200, r.text
        stream = predictions = Stream(lb.url + "/api/predict", {"model": MODEL, "version": ALIAS, "data": ROW})
        predictions.start()
        second = upload(a, MODEL, joblib_bytes(v2), {"description": "version 2"})
        assert second.status_code == 201, second.text
        assert second.json()["version"] == 2
        r = b.post(f"/api/models/{MODEL}/versions/2/predict", json={"data": ROW})
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["predictions"]) == (2, expected[2]), r.text
        time.sleep(STEADY_S)
        move_sent = now()
        r = b.put(alias_path, json={"version": 2}, headers=ADMIN)
        t_move = now()  # the move's completion: its transaction committed before B answered
        assert r.status_code == 200, r.text
        time.sleep(AFTER_MOVE_S)

        # 3. A model B has served, deleted through A: B answers 404 for it within the TTL.
        tmp = upload(a, THROWAWAY, joblib_bytes(v1, compress=3), {"description": "throwaway"})
        assert tmp.status_code == 201, tmp.text
        tmp_body = {"model": THROWAWAY, "data": ROW}
        for _ in range(6):  # both of B's workers resolve it, and load it
            r = b.post("/api/predict", json=tmp_body)
            assert r.status_code == 200, r.text
        r = a.request("DELETE", f"/api/admin/models/{THROWAWAY}", params={"force": "true"}, headers=ADMIN)
        t_delete = now()
        assert r.status_code == 204, r.text
        after_delete: list[tuple[float, int]] = []
        while now() < t_delete + DELETE_WATCH_S:
            sent = now()
            after_delete.append((sent, b.post("/api/predict", json=tmp_body).status_code))
            time.sleep(0.02)

        # 4. A killed (gunicorn, its workers and their runners) while the stream runs.
        t_kill = now()
        os.killpg(a.process.pid, signal.SIGKILL)
        a.process.wait(10)
        time.sleep(AFTER_KILL_S)

        # 5. A restarted on its port, with the same environment.
        t_restart = now()
        a = launch(env=env_a, cwd=tmp_path / "cwd-a", log=tmp_path / "a-2.log", port=a.port)
        servers.append(a)
        ready(a)
        t_ready = now()
        t_up = wait_for(f"HAProxy marking A up again\n{balancer.output()}", lambda: checks.up("a"), LB_DEADLINE_S)
        wait_for(
            f"the restarted A answering {A_AGAIN} of the stream's requests\n{a.output()}",
            lambda: len(stream_ids(a.log)) >= A_AGAIN,
            LB_DEADLINE_S,
        )
        time.sleep(AFTER_RESTART_S)
        answers = predictions.stop()
        t_end = now()
        stats = balancer.servers()
        lb.session.close()
    finally:  # what was started, stopped even after a failure (the stream's clients then fail fast)
        if watch is not None:
            watch.stop()
        if balancer is not None:
            balancer.stop()
        for server in servers:
            server.stop()
        if stream is not None:
            stream.stop()

    assert not predictions.errors, predictions.errors
    assert not checks.errors, checks.errors
    a1_ids = stream_ids(tmp_path / "a-1.log")
    a2_ids = stream_ids(tmp_path / "a-2.log")
    b_ids = stream_ids(tmp_path / "b.log")

    def replica(answer: Answer) -> str:
        rid = answer.request_id
        return "A" if rid in a1_ids else "A'" if rid in a2_ids else "B" if rid in b_ids else "?"

    # Every answer is right for the version that gave it.
    for answer in answers:
        if answer.ok:
            assert answer.version in expected and answer.predictions == expected[answer.version], answer

    # 2. The alias move. The server resolves a selector when the request reaches a worker, which
    # is after the client sent it: a request *sent* more than the TTL after the move completed
    # (B's answer to the PUT received) and still answered by version 1 is a stale resolution, with
    # no allowance for the network or a queue. (Its receive time is also printed: a request sent
    # before that and queued behind others may legitimately come back later with version 1.)
    old = [x for x in answers if x.ok and x.version == 1]
    new = [x for x in answers if x.ok and x.version == 2]
    assert old and new
    assert not [x for x in new if x.sent < move_sent], "version 2 answered before the alias moved"
    last_old_sent = max(x.sent for x in old) - t_move
    last_old_received = max(x.received for x in old) - t_move
    first_new_received = min(x.received for x in new) - t_move
    stale = [x for x in old if x.sent > t_move + ALIAS_TTL_S]
    figures.append(
        f"alias move (PUT through B took {ms(t_move - move_sent)}): the last answer from version 1 was to a "
        f"request sent {ms(last_old_sent)} after the move, received {ms(last_old_received)} after it; "
        f"the first from version 2 received {ms(first_new_received)} after it"
    )
    last_old_by = Counter(replica(x) for x in old if x.sent > t_move)
    figures.append(f"  version 1 answers to requests sent after the move, by replica: {dict(last_old_by)}")

    # 3. The delete, seen by B.
    served_after = [sent - t_delete for sent, status in after_delete if status == 200]
    late = [(round(sent - t_delete, 3), status) for sent, status in after_delete if sent > t_delete + ALIAS_TTL_S]
    figures.append(
        f"delete through A: B's last 200 for it to a request sent {ms(max(served_after, default=None))} after "
        f"the delete, {len(after_delete)} requests in {DELETE_WATCH_S} s"
    )

    # 4. The kill. Until HAProxy's check takes A out, a request whose connection A refuses is
    # retried on B (retry-on conn-failure): only those A was answering when it died may fail.
    # "While a replica died": from the first request not answered before the kill to the restart.
    failed = [x for x in answers if not x.ok]
    before_kill = [x for x in answers if x.received < t_kill]
    during_kill = [x for x in answers if x.received >= t_kill and x.sent < t_restart]
    failed_during_kill = [x for x in during_kill if not x.ok]
    t_down = checks.first_change("a", False, t_kill)
    figures.append(
        f"kill -9 of A: HAProxy took it out {ms(None if t_down is None else t_down - t_kill)} after the kill; "
        f"requests failed while a replica died: {len(failed_during_kill)} of {len(during_kill)} "
        f"(the last failed one sent {ms(max((x.sent - t_kill for x in failed_during_kill), default=None))} "
        f"after the kill; {dict(Counter(x.status or str(x.error).split(':')[0] for x in failed_during_kill))})"
    )

    # 5. A back.
    after_restart = [x for x in answers if x.sent >= t_restart]
    by_a_again = [x for x in after_restart if replica(x) == "A'"]
    slowest_again = max((x.received - x.sent for x in by_a_again), default=None)  # its runners' cold start
    checks_failed_again = [status for t, name, _, status in checks.changes if name == "a" and t > t_up]
    figures.append(
        f"A restarted: ready {ms(t_ready - t_restart)} after its start, in the rotation {ms(t_up - t_ready)} "
        f"after that; it answered {len(by_a_again)} of the {len([x for x in after_restart if x.sent >= t_up])} "
        f"requests sent since, its first ones in up to {ms(slowest_again)}"
        f" (HAProxy's view of A since: {checks_failed_again or 'unchanged'}); "
        f"failed after the restart: {len([x for x in after_restart if not x.ok])} of {len(after_restart)}"
    )
    figures.append(
        f"stream: {len(answers)} requests in {t_end - predictions.started:.1f} s by {CLIENTS} clients, "
        f"{len(failed)} failed; by replica {dict(Counter(replica(x) for x in answers))}; "
        f"HAProxy: A {stats['a']['status']} (stot {stats['a']['stot']}, retries {stats['a']['wretr']}, "
        f"redispatches {stats['a']['wredis']}), B {stats['b']['status']} (stot {stats['b']['stot']})"
    )
    figures.append(f"store: s3 ({len(stored)} objects after the first upload); whole test {now() - started:.1f} s")
    # The whole timeline, for a failure's post-mortem: every request, HAProxy's view, the moments.
    marks = {"move": t_move, "delete": t_delete, "kill": t_kill, "restart": t_restart, "ready": t_ready, "up": t_up}
    timeline = {
        "marks": marks,
        "haproxy": checks.changes,
        "requests": [[x.request_id, x.sent, x.received, x.status, x.version, replica(x), x.error] for x in answers],
    }
    (tmp_path / "timeline.json").write_text(json.dumps(timeline))
    # Outside pytest's capture, on stderr: an xdist worker's stdout is its channel to the
    # controller, its stderr the controller's own (CI's log).
    with capsys.disabled():
        print("\n-- deployment (tests/system/test_deployment.py) --", *figures, sep="\n", file=sys.stderr, flush=True)

    assert all(x.ok for x in before_kill), Counter((x.status, x.error) for x in before_kill if not x.ok)
    assert {"A", "B"} <= {replica(x) for x in before_kill}, "the balancer did not use both replicas"
    assert not stale, f"{len(stale)} requests sent over {ALIAS_TTL_S} s after the alias move got version 1"
    assert not [x for x in late if x[1] != 404], f"B served a deleted model after {ALIAS_TTL_S} s: {late}"
    assert all(status in (200, 404) for _, status in after_delete), after_delete
    assert t_down is not None, "HAProxy never took the killed replica out"
    assert all(x.ok for x in answers if x.sent > t_kill + KILLED_GRACE_S), [
        x for x in failed if x.sent > t_kill + KILLED_GRACE_S
    ]
    assert all(x.ok for x in after_restart), [x for x in after_restart if not x.ok]
    assert by_a_again, "the restarted replica A answered none of the balancer's requests"
