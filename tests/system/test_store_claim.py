"""A model store belongs to one registry: the README's old PostgreSQL route (a second registry on
the SQLite registry's store, `maas-data/models`) can no longer collect or serve the first one's
artifacts. Real `maas` processes, real files, a real SQLite file; the second registry on
PostgreSQL when MAAS_TEST_DATABASE_URL is set (on a second SQLite file always)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from model_store.store import CLAIM_FILE, ArtifactStore
from registry.db import Database
from serving.operations.store_claim import registry_id
from tests.support import ADMIN_TOKEN, CREDIT_ROW, joblib_bytes, upload_live
from tests.support.live import MAAS, Server, environment, free_port, run_to_end

# The second registry is the README's PostgreSQL one: both databases.
pytestmark = pytest.mark.postgresql


def id_of(database_url: str) -> str:
    database = Database(database_url)
    try:
        rid = registry_id(database)
    finally:
        database.dispose()
    assert rid is not None
    return rid


def maas(*args: str, cwd: Path, **variables: str) -> Any:
    return run_to_end([*MAAS, *args], env=environment(**variables), cwd=cwd)


def refused_with_one_line(run: Any, *ids: str) -> str:
    """The command exited 1 with one error line (its only line on stderr but the log's INFO
    lines of the migrations) naming both registries and what to do."""
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, run.stderr
    for rid in ids:
        assert rid in errors[0], errors[0]
    assert "MAAS_STORE_DIR" in errors[0], errors[0]
    return errors[0]


def predicts(server: Server, model: Any) -> None:
    answer = server.post("/api/models/credit/versions/1/predict", json={"data": CREDIT_ROW})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == model.predict(pd.DataFrame([CREDIT_ROW])).tolist()


def test_a_second_registry_on_the_store_of_another_is_refused_and_deletes_nothing(
    serve: Callable[..., Server], tmp_path: Path, empty_database_url: str, credit_pipeline: Any
) -> None:
    store_dir = tmp_path / "maas-data" / "models"
    store = ArtifactStore(store_dir)
    sqlite_url = f"sqlite:///{tmp_path / 'maas-data' / 'registry.db'}"
    first = dict(MAAS_DATABASE_URL=sqlite_url, MAAS_STORE_DIR=str(store_dir), MAAS_ADMIN_TOKEN=ADMIN_TOKEN)

    # The SQLite registry: its first `maas serve` claims the new store.
    server = serve(env=environment(**first), cwd=tmp_path)
    sqlite_id = id_of(sqlite_url)
    assert (store_dir / CLAIM_FILE).read_text() == sqlite_id + "\n"
    uploaded = upload_live(server, "credit", joblib_bytes(credit_pipeline))
    assert uploaded.status_code == 201, uploaded.text
    artifact = store.path_for(uploaded.json()["sha256"])
    predicts(server, credit_pipeline)
    server.stop()
    old = time.time() - 7200  # far past any grace period
    os.utime(artifact, (old, old))
    before = artifact.read_bytes()

    # The second registry on the same store, as the README's PostgreSQL route had it.
    second = dict(MAAS_DATABASE_URL=empty_database_url, MAAS_STORE_DIR=str(store_dir))
    line = refused_with_one_line(maas("db", "upgrade", cwd=tmp_path, **second), sqlite_id)
    other_id = id_of(empty_database_url)  # the migrations ran: the refusal came after them
    assert other_id != sqlite_id and other_id in line

    gc = maas("store", "gc", "--grace-period", "0", cwd=tmp_path, **second)
    refused_with_one_line(gc, sqlite_id, other_id)
    assert gc.stderr.count("\n") == 1, gc.stderr  # gc runs no migrations: nothing else on stderr
    assert "nothing removed" in gc.stderr and gc.stdout == "", gc.stdout
    gc = maas("store", "gc", "--dry-run", "--grace-period", "0", cwd=tmp_path, **second)
    refused_with_one_line(gc, sqlite_id, other_id)

    serving = maas("serve", "--port", str(free_port()), cwd=tmp_path, **second)
    refused_with_one_line(serving, sqlite_id, other_id)
    assert "maas serving on" not in serving.stdout + serving.stderr
    assert "Listening at" not in serving.stdout + serving.stderr  # refused before gunicorn started

    # Nothing of the first registry was touched, and it still serves and predicts.
    assert artifact.read_bytes() == before
    assert (store_dir / CLAIM_FILE).read_text() == sqlite_id + "\n"
    server = serve(env=environment(**first), cwd=tmp_path)
    predicts(server, credit_pipeline)
    server.stop()

    # A store claimed by the same registry works as before: gc keeps the referenced artifact (and
    # the ONNX graph compiled from it).
    gc = maas("store", "gc", "--grace-period", "0", cwd=tmp_path, **first)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert "removed 0 files, 0 bytes; kept 2 referenced artifacts" in gc.stdout, gc.stdout
    assert artifact.read_bytes() == before

    # Given a store of its own, the second registry's `maas db upgrade` claims it and it serves.
    own_store = tmp_path / "maas-data" / "models-postgresql"
    own = dict(second, MAAS_STORE_DIR=str(own_store), MAAS_ADMIN_TOKEN=ADMIN_TOKEN)
    upgraded = maas("db", "upgrade", cwd=tmp_path, **own)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert (own_store / CLAIM_FILE).read_text() == other_id + "\n"
    server = serve(env=environment(**own), cwd=tmp_path)
    assert server.get("/api/models").json() == []
    gc = maas("store", "gc", "--grace-period", "0", cwd=tmp_path, **own)
    assert gc.returncode == 0, gc.stdout + gc.stderr


def test_a_store_of_no_registry_is_claimed_by_the_first_upgrade_and_gc_never_guesses(
    tmp_path: Path, empty_database_url: str, credit_pipeline: Any
) -> None:
    """A store without a claim (written before stores were claimed, or its claim removed by hand):
    gc will not collect it while it holds artifacts; the first `maas db upgrade` claims it."""
    store_dir = tmp_path / "models"
    store = ArtifactStore(store_dir)
    stored = store.put(io.BytesIO(joblib_bytes(credit_pipeline)))
    old = time.time() - 7200
    os.utime(stored.path, (old, old))
    env = dict(MAAS_DATABASE_URL=empty_database_url, MAAS_STORE_DIR=str(store_dir))

    # Migrated but not yet claimed (`--revision 0002` makes no registry id, so claims nothing).
    upgraded = maas("db", "upgrade", "--revision", "0002", cwd=tmp_path, **env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert not (store_dir / CLAIM_FILE).exists()
    gc = maas("store", "gc", "--grace-period", "0", cwd=tmp_path, **env)
    assert gc.returncode == 1 and "run `maas db upgrade` first" in gc.stderr, gc.stdout + gc.stderr

    upgraded = maas("db", "upgrade", cwd=tmp_path, **env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    rid = id_of(empty_database_url)
    assert (store_dir / CLAIM_FILE).read_text() == rid + "\n"
    assert "held artifacts and no owner" in upgraded.stderr, upgraded.stderr  # said when it happens
    (store_dir / CLAIM_FILE).unlink()
    gc = maas("store", "gc", "--grace-period", "0", cwd=tmp_path, **env)
    assert gc.returncode == 1, gc.stdout + gc.stderr
    assert "belongs to no registry yet" in gc.stderr and "nothing removed" in gc.stderr, gc.stderr
    assert stored.path.is_file()
