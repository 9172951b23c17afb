"""The audit trail's table (migration 0006) on SQLite and PostgreSQL, no HTTP."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from migrations.runner import alembic_config, check_database, upgrade_database
from model_store.features import FeatureSpec, FeatureType
from registry import service
from registry.db import Database
from registry.models import EVENT_ACTIONS, Event
from registry.service import ArtifactFacts

pytestmark = pytest.mark.postgresql

FEATURES = [FeatureSpec("age", FeatureType.NUMBER)]


def facts() -> ArtifactFacts:
    return ArtifactFacts("joblib", "0" * 64, 10, "sklearn.linear_model.LinearRegression", False, None, {})


def test_0006_adds_the_events_table_to_a_registry_at_0005_and_goes_back(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        upgrade_database(db.engine, "0005")
        assert "events" not in inspect(db.engine).get_table_names()
        upgrade_database(db.engine)
        assert [i["name"] for i in inspect(db.engine).get_indexes("events")] == ["ix_events_model_id"]
        check_database(db.engine)
        with db.engine.begin() as connection:
            command.downgrade(alembic_config(connection=connection), "0005")
        assert "events" not in inspect(db.engine).get_table_names()
        upgrade_database(db.engine)
        assert "events" in inspect(db.engine).get_table_names()
    finally:
        db.dispose()


def test_the_database_refuses_an_unknown_action(database_url: str) -> None:
    db = Database(database_url)
    try:
        with pytest.raises(IntegrityError), db.write() as session:
            service.record_event(session, "alice", "model_delete", "credit")
            session.flush()
        with db.write() as session:
            for action in EVENT_ACTIONS:
                service.record_event(session, "alice", action, "credit")
        with db.read() as session:
            assert [e.action for e in session.scalars(select(Event).order_by(Event.id))] == list(EVENT_ACTIONS)
    finally:
        db.dispose()


def test_an_event_and_its_change_are_one_transaction(database_url: str) -> None:
    db = Database(database_url)
    try:
        with pytest.raises(RuntimeError), db.write() as session:
            service.register_version(session, "credit", facts(), FEATURES, actor="alice", aliases=["prod"])
            raise RuntimeError("the caller fails before its commit")
        with db.read() as session:
            assert service.count_models(session) == 0
            assert service.list_events(session, None, offset=0, limit=10) == ([], 0)
        with db.write() as session:
            service.register_version(session, "credit", facts(), FEATURES, actor="alice", aliases=["prod"])
        with db.read() as session:
            events, total = service.list_events(session, "credit", offset=0, limit=10)
        assert total == 2 and [(e.action, e.actor, e.version) for e in events] == [
            ("alias_set", "alice", 1),
            ("upload", "alice", 1),
        ]
    finally:
        db.dispose()
