"""`maas store gc` through the real command, on SQLite and PostgreSQL: what it removes, what it
keeps, and the races with uploads of the same bytes and failed uploads' own cleanup.

Files are made old with os.utime, never by waiting.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pandas as pd
import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from model_store.store import CLAIM_FILE, ArtifactStore
from registry.models import ModelVersion
from serving.cli import Duration
from serving.config import Settings
from tests.support import ADMIN, CREDIT_ROW, joblib_bytes, upload
from tests.support.live import MAAS, environment

# The collector and uploads meet in the database's locks: both databases.
pytestmark = pytest.mark.postgresql

GC_TIMEOUT_S = 120.0
# Only a guard against a hang: nothing is timed.
LOCK_WAIT_DEADLINE_S = 60.0
TWO_HOURS_AGO = -2 * 3600.0
STRING_ROW = {"height": 180.0, "weight": 95.0}
_LINE = re.compile(r"^(removed|would remove|kept) (\S+/\S+) \(", re.MULTILINE)


# -- running the command ---------------------------------------------------------------------
def run_gc(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAAS, "store", "gc", "--database-url", settings.database_url, "--store-dir", settings.store_dir, *args],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=GC_TIMEOUT_S,
        check=False,
    )


def gc_ok(settings: Settings, *args: str) -> tuple[set[str], str]:
    """Run gc; expect exit 0; return the store paths it removed (or would remove) and its output."""
    result = run_gc(settings, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    verb = "would remove" if "--dry-run" in args else "removed"
    return {path for v, path in _LINE.findall(result.stdout) if v == verb}, result.stdout


def summary(output: str) -> tuple[int, int]:
    """(files, bytes) from the last line of gc's output."""
    match = re.search(r"(?:removed|would remove) (\d+) files?, (\d+) bytes", output.splitlines()[-1])
    assert match, output
    return int(match[1]), int(match[2])


# -- the store as files ------------------------------------------------------------------------
def files(root: Path) -> dict[str, tuple[int, float]]:
    """Every file under the store but its claim (registry-id, which gc never touches: checked
    apart): relative path -> (size, mtime)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file() and p != root / CLAIM_FILE
    }


def age(path: Path, seconds: float = TWO_HOURS_AGO) -> None:
    when = time.time() + seconds
    os.utime(path, (when, when))


def rel(store: ArtifactStore, sha256: str) -> str:
    return str(store.path_for(sha256).relative_to(store.root))


@pytest.fixture
def store(settings: Settings) -> ArtifactStore:
    return ArtifactStore(settings.store_dir)


def uploaded(client: Any, name: str, model: Any, **kwargs: Any) -> dict[str, Any]:
    response = upload(client, name, model, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def graphs(settings: Settings, store: ArtifactStore, *where: Any) -> set[str]:
    """The store paths of the ONNX graphs versions reference (those matching `where`): derived
    artifacts, stored and collected like the versions' own."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(ModelVersion.onnx_sha256).where(ModelVersion.onnx_sha256.is_not(None), *where))
            return {rel(store, sha256) for (sha256,) in found if sha256 is not None}
    finally:
        engine.dispose()


def predicts(client: Any, name: str, version: int, row: dict[str, Any], model: Any) -> None:
    response = client.post(f"/api/models/{name}/versions/{version}/predict", json={"data": row})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predictions"] == model.predict(pd.DataFrame([row])).tolist()


# -- what gc removes and keeps -------------------------------------------------------------------
def test_gc_removes_old_orphans_and_stale_uploads_only(
    client: Any, settings: Settings, store: ArtifactStore, credit_pipeline: Any, regressor: Any, string_classifier: Any
) -> None:
    credit = uploaded(client, "credit", credit_pipeline)
    reg = uploaded(client, "reg", regressor)
    for version in (credit, reg):  # referenced: kept however old
        age(store.path_for(version["sha256"]))
    compiled = graphs(settings, store)
    assert len(compiled) == 2, "both versions compiled to ONNX: their graphs are referenced too"
    old_orphan = store.put(io.BytesIO(joblib_bytes(string_classifier)))
    fresh_orphan = store.put(io.BytesIO(joblib_bytes(regressor, compress=3)))
    age(old_orphan.path)
    crashed = store.tmp / "upload-crashed.part"
    crashed.write_bytes(b"the first megabytes of an upload" * 1000)
    age(crashed)
    in_progress = store.tmp / "upload-writing.part"
    in_progress.write_bytes(b"an upload still arriving")
    not_ours = [store.tmp / "notes.txt", store.objects / "ab" / "README"]
    for path in not_ours:
        path.parent.mkdir(exist_ok=True)
        path.write_text("not written by the store")
        age(path)
    before = files(store.root)

    listed, output = gc_ok(settings, "--dry-run")
    expected = {rel(store, old_orphan.sha256), "tmp/upload-crashed.part"}
    assert listed == expected, output
    assert summary(output) == (2, sum(before[p][0] for p in expected)), output
    assert files(store.root) == before, "--dry-run removed something"

    removed, output = gc_ok(settings)
    assert removed == listed, output
    assert summary(output) == (2, sum(before[p][0] for p in expected)), output
    assert files(store.root) == {p: v for p, v in before.items() if p not in expected}
    assert "kept 4 referenced artifacts, 2 files younger than 1h" in output

    # With no grace period, the fresh orphan and the upload in progress go too; nothing else.
    removed, output = gc_ok(settings, "--grace-period", "0")
    assert removed == {rel(store, fresh_orphan.sha256), "tmp/upload-writing.part"}, output
    left = set(files(store.root))
    versions = {rel(store, credit["sha256"]), rel(store, reg["sha256"])}
    assert left == versions | compiled | {"tmp/notes.txt", "objects/ab/README"}
    assert store.owner() is not None and (store.root / CLAIM_FILE).is_file(), "gc removed the store's claim"
    predicts(client, "credit", 1, CREDIT_ROW, credit_pipeline)
    predicts(client, "reg", 1, {"x1": 0.5, "x2": -1.0}, regressor)


def test_deleted_version_makes_its_artifact_collectable_unless_shared(
    client: Any, settings: Settings, store: ArtifactStore, credit_pipeline: Any, string_classifier: Any
) -> None:
    first = uploaded(client, "credit", credit_pipeline)
    second = uploaded(client, "credit", credit_pipeline)  # the same bytes: one file for both
    strings = uploaded(client, "strings", string_classifier)
    assert first["sha256"] == second["sha256"] != strings["sha256"]
    for sha256 in (first["sha256"], strings["sha256"]):
        age(store.path_for(sha256))
    credit_graph = graphs(settings, store, ModelVersion.sha256 == first["sha256"])
    strings_graph = graphs(settings, store, ModelVersion.sha256 == strings["sha256"])
    assert len(credit_graph) == 1, "the same bytes compile to the same graph: one file for both"
    for path in credit_graph:
        age(store.root / path)

    assert client.delete("/api/admin/models/strings/versions/1", headers=ADMIN).status_code == 204
    assert client.delete("/api/admin/models/credit/versions/2", headers=ADMIN).status_code == 204
    removed, output = gc_ok(settings, "--grace-period", "0")
    # credit's files stay: version 1 still references those bytes and that graph.
    assert removed == {rel(store, strings["sha256"])} | strings_graph, output
    assert not store.exists(strings["sha256"]) and store.exists(first["sha256"])
    predicts(client, "credit", 1, CREDIT_ROW, credit_pipeline)

    assert client.delete("/api/admin/models/credit/versions/1", headers=ADMIN).status_code == 204
    # Just deleted, but stored two hours ago: the grace period counts from when the bytes were stored.
    assert gc_ok(settings, "--grace-period", "1d")[0] == set()
    assert gc_ok(settings, "--grace-period", "90m")[0] == {rel(store, first["sha256"])} | credit_graph
    assert [p for p in store.objects.rglob("*") if p.is_file()] == []


# -- the races ----------------------------------------------------------------------------------
@pytest.fixture
def on_version_flush() -> Iterator[list[Any]]:
    """Hooks run (once each) inside an upload's transaction, when its version row is flushed:
    `("before", fn)` before the INSERT is sent, `("after", fn)` once it is."""
    hooks: list[Any] = []

    def run(when: str, session: Session) -> None:
        if any(isinstance(obj, ModelVersion) for obj in session.new):
            for hook in [h for h in hooks if h[0] == when]:
                hooks.remove(hook)
                hook[1](session)

    def before(session: Session, _context: Any, _instances: Any) -> None:
        run("before", session)

    def after(session: Session, _context: Any) -> None:
        run("after", session)

    event.listen(Session, "before_flush", before)
    event.listen(Session, "after_flush", after)
    yield hooks
    event.remove(Session, "before_flush", before)
    event.remove(Session, "after_flush", after)
    assert not hooks, "a hook never ran"


def test_upload_of_bytes_stored_as_an_orphan_keeps_its_file(
    client: Any, settings: Settings, store: ArtifactStore, string_classifier: Any, on_version_flush: list[Any]
) -> None:
    """gc runs between the upload's put() (which finds the old orphan already there) and its
    commit: put() touched the file, so the grace period protects it."""
    orphan = uploaded(client, "strings", string_classifier)
    assert client.delete("/api/admin/models/strings/versions/1", headers=ADMIN).status_code == 204
    age(store.path_for(orphan["sha256"]))  # an old orphan: what gc removes (see the first test)
    outputs: list[str] = []
    on_version_flush.append(("before", lambda _session: outputs.append(gc_ok(settings)[1])))

    again = uploaded(client, "strings", string_classifier)

    assert again["sha256"] == orphan["sha256"] and again["version"] == 2
    assert len(outputs) == 1 and summary(outputs[0]) == (0, 0), outputs
    assert hashlib.sha256(store.path_for(again["sha256"]).read_bytes()).hexdigest() == again["sha256"]
    predicts(client, "strings", 2, STRING_ROW, string_classifier)


def _waiting_for_lock(database_url: str) -> bool:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%%'"
                ).scalar()
            )
    finally:
        engine.dispose()


def test_gc_waits_for_an_uncommitted_version_of_its_candidate(
    client: Any, settings: Settings, store: ArtifactStore, string_classifier: Any, on_version_flush: list[Any]
) -> None:
    """gc (no grace period) finds the bytes of an upload whose row is written but not committed
    unreferenced; it must wait for that commit, see the version and keep the file."""
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        pytest.skip("SQLite serializes the two write transactions itself: the wait cannot be observed")
    gc_runs: list[subprocess.Popen[str]] = []

    def start_gc_and_wait_until_it_waits(_session: Session) -> None:
        gc = subprocess.Popen(
            [
                *MAAS,
                "store",
                "gc",
                "--grace-period",
                "0",
                "--database-url",
                settings.database_url,
                "--store-dir",
                settings.store_dir,
            ],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        gc_runs.append(gc)
        deadline = time.monotonic() + LOCK_WAIT_DEADLINE_S
        while not _waiting_for_lock(settings.database_url):
            assert gc.poll() is None, f"gc did not wait for the upload's transaction:\n{gc.communicate()[0]}"
            assert time.monotonic() < deadline, "gc never reached the lock"
            time.sleep(0.05)

    on_version_flush.append(("after", start_gc_and_wait_until_it_waits))
    version = uploaded(client, "strings", string_classifier)

    [gc] = gc_runs
    output = gc.communicate(timeout=GC_TIMEOUT_S)[0]
    assert gc.returncode == 0, output
    assert f"kept {rel(store, version['sha256'])} (referenced or modified since it was listed)" in output
    # With no grace period, gc may take the name of the upload's own spool once the upload has
    # committed and before its request has ended (a hard link of the artifact: the artifact stays).
    removed = [line for line in output.splitlines() if line.startswith("removed ") and "bytes;" not in line]
    assert all(line.startswith("removed tmp/upload-") for line in removed), output
    assert store.exists(version["sha256"])
    predicts(client, "strings", 1, STRING_ROW, string_classifier)


def test_gc_that_takes_the_file_first_makes_the_upload_fail_cleanly(
    client: Any, settings: Settings, store: ArtifactStore, string_classifier: Any, on_version_flush: list[Any]
) -> None:
    """gc (no grace period) runs after the upload stored its file but before its version row
    is sent: it finds the file unreferenced and removes it. The upload, which checks its file
    once its row is written, must then refuse, recording nothing, rather than commit a version
    without its file: a 409 asking for the upload again (the artifact is fine, not a 422)."""
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        pytest.skip("on SQLite the upload already holds the write lock there: gc would wait for it")
    outputs: list[str] = []
    on_version_flush.append(("before", lambda _session: outputs.append(gc_ok(settings, "--grace-period", "0")[1])))

    refused = upload(client, "strings", string_classifier)

    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["code"] == 409, refused.get_json()
    assert "upload it again" in refused.get_json()["message"], refused.get_json()
    # The artifact it took, and (no grace period at all) the upload's own spool in tmp/, whose
    # bytes the upload still holds open.
    assert len(outputs) == 1 and outputs[0].count("removed objects/") == 2, outputs  # the pickle, its graph
    assert summary(outputs[0])[0] == 3 and outputs[0].count("removed tmp/upload-") == 1, outputs
    assert client.get("/api/models/strings").status_code == 404
    assert files(store.root) == {}
    again = uploaded(client, "strings", string_classifier)
    predicts(client, "strings", again["version"], STRING_ROW, string_classifier)


def test_failed_upload_leaves_the_file_a_concurrent_upload_of_the_same_bytes_found(
    app: Any, settings: Settings, store: ArtifactStore, credit_pipeline: Any
) -> None:
    """Upload A stores new bytes, then fails (its example does not fit). Meanwhile upload B of
    the same bytes found A's file (put() touched it) and is about to record its version. A's
    cleanup runs between the two: it must keep the file B touched, and B must succeed.

    Each upload is paused where its first session transaction is created, before any
    statement (SQLite's BEGIN IMMEDIATE included): A's is its cleanup, B's the write of its
    version."""
    b_waits, b_may_go = threading.Event(), threading.Event()
    began: set[str] = set()
    answers: dict[str, Any] = {}
    b = threading.Thread(
        target=lambda: answers.update(B=upload(app.test_client(), "same-bytes", credit_pipeline)), name="B"
    )
    a = threading.Thread(
        target=lambda: answers.update(
            A=upload(app.test_client(), "refused", credit_pipeline, metadata={"example": {"x1": 1.0}})
        ),
        name="A",
    )

    def first_transaction(_session: Session, transaction: Any) -> None:
        me = threading.current_thread().name
        if transaction.parent is not None or me in began or me not in ("A", "B"):
            return
        began.add(me)
        if me == "A":  # A failed and is about to remove its file: B stores the same bytes first
            b.start()
            assert b_waits.wait(LOCK_WAIT_DEADLINE_S), "upload B never got to its version"
        else:  # B stored (found) its bytes; it records its version once A has cleaned up
            b_waits.set()
            assert b_may_go.wait(LOCK_WAIT_DEADLINE_S), "upload A never finished"

    event.listen(Session, "after_transaction_create", first_transaction)
    try:
        a.start()
        a.join(LOCK_WAIT_DEADLINE_S)
        assert not a.is_alive(), "upload A hangs"
    finally:
        b_may_go.set()
        if b.is_alive():
            b.join(LOCK_WAIT_DEADLINE_S)
        event.remove(Session, "after_transaction_create", first_transaction)
    assert began == {"A", "B"}
    assert answers["A"].status_code == 422 and "example" in answers["A"].get_json()["message"], answers["A"].get_json()
    assert answers["B"].status_code == 201, answers["B"].get_json()
    sha256 = answers["B"].get_json()["sha256"]
    assert hashlib.sha256(store.path_for(sha256).read_bytes()).hexdigest() == sha256
    client = app.test_client()
    assert client.get("/api/models/refused").status_code == 404
    predicts(client, "same-bytes", 1, CREDIT_ROW, credit_pipeline)


def test_versions_are_committed_after_their_file_is_in_place(
    client: Any, settings: Settings, store: ArtifactStore, credit_pipeline: Any, regressor: Any
) -> None:
    """A real listener on every commit: each version row committed already has its artifact,
    complete, under its sha256. (The request's spool in tmp/ goes when the request ends.)"""
    pending: dict[int, str] = {}
    checked: list[tuple[str, bool]] = []

    def after_flush(session: Session, _context: Any) -> None:
        for obj in session.new:
            if isinstance(obj, ModelVersion):
                pending[id(session)] = obj.sha256

    def before_commit(session: Session) -> None:
        sha256 = pending.pop(id(session), None)
        if sha256 is not None:
            path = store.path_for(sha256)
            checked.append((sha256, path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256))

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "before_commit", before_commit)
    try:
        first = uploaded(client, "credit", credit_pipeline)
        same = uploaded(client, "credit", credit_pipeline)  # identical bytes: put() finds the file
        other = uploaded(client, "reg", regressor, metadata={"aliases": ["production"]})
        refused = upload(client, "reg", credit_pipeline, metadata={"example": {"x1": 1.0}})
    finally:
        event.remove(Session, "after_flush", after_flush)
        event.remove(Session, "before_commit", before_commit)
    assert refused.status_code == 422, refused.get_json()
    assert checked == [(first["sha256"], True), (same["sha256"], True), (other["sha256"], True)]
    print(
        f"\n[{make_url(settings.database_url).get_backend_name()}] versions committed: {len(checked)}, "
        f"each with its file in place: {sum(ok for _, ok in checked)}"
    )


def _take_database_down(settings: Settings, app: Any) -> Any:
    """Make the registry unreachable for the app; returns how to bring it back."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        app.extensions["maas"].db.dispose()
        path = Path(url.database or "")
        away = path.with_name(path.name + ".away")
        path.rename(away)
        path.mkdir()  # a directory where the file was: every connection attempt fails

        def back() -> None:
            path.rmdir()
            away.rename(path)

        return back
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{url.database}'")

    def back_pg() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        admin.dispose()

    return back_pg


def test_file_of_an_upload_that_failed_with_the_database_down_is_collected(
    app: Any, client: Any, settings: Settings, store: ArtifactStore, credit_pipeline: Any, regressor: Any
) -> None:
    """The upload stores its file, then cannot record the version nor check that the file is
    unreferenced: it leaves the file, and gc removes it once the database is back."""
    kept = uploaded(client, "credit", credit_pipeline)
    back = _take_database_down(settings, app)
    try:
        failed = upload(client, "reg", regressor)
    finally:
        back()
    assert failed.status_code == 503, failed.get_json()
    body = failed.get_json()
    assert body["code"] == 503 and body["message"], body
    assert failed.headers["Retry-After"].isdigit() and int(failed.headers["Retry-After"]) > 0, failed.headers
    orphan = hashlib.sha256(joblib_bytes(regressor)).hexdigest()
    assert store.exists(orphan), "the failed upload's file is gone: nothing for gc to prove"
    assert client.get("/api/models/reg").status_code == 404
    kept_files = {rel(store, kept["sha256"])} | graphs(settings, store)
    orphans = set(files(store.root)) - kept_files  # the pickle, and the graph compiled from it
    assert rel(store, orphan) in orphans and len(orphans) == 2, orphans
    assert gc_ok(settings, "--grace-period", "0")[0] == orphans
    assert set(files(store.root)) == kept_files
    predicts(client, "credit", 1, CREDIT_ROW, credit_pipeline)


@contextlib.contextmanager
def entries_kept(directory: Path) -> Iterator[None]:
    """No entry of `directory` can be removed during the block: append-only (chattr +a) for
    root, whom permissions do not stop; read-only for anyone else."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: no way to make a file unremovable")
        made = subprocess.run(["chattr", "+a", str(directory)], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"running as root and chattr +a fails here: {made.stderr.strip()}")
    else:
        directory.chmod(0o555)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-a", str(directory)], check=True)
        else:
            directory.chmod(0o755)


def test_gc_goes_on_past_a_file_it_cannot_remove(client: Any, settings: Settings, store: ArtifactStore) -> None:
    """One orphan cannot be removed (its shard directory refuses): gc reports it, removes the
    other orphans and the stale upload temp file all the same, and exits 1."""
    blobs: dict[str, bytes] = {}
    for i in range(1000):  # three orphans in three shards
        blob = f"orphan bytes {i}".encode()
        blobs.setdefault(hashlib.sha256(blob).hexdigest()[:2], blob)
        if len(blobs) == 3:
            break
    orphans = sorted((store.put(io.BytesIO(b)) for b in blobs.values()), key=lambda a: a.sha256)
    stuck = orphans[0]  # listed, and so removed, first
    crashed = store.tmp / "upload-crashed.part"
    crashed.write_bytes(b"the first bytes of an upload")
    for path in [o.path for o in orphans] + [crashed]:
        age(path)
    before = files(store.root)

    with entries_kept(stuck.path.parent):
        result = run_gc(settings)

    assert result.returncode == 1, result.stdout + result.stderr
    expected = {rel(store, o.sha256) for o in orphans[1:]} | {"tmp/upload-crashed.part"}
    assert {p for v, p in _LINE.findall(result.stdout) if v == "removed"} == expected, result.stdout
    assert set(files(store.root)) == {rel(store, stuck.sha256)}
    assert summary(result.stdout) == (3, sum(before[p][0] for p in expected)), result.stdout
    assert f"could not remove {rel(store, stuck.sha256)} (" in result.stderr, result.stderr
    assert "could not remove 1 file" in result.stderr and "Traceback" not in result.stderr, result.stderr
    # Once the file can go, the next run takes it.
    assert gc_ok(settings)[0] == {rel(store, stuck.sha256)}


# -- refusals -------------------------------------------------------------------------------------
def test_gc_removes_nothing_when_it_cannot_read_the_registry(
    settings: Settings, empty_database_url: str, store: ArtifactStore, tmp_path: Path, regressor: Any
) -> None:
    orphan = store.put(io.BytesIO(joblib_bytes(regressor)))
    age(orphan.path)
    before = files(store.root)
    url = make_url(empty_database_url)
    # No schema yet (nothing has run the migrations): no registry id, no table of versions.
    if url.get_backend_name() == "sqlite":
        Path(url.database or "").touch()
    missing = f"sqlite:///{tmp_path / 'no-such-dir' / 'registry.db'}"
    for database_url, message in ((empty_database_url, "maas db upgrade"), (missing, "no registry database")):
        result = run_gc(Settings(database_url=database_url, store_dir=settings.store_dir), "--grace-period", "0")
        assert result.returncode == 1, result.stdout + result.stderr
        assert message in result.stderr and "nothing removed" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "no-such-dir").exists()
    assert files(store.root) == before


def test_grace_period_durations(settings: Settings, store: ArtifactStore, regressor: Any) -> None:
    duration = Duration()
    for text, seconds in (
        ("0", 0),
        ("45", 45),
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        (" 3H ", 10800),
    ):
        assert duration.convert(text, None, None) == seconds, text
    for bad in ("-1h", "1w", "1.5h", "h", "", "1h30m"):
        with pytest.raises(click.BadParameter, match="is not a duration"):
            duration.convert(bad, None, None)
    orphan = store.put(io.BytesIO(joblib_bytes(regressor)))
    age(orphan.path)
    result = run_gc(settings, "--grace-period", "1w")
    assert result.returncode == 2 and "is not a duration" in result.stderr, result.stderr
    assert store.exists(orphan.sha256)
