"""`maas serve`: the production server (gunicorn) on an up-to-date database."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from serving.cli import settings_from_env
from serving.cli.db import claim_store, open_database, upgrade_schema
from serving.telemetry.logs import install_access_log

if TYPE_CHECKING:
    from registry.db import Database
    from serving.config import Settings

log = logging.getLogger("maas")
# The audit trail's actor for the demo model's upload: a ':' is in no admin token's label.
DEMO_ACTOR = "maas:demo"


@click.command()
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
@click.option("--store-dir", default=None, help="Overrides MAAS_STORE_DIR (unused when MAAS_STORE_URL names a bucket).")
@click.option("--demo", is_flag=True, help="Register the demo model 'credit-default' if the registry is empty.")
def serve(
    host: str, port: int, workers: int, threads: int, database_url: str | None, store_dir: str | None, demo: bool
) -> None:
    """Start the production server (gunicorn) after bringing the database schema up to date."""
    # First: prometheus-client reads it when first imported (the demo's upload imports it here).
    metrics_dir, made = metrics_directory()
    try:
        _serve(host, port, workers, threads, database_url, store_dir, demo)
    finally:
        # gunicorn's workers are forks of this process and leave through here too: only the master cleans up.
        if made and os.getpid() == MASTER_PID[0]:
            shutil.rmtree(metrics_dir, ignore_errors=True)


MASTER_PID = [0]
# serving.telemetry.metrics.MULTIPROC_ENV, not imported from there: importing it imports prometheus-client,
# which must see the variable already set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory() -> tuple[str, bool]:
    """The directory of every worker's metric values (prometheus-client's multiprocess mode): the
    operator's PROMETHEUS_MULTIPROC_DIR, emptied of a previous run's files, or a new temporary one
    that `maas serve` removes at exit. Returns it, and whether it was made here."""
    MASTER_PID[0] = os.getpid()
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return str(path), False
    made = tempfile.mkdtemp(prefix="maas-metrics-")
    os.environ[MULTIPROC_ENV] = made
    return made, True


def _serve(
    host: str, port: int, workers: int, threads: int, database_url: str | None, store_dir: str | None, demo: bool
) -> None:
    from serving.cli.server import GunicornServer, gunicorn_options

    settings = settings_from_env(database_url=database_url, store_dir=store_dir)
    check_sandbox(settings)
    database = open_database(settings.database_url)
    try:
        upgrade_schema(database)
        # Before gunicorn starts: a store of another registry is refused here with one line,
        # not by each worker's create_app failing to boot.
        claim_store(settings, database)
        if demo:
            register_demo(settings, database)
    finally:
        database.dispose()
    click.echo(
        f"maas serving on http://{host}:{port} ({workers} workers)"
        f" - database {database.engine.url.render_as_string(hide_password=True)}"
        f" - model store {settings.store_url or settings.store_dir}"
    )
    install_access_log()  # stderr, one JSON object per line: the workers inherit it
    GunicornServer(settings, gunicorn_options(settings, host, port, workers, threads)).run()


def check_sandbox(settings: Settings) -> None:
    """Refuse to serve unconfined models unless told to (MAAS_SANDBOX=off), and say so every time."""
    from serving.runners.confine import sandbox_unavailable

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
    from registry import service
    from serving.inference.runtime import Runtime
    from serving.operations.demo import DEMO_METADATA, DEMO_MODEL, demo_artifact
    from serving.operations.upload import register_upload
    from serving.runners.pool import stop_zygote

    with database.read() as session:
        count = service.count_models(session)
    if count:
        click.echo(f"registry has {count} model(s): demo model not registered")
        return
    rt = Runtime(settings)
    rt.store.init()
    try:
        version = register_upload(rt, DEMO_MODEL, demo_artifact(), DEMO_METADATA, actor=DEMO_ACTOR)
    finally:
        rt.close()
        stop_zygote()  # the workers gunicorn forks next start their own
    click.echo(f"registered demo model {DEMO_MODEL} version {version.version}")
