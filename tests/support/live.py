"""`maas serve` as a child process on 127.0.0.1 and a free port, spoken to over real HTTP.

Shared by the end-to-end tests and the benchmarks in `bench/`; it needs no pytest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0

_console_script = Path(sys.executable).parent / "maas"
MAAS = (
    [str(_console_script)]
    if _console_script.exists()
    else [sys.executable, "-c", "from serving.cli import main; main(prog_name='maas')"]
)


class ServerFailed(RuntimeError):
    """`maas serve` exited, or did not become ready in time; the message ends with its output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(**maas: str) -> dict[str, str]:
    """This process's environment without any MAAS_* variable, plus `maas`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    env.update(maas)
    return env


@dataclass
class Server:
    """A `maas serve` process in a process group of its own (so stopping it stops its workers)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until `/health/ready` answers 200; raises ServerFailed if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"maas serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # refused while binding, or no worker booted yet
                pass
            time.sleep(0.2)
        raise ServerFailed(f"maas serve not ready after {timeout_s:.0f} s:\n{self.output()}")

    def stop(self) -> int | None:
        """SIGTERM (gunicorn's graceful shutdown), then SIGKILL to the whole group if it hangs."""
        self.session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_S)
        try:  # workers left behind by a master that died first
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.returncode


def launch(*args: str, env: dict[str, str], cwd: Path, log: Path, workers: int = 2, port: int | None = None) -> Server:
    """Start `maas serve *args` on `port` or a free one (not waiting for it: see Server.wait_ready)."""
    port = port or free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*MAAS, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, port, log)


def run_to_end(argv: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to exit (a `maas` refusal, say): its status and text output."""
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
