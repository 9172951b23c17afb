"""`maas db upgrade`, and the database steps the other commands share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from serving.cli import settings_from_env

if TYPE_CHECKING:
    from registry.db import Database


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


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--database-url", default=None, help="Overrides MAAS_DATABASE_URL.")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Apply the Alembic migrations."""
    settings = settings_from_env(database_url=database_url)
    database = open_database(settings.database_url)
    upgrade_schema(database, revision)
    database.dispose()
    click.echo(f"database at {revision}")
