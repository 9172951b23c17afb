"""Databases of a test's own: a SQLite file, or a PostgreSQL database created and dropped here.

Migrating an empty database costs more than most tests, so each test session (each xdist worker)
migrates one template per kind and every test gets a copy: the SQLite file copied, a PostgreSQL
database made with `CREATE DATABASE ... TEMPLATE`. Tests of the migrations themselves ask for an
empty database instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from migrations.runner import upgrade_database
from registry.db import Database

PG_ENV = "MAAS_TEST_DATABASE_URL"


def postgres_base_url() -> str:
    """The configured PostgreSQL server's URL; skips the test when there is none."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL runs skipped")
    return base


def _database_url(base: str, name: str) -> str:
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def _admin(base: str, sql: str) -> None:
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        admin.dispose()


def postgres_database(template: str | None = None) -> Iterator[str]:
    """The URL of a PostgreSQL database of this test's own (a copy of `template`, or empty),
    created here and dropped afterwards (a generator: use it with `yield from`)."""
    base = postgres_base_url()
    name = f"maas_test_{uuid.uuid4().hex[:16]}"
    _admin(base, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield _database_url(base, name)
    finally:
        _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_postgres_template() -> Iterator[str]:
    """The name of a PostgreSQL database at the migrations' head, for this session's copies."""
    base = postgres_base_url()
    name = f"maas_template_{uuid.uuid4().hex[:16]}"
    _admin(base, f'CREATE DATABASE "{name}"')
    try:
        database = Database(_database_url(base, name))
        try:
            upgrade_database(database.engine)
        finally:
            database.dispose()  # a template cannot be copied while anyone is connected to it
        yield name
    finally:
        _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_sqlite_template(directory: Path) -> Path:
    """A SQLite file at the migrations' head (WAL checkpointed into the file by the dispose)."""
    path = directory / "template.db"
    database = Database(f"sqlite:///{path}")
    try:
        upgrade_database(database.engine)
    finally:
        database.dispose()
    return path


def sqlite_copy(template: Path, path: Path) -> str:
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@contextlib.contextmanager
def database_of_its_own(kind: str, root: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file under `root`, or a PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{root / 'registry.db'}"
    else:
        yield from postgres_database()
