"""`maas serve` as a real process (gunicorn, 2 workers) spoken to over real HTTP."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from serving.operations.demo import DEMO_EXAMPLE, DEMO_MODEL
from tests.support import ADMIN, ADMIN_TOKEN, CREDIT_ROW, REPO, joblib_bytes
from tests.support import upload_live as upload
from tests.support.live import Server, environment

# A restart must keep everything the database holds: both databases.
pytestmark = pytest.mark.postgresql


def store_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# -- a registry that survives a restart --------------------------------------------------------
def test_restart_keeps_models_versions_aliases(
    serve: Callable[..., Server], database_url: str, tmp_path: Path, credit_pipeline: Any
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = environment(
        MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
        MAAS_DATABASE_URL=database_url,
        MAAS_STORE_DIR=str(tmp_path / "store"),
    )
    rows = [CREDIT_ROW, {"age": 61.0, "income": 30500.5, "gender": "female", "region": "east"}]
    expected = credit_pipeline.predict(pd.DataFrame(rows)).tolist()
    expected_proba = credit_pipeline.predict_proba(pd.DataFrame(rows))

    server = serve(env=env, cwd=workdir)
    first = upload(server, "credit", joblib_bytes(credit_pipeline), {"description": "v1", "example": CREDIT_ROW})
    assert first.status_code == 201, first.text
    assert first.headers["Location"].endswith("/api/models/credit/versions/1")
    second = upload(server, "credit", joblib_bytes(credit_pipeline, compress=3), {"description": "v2"})
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2
    alias = server.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=ADMIN)
    assert alias.status_code == 200, alias.text
    assert alias.json()["aliases"] == ["production"]

    before = server.post(
        "/api/predict",
        json={"model": "credit", "version": "production", "data": rows, "return_probabilities": True},
    )
    assert before.status_code == 200, before.text
    assert before.json()["version"] == 1
    assert before.json()["predictions"] == expected
    version_before = server.get("/api/models/credit/versions/1").json()
    assert server.stop() == 0, server.output()

    server = serve(env=env, cwd=workdir)
    model = server.get("/api/models/credit")
    assert model.status_code == 200, model.text
    assert model.json()["latest_version"] == 2
    assert model.json()["aliases"] == {"production": 1}
    assert [v["version"] for v in model.json()["versions"]] == [2, 1]
    assert server.get("/api/models/credit/versions/production").json() == version_before

    after = server.post(
        "/api/models/credit/versions/production/predict",
        json={"data": rows, "return_probabilities": True},
    )
    assert after.status_code == 200, after.text
    assert after.json() == before.json()
    for row, probabilities in zip(expected_proba, after.json()["probabilities"], strict=True):
        assert [probabilities[str(c)] for c in credit_pipeline.classes_] == pytest.approx(row.tolist())
    latest = server.post("/api/models/credit/predict", json={"data": CREDIT_ROW})
    assert latest.status_code == 200, latest.text
    assert latest.json() == {"model": "credit", "version": 2, "engine": "onnx", "predictions": expected[:1]}


# -- the demo, with no configuration at all -----------------------------------------------------
def test_demo_without_configuration(serve: Callable[..., Server], tmp_path: Path) -> None:
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = environment()

    server = serve("--demo", env=env, cwd=workdir)
    assert (workdir / "maas-data" / "registry.db").is_file()
    assert store_files(workdir / "maas-data" / "models"), "the demo artifact is not in ./maas-data/models"
    models = server.get("/api/models")
    assert models.status_code == 200, models.text
    assert [(m["name"], m["latest_version"]) for m in models.json()] == [(DEMO_MODEL, 1)]
    prediction = server.post("/api/predict", json={"model": DEMO_MODEL, "data": DEMO_EXAMPLE})
    assert prediction.status_code == 200, prediction.text
    assert prediction.json()["model"] == DEMO_MODEL
    assert prediction.json()["version"] == 1
    assert len(prediction.json()["predictions"]) == 1
    seed = server.post("/api", json={"data": DEMO_EXAMPLE})
    assert seed.status_code == 200, seed.text
    assert seed.json() == prediction.json()
    admin = upload(server, "other", b"not a model")
    assert admin.status_code == 403, admin.text
    assert server.stop() == 0, server.output()

    server = serve("--demo", env=env, cwd=workdir)
    versions = server.get(f"/api/models/{DEMO_MODEL}/versions")
    assert versions.status_code == 200, versions.text
    assert [v["version"] for v in versions.json()] == [1]
    assert [m["name"] for m in server.get("/api/models").json()] == [DEMO_MODEL]


# -- an unsafe pickle never runs -----------------------------------------------------------------
class OpenOnLoad:
    """Unpickling this calls io.open(marker, "w"): the file appearing means the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class ShellOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def builtins_open_pickle(marker: Path, credit_pipeline: Any) -> bytes:
    # Written by hand: pickle itself would name io.open, not builtins.open.
    return b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR."


def joblib_beside_real_model(marker: Path, credit_pipeline: Any) -> bytes:
    return joblib_bytes([credit_pipeline, OpenOnLoad(marker)])


def os_system_pickle(marker: Path, credit_pipeline: Any) -> bytes:
    return pickle.dumps(ShellOnLoad(marker), protocol=2)


@pytest.mark.parametrize(
    ("make_payload", "offending"),
    [
        (builtins_open_pickle, "builtins.open"),
        (joblib_beside_real_model, "io.open"),
        (os_system_pickle, f"{os.system.__module__}.system"),
    ],
    ids=["pickle-builtins.open", "joblib-io.open", "pickle-os.system"],
)
def test_unsafe_pickle_is_refused_and_never_runs(
    serve: Callable[..., Server],
    database_url: str,
    tmp_path: Path,
    credit_pipeline: Any,
    make_payload: Callable[[Path, Any], bytes],
    offending: str,
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    store = tmp_path / "store"
    marker = tmp_path / "payload-ran"
    env = environment(MAAS_ADMIN_TOKEN=ADMIN_TOKEN, MAAS_DATABASE_URL=database_url, MAAS_STORE_DIR=str(store))
    server = serve(env=env, cwd=workdir)
    good = upload(server, "credit", joblib_bytes(credit_pipeline))
    assert good.status_code == 201, good.text
    registry_before = server.get("/api/models").json()
    store_before = store_files(store)

    refused = upload(server, "credit", make_payload(marker, credit_pipeline))
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == 422
    assert offending in refused.text, body
    refused_new = upload(server, "evil", make_payload(marker, credit_pipeline))
    assert refused_new.status_code == 422, refused_new.text

    time.sleep(0.5)  # give a payload that did run (e.g. through a shell) time to show
    assert not marker.exists(), "the pickle's payload ran"
    assert server.get("/api/models").json() == registry_before
    assert server.get("/api/models/evil").status_code == 404
    assert server.get("/api/models/credit/versions/2").status_code == 404
    assert store_files(store) == store_before
    assert server.process.poll() is None


# -- a model's exception, for whoever runs the service -------------------------------------------
def test_a_models_exception_is_logged_with_its_request_id_model_version_and_traceback(
    serve: Callable[..., Server], database_url: str, tmp_path: Path
) -> None:
    from tests.estimators.fixture_models import FussyRegressor

    env = environment(
        MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
        MAAS_DATABASE_URL=database_url,
        MAAS_STORE_DIR=str(tmp_path / "store"),
        MAAS_TRUSTED_MODULES="tests",  # lets the test model load
        PYTHONPATH=str(REPO),
    )
    server = serve(env=env, cwd=tmp_path)
    fussy = FussyRegressor().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert upload(server, "fussy", joblib_bytes(fussy)).status_code == 201
    r = server.post(
        "/api/models/fussy/predict",
        json={"data": {"a": [1, 99], "b": [1, 2]}},
        headers={"X-Request-ID": "trace-e2e-7"},
    )
    assert r.status_code == 422 and r.headers["X-Request-ID"] == "trace-e2e-7"
    assert (
        r.json()["message"]
        == "Model Version 1 of 'fussy' failed on this input (ValueError: a row sums to more than 100)."
    )
    assert "Traceback" not in r.text
    deadline = time.monotonic() + 10
    while "trace-e2e-7" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log.read_text()
    [line] = [line for line in log.splitlines() if "[trace-e2e-7]" in line]
    assert "WARNING serving.runners.pool" in line and "Version 1 of 'fussy' raised ValueError" in line, line
    after = log[log.index(line) :]
    assert "Traceback (most recent call last)" in after and "in _refuse_large" in after, after[:3000]
