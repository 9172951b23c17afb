"""The `maas` command: serve, db upgrade, store gc."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import click
import gunicorn.util
from gunicorn.app.base import BaseApplication
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from migrations.runner import upgrade_database
from model_store.store import ArtifactStore, StoreFile
from registry import service
from registry.db import Database
from serving.config import ConfigError, Settings
from serving.operations.store_gc import find_garbage, remove_garbage
from serving.runners.confine import sandbox_unavailable
from serving.runners.pool import stop_zygote

log = logging.getLogger("maas")


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (request line too long, bad header...),
    in the contract's error shape instead of gunicorn's HTML page."""
    body = json.dumps(
        {
            "code": status_int,
            "status": reason,
            "message": mesg if status_int < 500 and mesg else "The request could not be handled.",
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured from code, serving create_app in each worker."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # gunicorn's workers call util.write_error for the requests they refuse themselves.
        gunicorn.util.write_error = write_json_error

    def load(self) -> Any:
        from serving.api.app import create_app

        app = create_app(self.settings, upgrade_db=False)
        app.extensions["maas"].runners.warm()  # the zygote imports while the worker starts
        return app


def _upgrade(database: Database, revision: str = "head") -> None:
    """Run the migrations; a database that cannot be reached is a one-line error, exit 1."""
    try:
        upgrade_database(database.engine, revision)
    except OperationalError as exc:
        url = database.engine.url.render_as_string(hide_password=True)
        raise click.ClickException(f"cannot reach the registry database at {url}: {exc.orig}") from None


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """maas: a versioned registry and prediction server for scikit-learn models."""
    logging.basicConfig(
        level=os.environ.get("MAAS_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5050, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="gunicorn worker processes.")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    # Predictions are CPU-bound: measured on the demo model, 1-row p50 11 ms with sync
    # workers against 14 ms with 4 threads each (GIL hand-offs), so threads are opt-in.
    help="Threads per worker (more than 1 uses gunicorn's gthread worker).",
)
@click.option("--database-url", default=None, help="Overrides MAAS_DATABASE_URL.")
@click.option("--store-dir", default=None, help="Overrides MAAS_STORE_DIR.")
@click.option("--demo", is_flag=True, help="Register the demo model 'credit-default' if the registry is empty.")
def serve(
    host: str, port: int, workers: int, threads: int, database_url: str | None, store_dir: str | None, demo: bool
) -> None:
    """Start the production server (gunicorn) after bringing the database schema up to date."""
    settings = _settings(database_url=database_url, store_dir=store_dir)
    check_sandbox(settings)
    database = Database(settings.database_url)
    _upgrade(database)
    if demo:
        register_demo(settings, database)
    database.dispose()
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": 120,
        "graceful_timeout": 30,
        "accesslog": "-",
        # gunicorn's default format has %(u)s, the user of a Basic credential: a secret sent that
        # way would be logged. Nothing from the Authorization header is.
        "access_log_format": '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
        "errorlog": "-",
        # gunicorn's control socket is one path shared by every instance on the machine.
        "control_socket_disable": True,
    }
    click.echo(
        f"maas serving on http://{host}:{port} ({workers} workers)"
        f" - database {database.engine.url.render_as_string(hide_password=True)}"
    )
    GunicornServer(settings, options).run()


def check_sandbox(settings: Settings) -> None:
    """Refuse to serve unconfined models unless told to (MAAS_SANDBOX=off), and say so every time."""
    if not settings.sandbox:
        log.warning(
            "MAAS_SANDBOX=off: model runners are NOT confined. An uploaded model can read and write "
            "files, open network connections and start processes as this server's user; it still runs "
            "in a process of its own, without the server's environment, within its memory and time limits."
        )
        return
    reason = sandbox_unavailable()
    if reason:
        raise click.ClickException(
            f"model runners cannot be confined here: {reason}. Set MAAS_SANDBOX=off to serve unconfined "
            "models anyway (only for models from uploaders you trust)."
        )


def register_demo(settings: Settings, database: Database) -> None:
    """Register the demo model unless the registry already holds models."""
    with database.read() as session:
        count = service.count_models(session)
    if count:
        click.echo(f"registry has {count} model(s): demo model not registered")
        return
    from serving.inference.runtime import Runtime
    from serving.operations.demo import DEMO_METADATA, DEMO_MODEL, demo_artifact
    from serving.operations.upload import register_upload

    rt = Runtime(settings)
    rt.store.init()
    try:
        version = register_upload(rt, DEMO_MODEL, demo_artifact(), DEMO_METADATA)
    finally:
        rt.close()
        stop_zygote()  # the workers gunicorn forks next start their own
    click.echo(f"registered demo model {DEMO_MODEL} version {version.version}")


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--database-url", default=None, help="Overrides MAAS_DATABASE_URL.")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Apply the Alembic migrations."""
    settings = _settings(database_url=database_url)
    database = Database(settings.database_url)
    _upgrade(database, revision)
    database.dispose()
    click.echo(f"database at {revision}")


# -- maas store gc ---------------------------------------------------------------------------------
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A length of time: 0, 30s, 10m, 2h, 1d (a bare number is seconds); converted to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"(\d+)([smhd]?)", str(value).strip().lower())
        if match is None:
            self.fail(f"{value!r} is not a duration: use e.g. 0, 30s, 10m, 2h or 1d.", param, ctx)
        return int(match[1]) * _DURATION_UNITS[match[2]]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _require_registry(database_url: str) -> None:
    """Refuse a SQLite path with no database: gc would create an empty one and find nothing
    referenced (a mistyped or relative path must not look like a registry without versions)."""
    url = make_url(database_url)
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(url.database).is_file()
    ):
        raise click.ClickException(f"no registry database at {url.database}: nothing removed")


def _describe(store: ArtifactStore, file: StoreFile, now: float) -> str:
    what = "unreferenced artifact" if file.sha256 is not None else "interrupted upload"
    return (
        f"{file.path.relative_to(store.root)} ({file.size_bytes} bytes, {what}, modified {_age(now - file.mtime)} ago)"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@main.group("store")
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
@click.option("--store-dir", default=None, help="Overrides MAAS_STORE_DIR.")
def store_gc(grace_period: int, dry_run: bool, database_url: str | None, store_dir: str | None) -> None:
    """Remove artifacts that no version references and the temp files of interrupted uploads,
    when older than the grace period."""
    settings = _settings(database_url=database_url, store_dir=store_dir)
    _require_registry(settings.database_url)
    store = ArtifactStore(settings.store_dir)
    database = Database(settings.database_url)
    now = time.time()
    cutoff = now - grace_period
    removed = removed_bytes = changed = 0
    failed: list[str] = []
    try:
        garbage = find_garbage(database, store, cutoff)
        candidates = garbage.orphans + garbage.partial_uploads
        if dry_run:
            for file in candidates:
                click.echo(f"would remove {_describe(store, file, now)}")
        else:
            for outcome in remove_garbage(database, store, garbage, cutoff):
                path = outcome.file.path.relative_to(store.root)
                if outcome.error is not None:
                    failed.append(str(path))
                    reason = outcome.error.strerror or type(outcome.error).__name__
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
