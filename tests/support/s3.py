"""An S3 endpoint for tests: moto's standalone server, a child process spoken to over real HTTP
(as s3fs's own tests do), and buckets of each test's own on it.

Shared by the tests and the benchmarks in `bench/`; it needs no pytest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.live import free_port

START_TIMEOUT_S = 60.0
# moto accepts any credentials; the variables every client of the endpoint gets.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        """A bucket of its own for a test (moto keeps it in memory until the server stops)."""
        name = f"maas-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def environment(self) -> dict[str, str]:
        """What `maas serve` or `maas store gc` needs to reach this endpoint (plus MAAS_STORE_URL)."""
        return {"MAAS_S3_ENDPOINT_URL": self.url, **CREDENTIALS}


@contextlib.contextmanager
def moto_server(log: Path, env: dict[str, str] | None = None) -> Iterator[S3Endpoint]:
    """moto's server on 127.0.0.1 and a free port, until the block ends (`env`: moto's own
    settings, added to this process's environment)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    endpoint = S3Endpoint(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto's server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                requests.get(endpoint.url, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not answer in {START_TIMEOUT_S:g} s") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
