"""The registry's id: made once per database by migration 0003, on new and upgraded databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData
from sqlalchemy.exc import IntegrityError

from migrations.runner import upgrade_database
from registry import service
from registry.db import Database
from registry.models import RegistryIdentity

pytestmark = pytest.mark.postgresql


def test_a_new_database_gets_an_id_of_its_own_that_never_changes(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        upgrade_database(db.engine)
        with db.read() as session:
            rid = service.registry_id(session)
        assert rid is not None and str(uuid.UUID(rid)) == rid
        upgrade_database(db.engine)  # at every start: the id stays
        with db.read() as session:
            assert service.registry_id(session) == rid
            assert session.query(RegistryIdentity).count() == 1
        with pytest.raises(IntegrityError), db.write() as session:  # one row, kept by the database
            session.add(RegistryIdentity(id=2, registry_id=str(uuid.uuid4())))
    finally:
        db.dispose()


def test_a_registry_of_the_previous_release_gets_its_id_when_upgraded(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        upgrade_database(db.engine, "0002")
        with db.read() as session:
            assert service.registry_id(session) is None  # not made yet: nothing to claim with
        old = MetaData()
        old.reflect(db.engine)
        now = datetime.now(UTC)
        with db.engine.begin() as connection:
            connection.execute(
                old.tables["registered_models"]
                .insert()
                .values(name="credit", description=None, next_version=1, created_at=now, updated_at=now)
            )
        upgrade_database(db.engine)
        with db.read() as session:
            rid = service.registry_id(session)
            assert rid is not None and service.count_models(session) == 1
        assert rid != _fresh_id(db)  # ids are random, one per database
    finally:
        db.dispose()


def _fresh_id(db: Database) -> str:
    """The id the migrations give another database (a SQLite file beside this one's, or memory)."""
    other = Database("sqlite://")
    try:
        upgrade_database(other.engine)
        with other.read() as session:
            rid = service.registry_id(session)
        assert rid is not None
        return rid
    finally:
        other.dispose()
