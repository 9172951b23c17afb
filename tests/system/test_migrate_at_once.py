"""Replicas that start at once on one empty registry: every one runs `maas db upgrade` (as `maas
serve` does before it forks) at the same moment. One applies the migrations, the others wait for
its commit and find the schema current: all exit 0, the schema is at head, the store is claimed
once. Real processes, a real SQLite file, and a real PostgreSQL database when
MAAS_TEST_DATABASE_URL is set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from migrations.runner import alembic_config
from registry.db import Database
from serving.operations.store_claim import registry_id
from tests.support.live import environment

pytestmark = pytest.mark.postgresql

REPLICAS = 6
# Each replica imports everything first, then waits for the starting gun (a file), so that their
# migrations overlap instead of being spread out by their import times.
AT_THE_GUN = """
import os, sys, time
from serving.cli import main
gun = sys.argv.pop(1)
while not os.path.exists(gun):
    time.sleep(0.002)
main(prog_name="maas")
"""


def test_replicas_that_start_at_once_migrate_one_at_a_time(empty_database_url: str, tmp_path: Path) -> None:
    gun = tmp_path / "go"
    store = tmp_path / "store"
    env = environment(MAAS_DATABASE_URL=empty_database_url, MAAS_STORE_DIR=str(store))
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", AT_THE_GUN, str(gun), "db", "upgrade"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(REPLICAS)
    ]
    time.sleep(3.0)  # every replica's imports done (their tracebacks, if any, come out below)
    gun.touch()
    outcomes = [replica.communicate(timeout=120) for replica in replicas]
    for replica, (out, err) in zip(replicas, outcomes, strict=True):
        assert replica.returncode == 0, f"a replica failed:\n{out}\n{err}"
        assert "database at head" in out, out
    applied = sum(err.count("Running upgrade  -> 0001") for _, err in outcomes)
    assert applied == 1, [err for _, err in outcomes]

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    database = Database(empty_database_url)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
        assert {"registered_models", "model_versions", "events"} <= set(inspect(database.engine).get_table_names())
        claimed = registry_id(database)
    finally:
        database.dispose()
    assert claimed is not None
    assert os.listdir(store)  # claimed once, by this registry: every replica found it its own
