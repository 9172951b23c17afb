"""The `maas` command itself: what `maas --help` imports, the gunicorn settings that come from
MAAS_* variables, and that they reach gunicorn (its own Config, and a live `maas serve`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from serving.cli.server import SYNC_WORKER, THREAD_WORKER, GunicornServer, JsonErrorSyncWorker, gunicorn_options
from serving.config import ConfigError, Settings
from tests.support import ADMIN, ADMIN_TOKEN, CREDIT_ROW, joblib_bytes
from tests.support.live import MAAS, Server, environment, run_to_end

HEAVY = ("sqlalchemy", "gunicorn", "flask", "numpy", "pandas", "sklearn", "alembic", "psycopg", "registry")


# -- maas --help -----------------------------------------------------------------------------------
def test_help_imports_no_heavy_library_and_lists_every_command() -> None:
    script = (
        "import json, sys\n"
        "from serving.cli import main\n"
        "try:\n"
        "    main(['--help'], prog_name='maas')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    *help_lines, modules = run.stdout.splitlines()
    assert not set(json.loads(modules)) & set(HEAVY), modules
    help_text = "\n".join(help_lines)
    for command in ("db", "serve", "store"):
        assert f"  {command} " in help_text, help_text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["db", "--help"], "upgrade  Apply the Alembic migrations."),
        (["store", "gc", "-h"], "--grace-period DURATION"),
        (["serve", "--help"], "--threads INTEGER RANGE"),
    ],
)
def test_subcommands_load_when_named(args: list[str], expected: str) -> None:
    run = subprocess.run([*MAAS, *args], capture_output=True, text=True, timeout=60, env=environment())
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    run = subprocess.run([*MAAS, "nope"], capture_output=True, text=True, timeout=60, env=environment())
    assert run.returncode == 2
    assert "No such command 'nope'" in run.stderr


# -- gunicorn's settings from MAAS_* -------------------------------------------------------------------
def test_worker_timeout_and_preload_default_to_what_maas_serve_always_used() -> None:
    settings = Settings.from_env({})
    assert settings.worker_timeout == 120 and settings.preload is False
    assert settings.artifact_retry_seconds == 2.0


def test_worker_timeout_preload_and_artifact_retry_are_read_and_checked() -> None:
    settings = Settings.from_env({"MAAS_WORKER_TIMEOUT": "45", "MAAS_PRELOAD": "on", "MAAS_ARTIFACT_RETRY": "0"})
    assert (settings.worker_timeout, settings.preload, settings.artifact_retry_seconds) == (45, True, 0)
    for env, message in (
        ({"MAAS_WORKER_TIMEOUT": "soon"}, "MAAS_WORKER_TIMEOUT must be an integer, not 'soon'"),
        ({"MAAS_WORKER_TIMEOUT": "0"}, "MAAS_WORKER_TIMEOUT must be at least 1, not 0"),
        (
            {"MAAS_WORKER_TIMEOUT": "10"},
            "MAAS_WORKER_TIMEOUT (10 s) must be longer than MAAS_PREDICT_TIMEOUT (10 s)",
        ),
        ({"MAAS_PRELOAD": "maybe"}, "MAAS_PRELOAD must be 'on' or 'off', not 'maybe'"),
        ({"MAAS_ARTIFACT_RETRY": "-1"}, "MAAS_ARTIFACT_RETRY must be at least 0 and at most 86400 seconds, not -1"),
    ):
        with pytest.raises(ConfigError) as error:
            Settings.from_env(env)
        assert str(error.value) == message


def test_a_bad_worker_timeout_stops_maas_serve_with_one_line(tmp_path: Path) -> None:
    run = run_to_end(
        [*MAAS, "serve", "--port", "0"],
        env=environment(MAAS_WORKER_TIMEOUT="5", MAAS_PREDICT_TIMEOUT="10"),
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "MAAS_WORKER_TIMEOUT (5 s) must be longer than MAAS_PREDICT_TIMEOUT (10 s)" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("threads", [1, 4])
def test_the_settings_reach_gunicorns_own_config(threads: int) -> None:
    settings = Settings.from_env({"MAAS_WORKER_TIMEOUT": "77", "MAAS_PRELOAD": "on"})
    server = GunicornServer(settings, gunicorn_options(settings, "127.0.0.1", 5050, 2, threads))
    assert server.cfg.timeout == 77
    assert server.cfg.preload_app is True
    assert server.cfg.settings["worker_class"].get() == (THREAD_WORKER if threads > 1 else SYNC_WORKER)
    worker_class = server.cfg.worker_class  # gunicorn imports the dotted path itself
    assert worker_class.__module__ == "serving.cli.server"
    assert callable(worker_class.handle_error) and worker_class.handle_error is JsonErrorSyncWorker.handle_error
    default = Settings.from_env({})
    server = GunicornServer(default, gunicorn_options(default, "127.0.0.1", 5050, 2, threads))
    assert server.cfg.timeout == 120 and server.cfg.preload_app is False


# -- a live maas serve ---------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _maps_numpy(pid: int) -> bool:
    return "/numpy/" in Path(f"/proc/{pid}/maps").read_text()


def _raw(server: Server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_maas_serve_with_preload_builds_the_app_once_and_serves(
    serve: Callable[..., Server], tmp_path: Path, credit_pipeline: object
) -> None:
    env = environment(
        MAAS_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
        MAAS_STORE_DIR=str(tmp_path / "store"),
        MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
        MAAS_PRELOAD="on",
    )
    server = serve(env=env, cwd=tmp_path)
    assert "Using worker: serving.cli.server.JsonErrorSyncWorker" in server.output()
    assert _maps_numpy(server.process.pid), "MAAS_PRELOAD=on: the master should have built the app"
    uploaded = server.post(
        "/api/admin/models/credit/versions", files={"file": ("m.joblib", joblib_bytes(credit_pipeline))}, headers=ADMIN
    )
    assert uploaded.status_code == 201, uploaded.text
    for _ in range(4):  # each worker, forked from the preloading master, serves with runners of its own
        answer = requests.post(server.url + "/api/predict", json={"model": "credit", "data": CREDIT_ROW}, timeout=60)
        assert answer.status_code == 200, answer.text

    # gunicorn's own refusal, from the worker class: the contract's JSON error shape.
    raw = _raw(server, b"GET /api/models HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Content-Type: application/json" in head
    refused = json.loads(body)
    assert refused["code"] == 400 and refused["status"] == "Bad Request", refused
    assert refused["message"].startswith("Invalid HTTP Version"), refused


def test_maas_serve_kills_a_silent_worker_after_its_timeout(serve: Callable[..., Server], tmp_path: Path) -> None:
    env = environment(
        MAAS_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
        MAAS_STORE_DIR=str(tmp_path / "store"),
        MAAS_WORKER_TIMEOUT="2",
        MAAS_PREDICT_TIMEOUT="1",
    )
    server = serve(env=env, cwd=tmp_path)
    # Without preload the master never builds the app: it has not even imported numpy.
    assert not _maps_numpy(server.process.pid)
    stalled = _children(server.process.pid)[0]
    # gunicorn only times out a worker that has sent a heartbeat: one that has booted (its app
    # built, its zygote started: a child of its own) and run its loop for a moment.
    deadline = time.monotonic() + 60
    while not _children(stalled):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    time.sleep(1)
    os.kill(stalled, signal.SIGSTOP)  # no more heartbeats from this worker
    deadline = time.monotonic() + 30
    while f"WORKER TIMEOUT (pid:{stalled})" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    os.kill(stalled, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while stalled in _children(server.process.pid) or len(_children(server.process.pid)) < 2:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.2)
    server.wait_ready()
