"""`maas serve` on a kernel that cannot confine runners: it refuses to start, unless told
MAAS_SANDBOX=off, and then says at start that models run unconfined.

A kernel without Landlock is made here for one process tree: a seccomp filter answers ENOSYS to
Landlock's syscalls (as a kernel built without it does), installed before `maas serve` is exec'd.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.support import ADMIN, CREDIT_ROW, joblib_bytes
from tests.support.live import MAAS, Server, environment, free_port, run_to_end

WITHOUT_LANDLOCK = """
import errno, os, sys
import pyseccomp as seccomp
rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"):
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
rules.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


def _without_landlock(*args: str) -> list[str]:
    command = MAAS if MAAS[0] != sys.executable else [sys.executable, *MAAS[1:]]
    return [sys.executable, "-c", WITHOUT_LANDLOCK, *command, *args]


def test_serve_refuses_to_start_when_runners_cannot_be_confined(tmp_path: Path) -> None:
    env = environment(MAAS_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}", MAAS_STORE_DIR=str(tmp_path / "store"))
    run = run_to_end(_without_landlock("serve", "--port", str(free_port())), env=env, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "model runners cannot be confined here" in run.stderr and "Landlock" in run.stderr
    assert "MAAS_SANDBOX=off" in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_with_the_sandbox_off_starts_warns_and_serves(tmp_path: Path, credit_pipeline: object) -> None:
    port = free_port()
    env = environment(
        MAAS_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
        MAAS_STORE_DIR=str(tmp_path / "store"),
        MAAS_SANDBOX="off",
        MAAS_ADMIN_TOKEN=ADMIN["Authorization"].split()[1],
        XDG_RUNTIME_DIR=str(tmp_path),
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _without_landlock("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(process, port, log)
    try:
        server.wait_ready()
        uploaded = requests.post(
            server.url + "/api/admin/models/credit/versions",
            files={"file": ("model.joblib", joblib_bytes(credit_pipeline))},
            headers=ADMIN,
            timeout=60,
        )
        assert uploaded.status_code == 201, uploaded.text
        answer = requests.post(server.url + "/api/models/credit/predict", json={"data": CREDIT_ROW}, timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert "MAAS_SANDBOX=off: model runners are NOT confined" in text
