"""Fixtures: a fresh database per test (SQLite file always, PostgreSQL when configured),
real scikit-learn models trained once per session, and the Flask app built per test."""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from serving.api.app import create_app
from serving.config import Settings
from tests.live import Server, ServerFailed, environment, launch

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PG_ENV = "MAAS_TEST_DATABASE_URL"


# -- databases ------------------------------------------------------------------------------
def _postgres_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own, created here and dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL runs skipped")
    name = f"maas_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of this test's own: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        store_dir=str(tmp_path / "store"),
        admin_token=ADMIN_TOKEN,
    )


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Any]:
    """Build apps on this test's database and store (e.g. with other settings); disposed after."""
    apps = []

    def build(**overrides: Any) -> Any:
        from dataclasses import replace

        app = create_app(replace(settings, **overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["maas"].close()


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


# -- `maas serve` as a real process -----------------------------------------------------------
@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `maas serve` (2 workers, 127.0.0.1, a free port) and wait until ready; killed after."""
    servers: list[Server] = []

    # gunicorn would put its control socket here: it must stay disabled (one path per machine).
    runtime_dir = tmp_path / "xdg-runtime"
    runtime_dir.mkdir()

    def start(*args: str, env: dict[str, str], cwd: Path) -> Server:
        log = tmp_path / f"server-{len(servers)}.log"
        server = launch(*args, env={**env, "XDG_RUNTIME_DIR": str(runtime_dir)}, cwd=cwd, log=log)
        servers.append(server)
        try:
            server.wait_ready()
        except ServerFailed as exc:
            pytest.fail(str(exc))
        assert f"Listening at: {server.url}" in log.read_text(errors="replace"), server.output()
        assert not list(runtime_dir.iterdir()), "gunicorn's control socket is enabled"
        assert "Control socket" not in log.read_text(errors="replace"), server.output()
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class Live:
    """A running `maas serve` and where its model store is (one per module and database)."""

    server: Server
    store: Path
    database: str

    def url(self, path: str) -> str:
        return self.server.url + path


@contextlib.contextmanager
def database_of_its_own(kind: str, root: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file under `root`, or a PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{root / 'registry.db'}"
    else:
        yield from _postgres_database()


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


# -- models ---------------------------------------------------------------------------------
def loans(rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
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


@pytest.fixture(scope="session")
def credit_pipeline() -> Pipeline:
    """A ColumnTransformer + OneHotEncoder + LogisticRegression pipeline fitted on a DataFrame."""
    frame, target = loans()
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["gender", "region"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    return model.fit(frame, target)


@pytest.fixture(scope="session")
def regressor() -> LinearRegression:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x1": rng.normal(size=200), "x2": rng.normal(size=200)})
    return LinearRegression().fit(frame, 3 * frame["x1"] - 2 * frame["x2"] + 1)


@pytest.fixture(scope="session")
def string_classifier() -> RandomForestClassifier:
    """A classifier whose class labels are strings."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"height": rng.normal(170, 10, 200), "weight": rng.normal(70, 12, 200)})
    labels = np.where(frame["weight"] / (frame["height"] / 100) ** 2 > 25, "heavy", "light")
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(frame, labels)


@pytest.fixture(scope="session")
def numpy_model() -> LogisticRegression:
    """A model fitted on a bare numpy array: no feature_names_in_."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    return LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))


def joblib_bytes(model: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, **kwargs)
    return buffer.getvalue()


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


CREDIT_ROW = {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}
