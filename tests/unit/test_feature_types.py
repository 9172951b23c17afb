"""FeatureType and FeatureSpec, and the migrations' copy of the feature types."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from migrations.runner import SCRIPT_LOCATION, upgrade_database
from model_store.features import FeatureSpec, FeatureType

REVISIONS = sorted((Path(SCRIPT_LOCATION) / "versions").glob("*.py"))


def _checked_types(database_url: str) -> set[str]:
    """The feature types the migrated database's CHECK constraint lets in."""
    engine = create_engine(database_url)
    try:
        upgrade_database(engine)
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                table = connection.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'features'"))
                match = re.search(r"ck_features_type_known CHECK \(type IN \(([^)]*)\)\)", table or "")
                assert match, table
                constraint = match.group(1)
            else:
                constraint = connection.scalar(
                    text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_features_type_known'")
                )
    finally:
        engine.dispose()
    return set(re.findall(r"'([^']*)'", constraint))


@pytest.mark.postgresql
def test_the_migrations_check_the_feature_types_there_are(empty_database_url: str) -> None:
    """A revision keeps its own literal list (it is a snapshot); a new FeatureType needs a new
    revision that widens the constraint, or the database refuses the new type's features."""
    assert _checked_types(empty_database_url) == {t.value for t in FeatureType}


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda p: p.name)
def test_revisions_import_no_live_code(revision: Path) -> None:
    tree = ast.parse(revision.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    live = {name for name in imported if name.split(".")[0] in {"registry", "model_store", "serving"}}
    assert not live, f"{revision.name} imports {sorted(live)}"


@pytest.mark.parametrize(
    ("kind", "accepted", "refused"),
    [
        (FeatureType.NUMBER, [0, -3, 1.5, 10**30], [True, "1", None, [1], {}]),
        (FeatureType.INTEGER, [0, -3, 10**30], [1.0, True, "1", None]),
        (FeatureType.STRING, ["", "a"], [1, True, None, ["a"]]),
        (FeatureType.BOOLEAN, [True, False], [0, 1, "true", None]),
    ],
)
def test_which_json_values_a_type_accepts(kind: FeatureType, accepted: list[Any], refused: list[Any]) -> None:
    assert all(kind.accepts(v) for v in accepted)
    assert not any(kind.accepts(v) for v in refused)
    assert {type(v) for v in accepted} <= kind.python_types


def test_a_feature_type_is_its_contract_word() -> None:
    assert [str(t) for t in FeatureType] == ["number", "integer", "string", "boolean"]
    assert f"{FeatureType.INTEGER}" == "integer" and FeatureType("string") is FeatureType.STRING
    assert [t.is_numeric for t in FeatureType] == [True, True, False, False]


def test_a_spec_round_trips_through_the_contracts_json() -> None:
    spec = FeatureSpec("grade", FeatureType.STRING, required=False, allowed=("a", "b"))
    as_json = {
        "name": "grade",
        "type": "string",
        "required": False,
        "allowed": ["a", "b"],
        "minimum": None,
        "maximum": None,
        "accepts_unseen": False,
    }
    assert spec.to_json() == as_json
    assert FeatureSpec.from_json(as_json) == spec
    assert FeatureSpec.from_json({"name": "age"}) == FeatureSpec("age", FeatureType.NUMBER)
    assert hash(spec) == hash(FeatureSpec.from_json(as_json))


def test_a_spec_is_frozen_and_normalised() -> None:
    spec = FeatureSpec("flag", "integer", allowed=[1, 2])  # type: ignore[arg-type]
    assert spec.type is FeatureType.INTEGER and spec.allowed == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        FeatureSpec("x", "date")  # type: ignore[arg-type]
