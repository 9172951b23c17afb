"""`maas db upgrade`, and the database steps the other commands share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from serving.cli import settings_from_env, store_of

if TYPE_CHECKING:
    from registry.db import Database
    from serving.config import Settings


def open_database(url: str) -> Database:
    """The registry's Database; a driver that is not installed is a one-line error, exit 1."""
    from registry.db import Database
    from registry.errors import DatabaseDriverMissing

    try:
        return Database(url)
    except DatabaseDriverMissing as exc:
        raise click.ClickException(exc.message) from None


def upgrade_schema(database: Database, revision: str = "head") -> None:
    """Run the migrations; a database that cannot be reached is a one-line error, exit 1."""
    from sqlalchemy.exc import OperationalError

    from migrations.runner import upgrade_database

    try:
        upgrade_database(database.engine, revision)
    except OperationalError as exc:
        url = database.engine.url.render_as_string(hide_password=True)
        raise click.ClickException(f"cannot reach the registry database at {url}: {exc.orig}") from None


def claim_store(settings: Settings, database: Database) -> None:
    """Claim the model store for this registry (or check it is already its own); a store of
    another registry is a one-line error, exit 1."""
    from model_store.errors import StoreClaimed
    from serving.operations import store_claim

    try:
        store_claim.claim_store(database, store_of(settings))
    except StoreClaimed as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(f"the model store at {store_of(settings).location} does not answer: {exc}") from None


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--database-url", default=None, help="Overrides MAAS_DATABASE_URL.")
@click.option("--store-dir", default=None, help="Overrides MAAS_STORE_DIR (unused when MAAS_STORE_URL names a bucket).")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, store_dir: str | None, revision: str) -> None:
    """Apply the Alembic migrations.

    Then claim the model store (MAAS_STORE_DIR, --store-dir) for this registry, unless it is
    already this registry's; a store that another registry claimed is refused (exit 1).
    """
    settings = settings_from_env(database_url=database_url, store_dir=store_dir)
    database = open_database(settings.database_url)
    try:
        upgrade_schema(database, revision)
        claim_store(settings, database)
    finally:
        database.dispose()
    click.echo(f"database at {revision}")
