"""`maas serve` killed with SIGKILL (the whole process group: gunicorn and its workers) in the
middle of uploads, on SQLite and PostgreSQL; restarted on the same database and model store.

A killed upload leaves no version; every version the registry lists has its artifact, whose
bytes hash to the recorded sha256, and predicts; `maas store gc --grace-period 0` then leaves no
orphan file and no upload temp file. Nothing here is timed: the waits are for what the server
demonstrably did (bytes of the upload it has written to disk), with a deadline only against a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import sqlalchemy as sa
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression

from model_store.s3 import S3Store
from model_store.store import ArtifactStore, ModelStore, object_name
from registry.models import ModelVersion
from tests.support import ADMIN, ADMIN_TOKEN, CREDIT_ROW, joblib_bytes
from tests.support import upload_live as upload
from tests.support.live import HTTP_TIMEOUT_S, MAAS, Server, environment

# What a killed server leaves behind is the database's transactions: both databases.
pytestmark = pytest.mark.postgresql

MB = 1 << 20
BIG_UPLOAD_BYTES = 48 * MB
# Only guards against a hang: nothing is timed.
PROGRESS_DEADLINE_S = 60.0
ROUNDS = 3
UPLOAD_CLIENTS = 4
REG_ROWS = [{"x1": 0.5, "x2": -1.0}, {"x1": -2.0, "x2": 3.25}]
# Fixed, so that a failure can be run again as it was; MAAS_TEST_SEED varies it.
SEED = int(os.environ.get("MAAS_TEST_SEED", "20240611"))


# -- the server and what it is doing ---------------------------------------------------------------
@dataclass
class Deployment:
    """Where one `maas serve` keeps its things, so that a restart finds them again."""

    env: dict[str, str]
    cwd: Path
    store: ModelStore  # what the server's store holds: a directory, or a bucket and the server's cache
    spool: Path  # the workers' TMPDIR: werkzeug's default spool for uploads, which maas must not use


def stored_bytes(store: ModelStore, sha256: str) -> bytes | None:
    """An artifact's bytes as the store holds them (the bucket's, not a cached copy); None when missing."""
    if isinstance(store, S3Store):
        try:
            body: bytes = store.client.get_object(Bucket=store.bucket, Key=store.prefix + object_name(sha256))[
                "Body"
            ].read()
        except store.client.exceptions.NoSuchKey:
            return None
        return body
    assert isinstance(store, ArtifactStore)
    path = store.path_for(sha256)
    return path.read_bytes() if path.is_file() else None


@pytest.fixture(params=["directory", "s3"])
def deployment(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Deployment:
    """The server's environment, on the model store of each kind: a directory, or a bucket on
    moto's server (on SQLite only: what a killed server leaves in PostgreSQL does not depend on
    where the bytes are)."""
    spool, cwd = tmp_path / "spool", tmp_path / "cwd"
    spool.mkdir()
    cwd.mkdir()
    env = environment(
        MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
        MAAS_DATABASE_URL=database_url,
        MAAS_STORE_DIR=str(tmp_path / "store"),
        TMPDIR=str(spool),
    )
    if request.param == "directory":
        return Deployment(env, cwd, ArtifactStore(tmp_path / "store"), spool)
    if not database_url.startswith("sqlite"):
        pytest.skip("the S3 store's crash runs are on SQLite")
    s3 = request.getfixturevalue("s3")
    env.update(
        MAAS_STORE_URL=f"s3://{s3.new_bucket()}/models",
        MAAS_STORE_CACHE_DIR=str(tmp_path / "cache"),
        **s3.environment(),
    )
    store = S3Store(env["MAAS_STORE_URL"], cache_dir=tmp_path / "cache", cache_bytes=1 << 30, endpoint_url=s3.url)
    return Deployment(env, cwd, store, spool)


def kill(server: Server) -> None:
    """SIGKILL to gunicorn and every worker at once: no handler runs, nothing is cleaned up."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.session.close()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(entry))
    return members


def upload_bytes_on_disk(deployment: Deployment) -> int:
    """The most bytes of one upload the server has written so far: its spool in the store."""
    return max((f.size_bytes for f in deployment.store.partial_uploads()), default=0)


def open_in_tmpdir(server: Server, deployment: Deployment) -> list[str]:
    """Files the server's processes hold open in their TMPDIR (an unlinked spool included)."""
    held = []
    for pid in _group_members(server.process.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            # gunicorn's own worker heartbeat files (wgunicorn-*) live there too, and so do the
            # workers' metric values (the maas-metrics-* directory `maas serve` makes for /metrics).
            ours = "/wgunicorn-" in target or "/maas-metrics-" in target
            if target.startswith(str(deployment.spool)) and not ours:
                held.append(target)
    return held


def wait_for(what: str, condition: Callable[[], bool], server: Server) -> None:
    deadline = time.monotonic() + PROGRESS_DEADLINE_S
    while not condition():
        assert server.process.poll() is None, f"maas serve exited:\n{server.output()}"
        assert time.monotonic() < deadline, f"never saw {what}:\n{server.output()}"
        time.sleep(0.02)


class SlowUpload:
    """A multipart upload over a raw socket, sent a piece at a time: the body is never finished."""

    def __init__(self, server: Server, name: str, size: int) -> None:
        boundary = "maas-crash-test-boundary"
        self.head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.joblib"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = tail = f"\r\n--{boundary}--\r\n".encode()
        request = (
            f"POST /api/admin/models/{name}/versions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(self.head) + size + len(tail)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT_S)
        self.sock.sendall(request + self.head)
        self.sent = 0
        self.size = size

    def send(self, nbytes: int) -> None:
        """Send `nbytes` more of the file (never all of it)."""
        assert self.sent + nbytes < self.size
        chunk = b"\0" * MB
        for _ in range(nbytes // MB):
            self.sock.sendall(chunk)
        self.sent += nbytes

    def send_bytes(self, data: bytes) -> None:
        """Send `data` as the next bytes of the file (never all of it)."""
        assert self.sent + len(data) < self.size
        self.sock.sendall(data)
        self.sent += len(data)

    def finish(self, data: bytes) -> tuple[int, dict[str, Any]]:
        """Send `data` as the rest of the file (all of it, then), end the body, and read the
        answer: its status and JSON body."""
        assert self.sent + len(data) == self.size
        self.sock.sendall(data + self.tail)
        self.sent += len(data)
        answer = b""
        while chunk := self.sock.recv(65536):  # Connection: close: the server ends it
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    def answered(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0]) and self.sock.recv(1, socket.MSG_PEEK) != b""

    def close(self) -> None:
        self.sock.close()


# -- the registry after a restart -------------------------------------------------------------------
def all_versions(server: Server) -> dict[tuple[str, int], str]:
    """(model, version) -> sha256 of every version the registry lists."""
    models = server.get("/api/models?page_size=1000")
    assert models.status_code == 200, models.text
    found = {}
    for model in models.json():
        versions = server.get(f"/api/models/{model['name']}/versions?page_size=1000")
        assert versions.status_code == 200, versions.text
        found.update({(model["name"], v["version"]): v["sha256"] for v in versions.json()})
    return found


def check_every_version(
    server: Server,
    store: ModelStore,
    rows: dict[str, tuple[Any, list[dict[str, Any]]]],
    predicted: set[tuple[str, int]] | None = None,
) -> dict[tuple[str, int], str]:
    """Every listed version has its file, hashing to its sha256, and predicts as the model does
    (`rows`: sha256 -> estimator and rows to predict). Versions in `predicted` are not asked to
    predict again; the others are added to it. Returns the versions."""
    versions = all_versions(server)
    for (name, number), sha256 in versions.items():
        stored = stored_bytes(store, sha256)
        assert stored is not None, f"{name} version {number}: no artifact {sha256} in the store"
        assert hashlib.sha256(stored).hexdigest() == sha256, f"{name} version {number}: damaged"
        if predicted is not None and (name, number) in predicted:
            continue
        estimator, data = rows[sha256]
        answer = server.post(f"/api/models/{name}/versions/{number}/predict", json={"data": data})
        assert answer.status_code == 200, answer.text
        # labels exact; a regressor's numbers within the ONNX engine's 1e-5 (relative) when it answers
        expected = estimator.predict(pd.DataFrame(data)).tolist()
        assert answer.json()["predictions"] == pytest.approx(expected, rel=1e-5), answer.json()["engine"]
        if predicted is not None:
            predicted.add((name, number))
    return versions


def collect(deployment: Deployment) -> str:
    result = subprocess.run(
        [*MAAS, "store", "gc", "--grace-period", "0"],
        env=deployment.env,
        cwd=deployment.cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_no_orphans(deployment: Deployment, versions: dict[tuple[str, int], str]) -> None:
    """Nothing in the store but the versions' artifacts and the ONNX graphs compiled from them."""
    assert list(deployment.store.partial_uploads()) == []
    engine = sa.create_engine(deployment.env["MAAS_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            graphs = set(conn.execute(sa.select(ModelVersion.onnx_sha256).where(ModelVersion.onnx_sha256.is_not(None))))
    finally:
        engine.dispose()
    assert len(graphs) <= len(versions)
    assert {f.sha256 for f in deployment.store.artifacts()} == set(versions.values()) | {g for (g,) in graphs}


def removed_count(gc_output: str) -> int:
    return int(gc_output.splitlines()[-1].split()[1])


# -- uploads in flight, killed at random moments, round after round -----------------------------------------
def unique_regressor(serial: int) -> tuple[LinearRegression, bytes]:
    """A small fitted model whose bytes no other upload has: a killed upload may leave an orphan."""
    rng = np.random.default_rng(serial)
    frame = pd.DataFrame({"x1": rng.normal(size=40), "x2": rng.normal(size=40)})
    model = LinearRegression().fit(frame, (serial % 5 + 1) * frame["x1"] - frame["x2"])
    return model, joblib_bytes(model)


def test_sigkill_mid_upload_never_leaves_a_version_without_its_file(
    serve: Callable[..., Server], deployment: Deployment, database_url: str, credit_pipeline: Any, regressor: Any
) -> None:
    """Each round: clients upload small models one after another (some of them the same bytes)
    while a large upload (48 MB announced, 8 MB sent, never finished) is demonstrably being
    written by the server; SIGKILL at a random moment after that; restart on the same database
    and store. Then: the large upload's model does not exist, the models registered before are
    unchanged and predict, every acknowledged upload is there, and every listed version has its
    file hashing to its sha256 and predicts. At the end gc leaves no orphan and no temp file."""
    rng = random.Random(SEED)
    server = serve("--workers", "3", env=deployment.env, cwd=deployment.cwd)
    credit, reg = joblib_bytes(credit_pipeline), joblib_bytes(regressor)
    rows: dict[str, tuple[Any, list[dict[str, Any]]]] = {
        hashlib.sha256(credit).hexdigest(): (credit_pipeline, [CREDIT_ROW]),
        hashlib.sha256(reg).hexdigest(): (regressor, REG_ROWS),
    }
    for name, payload in (("credit", credit), ("reg", reg)):
        assert upload(server, name, payload).status_code == 201
    assert (
        server.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN).status_code == 200
    )
    before = {name: server.get(f"/api/models/{name}").json() for name in ("credit", "reg")}
    shared = [unique_regressor(10_000_000 + i) for i in range(2)]  # uploaded again and again: put() finds them stored
    for model, payload in shared:
        rows[hashlib.sha256(payload).hexdigest()] = (model, REG_ROWS)

    acknowledged: dict[tuple[str, int], str] = {}
    predicted: set[tuple[str, int]] = set()  # versions already seen predicting after a restart
    in_flight_per_round: list[int] = []
    on_disk_per_round: list[float] = []
    parts_left_per_round: list[int] = []
    serials = iter(range(1, 1_000_000))
    lock = threading.Lock()
    for _ in range(ROUNDS):
        acked_before = len(acknowledged)
        killed = threading.Event()
        ends: list[bool] = []  # per client: was its last upload sent before the kill?

        def client(
            index: int, server: Server = server, killed: threading.Event = killed, ends: list[bool] = ends
        ) -> None:
            # The same server through a requests.Session of this thread's own.
            own = Server(server.process, server.port, server.log)
            with own.session:
                for i in range(1_000_000):
                    name = f"m{(index + i) % 3}"
                    if i % 3 == 2:
                        model, payload = shared[index % 2]
                    else:
                        with lock:
                            model, payload = unique_regressor(next(serials))
                            rows[hashlib.sha256(payload).hexdigest()] = (model, REG_ROWS)
                    sent_before_kill = not killed.is_set()
                    try:
                        answer = upload(own, name, payload)
                    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                        with lock:
                            ends.append(sent_before_kill)
                        return
                    assert answer.status_code == 201, answer.text
                    with lock:
                        acknowledged[(name, answer.json()["version"])] = answer.json()["sha256"]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(UPLOAD_CLIENTS)]
        for thread in threads:
            thread.start()
        big = SlowUpload(server, "big", BIG_UPLOAD_BYTES)
        try:
            big.send(8 * MB)

            def busy(server: Server = server, acked_before: int = acked_before) -> bool:
                return len(acknowledged) >= acked_before + UPLOAD_CLIENTS and upload_bytes_on_disk(deployment) >= 4 * MB

            wait_for("uploads acknowledged and the large one being written", busy, server)
            time.sleep(rng.uniform(0, 0.3))  # a random moment: not an assertion on time
            killed.set()
            on_disk_per_round.append(upload_bytes_on_disk(deployment) / MB)
            # The upload is spooled into the store, never into TMPDIR.
            spooled = [p for p in deployment.spool.iterdir() if not p.name.startswith("maas-metrics-")]
            assert open_in_tmpdir(server, deployment) == [] and spooled == []
            assert not big.answered(), "the server answered an unfinished upload"
            kill(server)
        finally:
            big.close()
        for thread in threads:
            thread.join()
        assert len(ends) == UPLOAD_CLIENTS, "a client stopped for another reason than the kill"
        in_flight_per_round.append(sum(ends) + 1)  # and the large upload
        parts_left_per_round.append(len(list(deployment.store.partial_uploads())))

        server = serve("--workers", "3", env=deployment.env, cwd=deployment.cwd)
        missing = server.get("/api/models/big")
        assert missing.status_code == 404, missing.text
        assert missing.json()["code"] == 404 and missing.json()["message"], missing.text
        assert {name: server.get(f"/api/models/{name}").json() for name in ("credit", "reg")} == before
        production = server.post("/api/predict", json={"model": "credit", "version": "production", "data": CREDIT_ROW})
        assert production.status_code == 200, production.text
        assert production.json()["predictions"] == credit_pipeline.predict(pd.DataFrame([CREDIT_ROW])).tolist()
        versions = check_every_version(server, deployment.store, rows, predicted)
        lost = {key for key, sha256 in acknowledged.items() if versions.get(key) != sha256}
        assert not lost, f"acknowledged uploads lost in the crash: {sorted(lost)}"

    files_before_gc = len(list(deployment.store.artifacts()))
    gc_output = collect(deployment)
    assert_no_orphans(deployment, versions)
    assert check_every_version(server, deployment.store, rows) == versions
    print(
        f"\n[{database_url.split(':')[0]}, {deployment.store.location}] crash rounds {ROUNDS} (seed {SEED}); "
        f"large upload on the server's disk "
        f"when killed {[f'{mb:.1f}' for mb in on_disk_per_round]} MB of {BIG_UPLOAD_BYTES // MB}; uploads in flight "
        f"when killed {in_flight_per_round}; upload temp files left in the store {parts_left_per_round}; uploads "
        f"acknowledged {len(acknowledged)}; versions found {len(versions)} ({len(versions) - len(acknowledged) - 2} "
        f"committed but unanswered), versions lost 0, versions without their file 0; artifacts before gc "
        f"{files_before_gc}, gc removed {removed_count(gc_output)} (big: 404 after every restart)"
    )


# -- an upload that outlives its spool's name --------------------------------------------------------
def test_upload_whose_spool_gc_removed_midway_is_stored(
    serve: Callable[..., Server], deployment: Deployment, database_url: str
) -> None:
    """`maas store gc --grace-period 0` (or an upload stalled past the grace period) removes the
    name of an upload's spool while the server is still writing the upload into it. The server
    keeps the open file: the upload completes, its bytes are copied into place (no name left to
    link), and the version predicts."""
    server = serve(env=deployment.env, cwd=deployment.cwd)
    # Megabytes, so that half of it is far more than werkzeug reads before it spools a part.
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"x1": rng.normal(size=2000), "x2": rng.normal(size=2000)})
    forest = RandomForestRegressor(n_estimators=16, random_state=0).fit(frame, frame["x1"] - 2 * frame["x2"])
    payload = joblib_bytes(forest)
    assert len(payload) > 2 * MB
    slow = SlowUpload(server, "slow", len(payload))
    try:
        slow.send_bytes(payload[: len(payload) // 2])
        wait_for("the upload's spool in the store", lambda: any(deployment.store.partial_uploads()), server)
        gc_output = collect(deployment)
        assert "removed tmp/upload-" in gc_output and not any(deployment.store.partial_uploads()), gc_output
        status, body = slow.finish(payload[len(payload) // 2 :])
    finally:
        slow.close()
    assert status == 201, body
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    check_every_version(server, deployment.store, {body["sha256"]: (forest, REG_ROWS)})
    assert_no_orphans(deployment, {("slow", 1): body["sha256"]})
    print(
        f"\n[{database_url.split(':')[0]}, {deployment.store.location}] spool of a {len(payload) / MB:.1f} MB "
        "upload removed by gc "
        f"mid-upload ({removed_count(gc_output)} file); upload answered {status}; the version predicts"
    )
