"""`maas store gc`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from serving.cli import Duration, settings_from_env, store_of
from serving.cli.db import open_database

if TYPE_CHECKING:
    from model_store.store import ModelStore, StoreFile
    from registry.db import Database


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _require_registry(database_url: str) -> None:
    """Refuse a SQLite path with no database: gc would create an empty one and find nothing
    referenced (a mistyped or relative path must not look like a registry without versions)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(url.database).is_file()
    ):
        raise click.ClickException(f"no registry database at {url.database}: nothing removed")


def _require_own_store(database: Database, store: ModelStore) -> None:
    """Refuse, with one line and nothing removed, a store that is not this registry's: gc would
    take every artifact of another registry for an orphan."""
    from model_store.errors import StoreClaimed
    from serving.operations.store_claim import registry_id

    rid = registry_id(database)
    if rid is None:
        raise click.ClickException(
            "the registry database has no registry id yet: run `maas db upgrade` first: nothing removed"
        )
    owner = store.owner()
    if owner is None:
        # A store that no `maas serve` or `maas db upgrade` claimed since stores were claimed:
        # its artifacts could be any registry's. Empty, it has nothing of anyone's to lose.
        if next(store.artifacts(), None) is not None:
            raise click.ClickException(
                f"the model store at {store.location} belongs to no registry yet: run `maas db upgrade` "
                "with this store and database to claim it: nothing removed"
            )
    elif owner != rid:
        raise click.ClickException(StoreClaimed(str(store.location), owner, rid).message + ": nothing removed")


def _describe(store: ModelStore, file: StoreFile, now: float) -> str:
    what = "unreferenced artifact" if file.sha256 is not None else "interrupted upload"
    return f"{file.name} ({file.size_bytes} bytes, {what}, modified {_age(now - file.mtime)} ago)"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@click.group("store")
def store_group() -> None:
    """Model store commands."""


@store_group.command("gc")
@click.option(
    "--grace-period",
    type=Duration(),
    default="1h",
    show_default=True,
    help="Keep files modified more recently than this (0, 30s, 10m, 2h, 1d); longer than any upload takes.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed, and remove nothing.")
@click.option("--database-url", default=None, help="Overrides MAAS_DATABASE_URL.")
@click.option("--store-dir", default=None, help="Overrides MAAS_STORE_DIR (unused when MAAS_STORE_URL names a bucket).")
def store_gc(grace_period: int, dry_run: bool, database_url: str | None, store_dir: str | None) -> None:
    """Remove artifacts that no version references and the temp files of interrupted uploads,
    when older than the grace period."""
    from sqlalchemy.exc import DBAPIError

    from serving.operations.store_gc import find_garbage, remove_garbage

    settings = settings_from_env(database_url=database_url, store_dir=store_dir)
    _require_registry(settings.database_url)
    store = store_of(settings)
    database = open_database(settings.database_url)
    now = time.time()
    cutoff = now - grace_period
    removed = removed_bytes = changed = 0
    failed: list[str] = []
    try:
        _require_own_store(database, store)
        garbage = find_garbage(database, store, cutoff)
        candidates = garbage.orphans + garbage.partial_uploads
        if dry_run:
            for file in candidates:
                click.echo(f"would remove {_describe(store, file, now)}")
        else:
            for outcome in remove_garbage(database, store, garbage, cutoff):
                path = outcome.file.name
                if outcome.error is not None:
                    failed.append(str(path))
                    reason = outcome.error.strerror or str(outcome.error) or type(outcome.error).__name__
                    click.echo(f"could not remove {path} ({reason})", err=True)
                elif outcome.removed_bytes is None:
                    changed += 1
                    click.echo(f"kept {path} (referenced or modified since it was listed)")
                else:
                    removed += 1
                    removed_bytes += outcome.removed_bytes
                    click.echo(f"removed {_describe(store, outcome.file, now)}")
    except DBAPIError as exc:
        raise click.ClickException(f"the registry database cannot be read ({exc.orig}): nothing removed") from None
    except OSError as exc:  # the store cannot be listed (a bucket that does not answer)
        raise click.ClickException(
            f"the model store at {store.location} does not answer ({exc}): "
            f"{'nothing' if not removed else f'{removed} files'} removed"
        ) from None
    finally:
        database.dispose()
    kept = (
        f"kept {_plural(garbage.referenced, 'referenced artifact')}, "
        f"{_plural(garbage.recent, 'file')} younger than {_age(grace_period)}"
        + (f", {changed} changed while gc ran" if changed else "")
    )
    if dry_run:
        size = sum(f.size_bytes for f in candidates)
        click.echo(f"dry run: would remove {_plural(len(candidates), 'file')}, {size} bytes; {kept}; nothing removed")
    else:
        click.echo(f"removed {_plural(removed, 'file')}, {removed_bytes} bytes; {kept}")
    if failed:
        raise click.ClickException(f"could not remove {_plural(len(failed), 'file')}: " + ", ".join(failed))
