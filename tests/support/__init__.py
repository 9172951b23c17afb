"""What the tests share: credentials, sample data, request helpers, databases and live servers.

Test modules import helpers from here (and fixtures from conftest.py by name), never from each
other. Its submodules: `live` (a `maas serve` child process, also used by bench/) and `databases`
(migrated templates and databases of a test's own). The classes that test pickles refer to by
module path live apart, in tests/estimators: a runner imports them, and nothing else of the tests.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.support.databases import PG_ENV, database_of_its_own, postgres_database
from tests.support.live import Server, ServerFailed, environment, launch

__all__ = [
    "ADMIN",
    "ADMIN_TOKEN",
    "CREDIT_ROW",
    "MIXED_ROWS",
    "MIXED_SCHEMA",
    "PG_ENV",
    "REPO",
    "Live",
    "database_of_its_own",
    "joblib_bytes",
    "live_server",
    "loans",
    "model_count",
    "postgres_database",
    "store_files",
    "upload",
    "upload_live",
]

REPO = Path(__file__).resolve().parents[2]  # the repository root: `tests.*` imports from here
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CREDIT_ROW = {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}
# The declared schema of the `mixed_pipeline` fixture (one feature of each type), and rows for it.
MIXED_SCHEMA: list[dict[str, Any]] = [
    {"name": "age", "type": "integer", "minimum": 18, "maximum": 80},
    {"name": "income", "type": "number"},
    {"name": "gender", "type": "string", "allowed": ["female", "male"]},
    {"name": "member", "type": "boolean"},
]
MIXED_ROWS: list[dict[str, Any]] = [
    {"age": 35, "income": 42000.0, "gender": "male", "member": True},
    {"age": 61, "income": 30500.5, "gender": "female", "member": False},
    {"age": 23, "income": 90000.0, "gender": "female", "member": True},
]


# -- data and artifacts ---------------------------------------------------------------------
def loans(rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Applicants (age, income, gender, region) and whether each defaulted."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows).astype(float),
            "income": rng.normal(50000, 15000, rows),
            "gender": rng.choice(["female", "male"], rows),
            "region": rng.choice(["north", "south", "east"], rows),
        }
    )
    target = ((frame["income"] < 45000) ^ (frame["region"] == "east")).astype(int).to_numpy()
    return frame, target


def joblib_bytes(model: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, **kwargs)
    return buffer.getvalue()


# -- the Flask test client ------------------------------------------------------------------
def upload(
    client: Any,
    name: str,
    artifact: Any,
    metadata: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    filename: str = "model.joblib",
) -> Any:
    """POST an artifact (a fitted model, or raw bytes) to the admin upload endpoint."""
    payload = artifact if isinstance(artifact, bytes) else joblib_bytes(artifact)
    form: dict[str, Any] = {"file": FileStorage(io.BytesIO(payload), filename)}
    if metadata is not None:
        form["metadata"] = json.dumps(metadata)
    # Encoded here, in memory: werkzeug's test client would spool a body over 500 KB into a
    # temporary file that it never closes (a ResourceWarning whenever the garbage collector finds it).
    boundary, body = encode_multipart(form)
    return client.post(
        f"/api/admin/models/{name}/versions",
        data=body,
        headers=ADMIN if headers is None else headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def store_files(app: Any) -> list[Path]:
    """The artifact files in an app's store."""
    objects = Path(app.extensions["maas"].settings.store_dir) / "objects"
    return sorted(p for p in objects.rglob("*") if p.is_file())


def model_count(client: Any) -> int:
    return len(client.get("/api/models").json)


# -- `maas serve` as a real process -----------------------------------------------------------
def upload_live(server: Server, name: str, payload: bytes, metadata: dict[str, Any] | None = None) -> requests.Response:
    """POST an artifact to a live server's upload endpoint."""
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    return server.post(
        f"/api/admin/models/{name}/versions",
        files={"file": ("model.joblib", payload, "application/octet-stream")},
        data=data,
        headers=ADMIN,
    )


@dataclass
class Live:
    """A running `maas serve` and where its model store is (one per module and database)."""

    server: Server
    store: Path
    database: str

    def url(self, path: str) -> str:
        return self.server.url + path


@contextlib.contextmanager
def live_server(
    kind: str, root: Path, database_url: str, *, workers: int = 2, log: str = "server.log", **variables: str
) -> Iterator[Live]:
    """`maas serve` on `database_url` with its store in root/store, started in root/cwd and
    ready, for the block; `variables` go into its environment (MAAS_ADMIN_TOKEN...).
    Servers started on one root share its store."""
    # gunicorn would put its control socket here: `maas serve` keeps it disabled.
    runtime_dir = root / "xdg-runtime"
    runtime_dir.mkdir(exist_ok=True)
    workdir = root / "cwd"
    workdir.mkdir(exist_ok=True)
    env = environment(MAAS_DATABASE_URL=database_url, MAAS_STORE_DIR=str(root / "store"), **variables)
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    server = launch(env=env, cwd=workdir, log=root / log, workers=workers)
    try:
        try:
            server.wait_ready()
        except ServerFailed as exc:
            pytest.fail(str(exc))
        yield Live(server, root / "store", kind)
    finally:
        server.stop()


def tracebacks_of_our_own(log: str) -> int:
    """Tracebacks in a server's log besides the models' own (each logged once under
    serving.runners.pool.MODEL_TRACEBACK): a failure of the service itself."""
    from serving.runners.pool import MODEL_TRACEBACK

    return log.count("Traceback (most recent call last)") - log.count(MODEL_TRACEBACK)
