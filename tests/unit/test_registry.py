"""The registry's operations on a migrated database (SQLite and PostgreSQL), no HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import MetaData, inspect

from migrations.runner import check_database, upgrade_database
from model_store.features import FeatureSpec, FeatureType
from registry import service
from registry.db import Database
from registry.errors import Conflict, InvalidInput, NotFound
from registry.names import parse_selector
from registry.service import ArtifactFacts

# The registry's constraints, transactions and types are the database's own: both databases.
pytestmark = pytest.mark.postgresql

FEATURES = [
    FeatureSpec("age", FeatureType.NUMBER, minimum=0, maximum=120),
    FeatureSpec("gender", FeatureType.STRING, required=False, allowed=("f", "m")),
]


def facts(n: int = 0) -> ArtifactFacts:
    return ArtifactFacts(
        format="joblib",
        sha256=f"{n:064x}",
        size_bytes=10,
        estimator="sklearn.pipeline.Pipeline",
        has_predict_proba=True,
        classes=[0, 1],
        library_versions={"python": "3.11"},
    )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    upgrade_database(database.engine)
    yield database
    database.dispose()


def register(db: Database, name: str = "credit", **kwargs: Any) -> int:
    with db.write() as session:
        return service.register_version(session, name, facts(), FEATURES, actor="test", **kwargs).version


def test_migrations_create_the_schema_and_match_the_models(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert inspect(db.engine).get_table_names() == []
        upgrade_database(db.engine)
        tables = set(inspect(db.engine).get_table_names())
        assert {"registered_models", "model_versions", "features", "aliases", "alembic_version"} <= tables
        check_database(db.engine)  # alembic check: models and migrations agree
        upgrade_database(db.engine)  # idempotent
    finally:
        db.dispose()


def test_a_registry_of_the_previous_release_upgrades_in_place(empty_database_url: str) -> None:
    """A registry made at revision 0001 (the release before versions kept their example) takes
    every later revision in place: its rows are kept, its versions answer example None and its
    features enforce their allowed values (accepts_unseen false, 0005), new versions record theirs."""
    db = Database(empty_database_url)
    try:
        upgrade_database(db.engine, "0001")
        old = MetaData()
        old.reflect(db.engine)
        assert "example" not in old.tables["model_versions"].c
        assert "accepts_unseen" not in old.tables["features"].c
        now = datetime.now(UTC)
        with db.engine.begin() as connection:
            model_id = connection.execute(
                old.tables["registered_models"]
                .insert()
                .values(name="credit", description="old", next_version=2, created_at=now, updated_at=now)
                .returning(old.tables["registered_models"].c.id)
            ).scalar_one()
            version_id = connection.execute(
                old.tables["model_versions"]
                .insert()
                .returning(old.tables["model_versions"].c.id)
                .values(
                    model_id=model_id,
                    version=1,
                    description=None,
                    format="joblib",
                    sha256="a" * 64,
                    size_bytes=10,
                    estimator="sklearn.linear_model.LogisticRegression",
                    has_predict_proba=True,
                    classes=[0, 1],
                    library_versions={"python": "3.11"},
                    tags={"team": "risk"},
                    created_at=now,
                )
            ).scalar_one()
            connection.execute(
                old.tables["features"]
                .insert()
                .values(
                    version_id=version_id,
                    position=0,
                    name="age",
                    type="number",
                    required=True,
                    allowed=None,
                    minimum=0.0,
                    maximum=120.0,
                )
            )
            connection.execute(
                old.tables["features"]
                .insert()
                .values(
                    version_id=version_id, position=1, name="gender", type="string", required=True, allowed=["f", "m"]
                )
            )
            connection.execute(
                old.tables["aliases"]
                .insert()
                .values(model_id=model_id, name="production", version_id=version_id, updated_at=now)
            )

        upgrade_database(db.engine)
        check_database(db.engine)
        with db.read() as session:
            kept = service.get_version(session, "credit", "production")
            assert (kept.version, kept.example, kept.tags, kept.classes) == (1, None, {"team": "risk"}, [0, 1])
            assert [(f.name, f.minimum, f.maximum, f.accepts_unseen) for f in kept.features] == [
                ("age", 0.0, 120.0, False),
                ("gender", None, None, False),
            ]
        example = [{"age": 35, "gender": "m"}, {"age": 52.5, "gender": None}]
        assert register(db, example=example) == 2
        with db.read() as session:
            assert service.get_version(session, "credit", 2).example == example
            assert service.get_version(session, "credit", 1).example is None
            assert service.summarize_model(session, service.get_model(session, "credit")).description == "old"
    finally:
        db.dispose()


def test_register_and_resolve(db: Database) -> None:
    assert register(db, description="v1", tags={"team": "risk"}, aliases=["production"]) == 1
    assert register(db) == 2
    with db.read() as session:
        assert service.resolve_version_ref(session, "credit", None).version == 2
        assert service.resolve_version_ref(session, "credit", "latest").version == 2
        assert service.resolve_version_ref(session, "credit", "production").version == 1
        assert service.resolve_version_ref(session, "credit", 1).version == 1
        assert service.resolve_version_ref(session, "credit", "2").version == 2
        version = service.get_version(session, "credit", 1)
        assert version.tags == {"team": "risk"} and version.description == "v1"
        assert [f.name for f in version.features] == ["age", "gender"]
        assert version.features[1].allowed == ["f", "m"] and version.features[0].maximum == 120
        assert version.created_at.tzinfo is not None


@pytest.mark.parametrize("selector", [3, "3", "staging", 0, -1, 2**70, "", True, 1.5, None])
def test_resolve_unknown(db: Database, selector: Any) -> None:
    if selector is None:
        with db.write() as session:
            service._get_or_create_model(session, "empty")
        with db.read() as session, pytest.raises(NotFound, match="no versions"):
            service.resolve_version_ref(session, "empty", selector)
        return
    register(db)
    with db.read() as session, pytest.raises(NotFound):
        service.resolve_version_ref(session, "credit", selector)


def test_unknown_model(db: Database) -> None:
    with db.read() as session:
        with pytest.raises(NotFound, match="Model 'ghost' not found"):
            service.resolve_version_ref(session, "ghost", 1)
        with pytest.raises(NotFound):
            service.get_model(session, "../etc")


def test_invalid_names_refused_and_nothing_written(db: Database) -> None:
    with pytest.raises(InvalidInput):
        register(db, name="Bad Name")
    with pytest.raises(InvalidInput):
        register(db, aliases=["Prod"])
    with pytest.raises(Conflict):
        register(db, aliases=["latest"])
    with db.read() as session:
        assert service.list_models(session, offset=0, limit=10) == ([], 0)


def test_aliases_and_deletes(db: Database) -> None:
    register(db)
    register(db)
    with db.write() as session:
        assert service.set_alias(session, "credit", "production", 1, actor="test").version == 1
    with db.write() as session, pytest.raises(Conflict, match="production"):
        service.delete_version(session, "credit", 1, actor="test")
    with db.write() as session:
        service.set_alias(session, "credit", "production", 2, actor="test")
    with db.write() as session:
        assert service.delete_version(session, "credit", 1, actor="test") == 1
    with db.write() as session, pytest.raises(NotFound):
        service.delete_version(session, "credit", 1, actor="test")
    with db.write() as session:
        service.delete_alias(session, "credit", "production", actor="test")
        with pytest.raises(NotFound):
            service.delete_alias(session, "credit", "production", actor="test")
    assert register(db) == 3
    with db.read() as session:
        summaries, total = service.list_models(session, offset=0, limit=10)
        assert total == 1 and summaries[0].latest_version == 3 and summaries[0].aliases == {}


def test_versions_are_never_reused(db: Database) -> None:
    register(db)
    register(db)
    with db.write() as session:
        service.delete_version(session, "credit", 2, actor="test")
    assert register(db) == 3


def test_concurrent_registrations_get_distinct_numbers(db: Database) -> None:
    numbers: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            numbers.append(register(db, name="race"))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers) == list(range(1, 17))


def test_sha256_in_use(db: Database) -> None:
    with db.read() as session:
        assert not service.sha256_in_use(session, facts().sha256)
    register(db)
    with db.read() as session:
        assert service.sha256_in_use(session, facts().sha256)


@pytest.mark.parametrize(
    "selector, parsed",
    [
        (None, "latest"),
        ("latest", "latest"),
        (1, 1),
        ("42", 42),
        ("prod", "prod"),
        (0, None),
        (-3, None),
        ("-3", None),
        (True, None),
        (1.0, None),
        ("1.0", None),
        ("", None),
        ("٣", None),
        (2**31, None),
        ("9" * 400, None),
        ("Prod", None),
        ([1], None),
    ],
)
def test_parse_selector(selector: Any, parsed: Any) -> None:
    assert parse_selector(selector) == parsed
