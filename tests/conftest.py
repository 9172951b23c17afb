"""Fixtures: a database of each test's own (a copy of a migrated SQLite template always; of a
PostgreSQL template too for tests marked `postgresql`, when MAAS_TEST_DATABASE_URL is set), real
scikit-learn models trained once per session, the Flask app built per test, and `maas serve`.

Helpers that are not fixtures live in tests/support; every test's tier (unit, api, system) is the
directory it is in.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from serving.api.app import create_app
from serving.config import Settings
from tests.support import ADMIN_TOKEN, loans
from tests.support.databases import (
    migrated_postgres_template,
    migrated_sqlite_template,
    postgres_database,
    sqlite_copy,
)
from tests.support.live import Server, ServerFailed, launch
from tests.support.s3 import CREDENTIALS, S3Endpoint, moto_server

TIERS = ("unit", "api", "system")
# System tests whose outcome depends on timing (locks held for seconds, kills mid-request, relays
# cut, many concurrent requests): under pytest-xdist (a file's tests on one worker) they never run
# beside each other.
ONE_AT_A_TIME = {
    "test_races",
    "test_sqlite_lock",
    "test_db_outage",
    "test_crash",
    "test_runners_hostile",
    "test_deployment",
}


# -- tiers, scheduling and database variants -----------------------------------------------------
def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark each test with its tier: the directory under tests/ it lives in."""
    parts = item.path.relative_to(Path(__file__).parent).parts
    tier = parts[0] if parts and parts[0] in TIERS else None
    if tier is None:
        raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/api or tests/system")
    item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="module", autouse=True)
def one_at_a_time(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hold this run's lock (a file every xdist worker sees) through a timing-sensitive module.
    (xdist's own --dist loadgroup does not group under pytest 9: its nodeid suffix is ignored.)"""
    if request.path.stem not in ONE_AT_A_TIME:
        yield
        return
    with open(tmp_path_factory.getbasetemp().parent / "one-at-a-time.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every database test runs on SQLite; those marked `postgresql` (where the database's own
    behaviour can change the outcome: constraints, locks, transactions, types) on PostgreSQL too."""
    kinds = ["sqlite", "postgresql"] if metafunc.definition.get_closest_marker("postgresql") else ["sqlite"]
    names = [name for name in ("database_url", "empty_database_url") if name in metafunc.fixturenames]
    if names:  # a test that takes both gets both of one kind
        metafunc.parametrize(names, [[kind] * len(names) for kind in kinds], indirect=True, ids=kinds)


# -- databases ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    yield from migrated_postgres_template()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a migrated database of this test's own: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path / "registry.db")
    else:
        yield from postgres_database(template=request.getfixturevalue("postgres_template"))


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of this test's own (for tests of the migrations themselves)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        yield from postgres_database()


# -- the S3 endpoint ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """moto's server over real HTTP, one per test process; its credentials in this process's
    environment (boto3 reads them there, as it does in `maas serve`)."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
            yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_settings(s3: S3Endpoint, database_url: str, tmp_path: Path) -> Settings:
    """A test's settings with its store in a bucket of its own (and a local cache of its own)."""
    return Settings(
        database_url=database_url,
        store_url=f"s3://{s3.new_bucket()}/models",
        s3_endpoint_url=s3.url,
        store_cache_dir=str(tmp_path / "cache"),
        admin_token=ADMIN_TOKEN,
    )


# -- apps -------------------------------------------------------------------------------------
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


# -- models ---------------------------------------------------------------------------------
def _credit(encoder: OneHotEncoder) -> Pipeline:
    frame, target = loans()
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [("num", StandardScaler(), ["age", "income"]), ("cat", encoder, ["gender", "region"])]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    return model.fit(frame, target)


@pytest.fixture(scope="session")
def credit_pipeline() -> Pipeline:
    """A ColumnTransformer + OneHotEncoder + LogisticRegression pipeline fitted on a DataFrame;
    its encoder is strict (an unseen category is an error), so its inferred schema enforces `allowed`."""
    return _credit(OneHotEncoder())


@pytest.fixture(scope="session")
def lenient_credit_pipeline() -> Pipeline:
    """The same pipeline with OneHotEncoder(handle_unknown="ignore"): an unseen or missing category
    is all zeros, so its inferred categories accept unseen values."""
    return _credit(OneHotEncoder(handle_unknown="ignore"))


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
def mixed_pipeline() -> Pipeline:
    """A classifier over an integer (age), a number (income), a string (gender) and a boolean
    (member) feature: one of each V2 datatype (tests/api/test_v2.py, tests/system/test_v2_serve.py)."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50000, 15000, n),
            "gender": rng.choice(["female", "male"], n),
            "member": rng.choice([True, False], n),
        }
    )
    target = ((frame["income"] > 50000) ^ frame["member"]).astype(int)
    prepare = ColumnTransformer(
        [("cat", OneHotEncoder(), ["gender"])], remainder="passthrough", verbose_feature_names_out=False
    )
    return Pipeline([("prepare", prepare), ("clf", LogisticRegression(max_iter=2000))]).fit(frame, target)


@pytest.fixture(scope="session")
def numpy_model() -> LogisticRegression:
    """A model fitted on a bare numpy array: no feature_names_in_."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    return LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
