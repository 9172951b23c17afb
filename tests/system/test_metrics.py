"""GET /metrics under `maas serve` with several gunicorn workers: every worker's counts add up in
every scrape, whichever worker answers it (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ADMIN_TOKEN, CREDIT_ROW, joblib_bytes
from tests.support import upload_live as upload
from tests.support.live import Server, environment

pytestmark = pytest.mark.postgresql

PREDICT_ROUTE = "/api/models/<name>/predict"
WORKERS = 3


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A connection of its own: gunicorn hands it to whichever worker accepts it first.
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def pids_counting(directory: Path, kind: str) -> set[int]:
    return {int(m[1]) for p in directory.iterdir() if (m := re.fullmatch(rf"{kind}_(\d+)\.db", p.name))}


def test_counts_add_up_over_every_worker(
    serve: Callable[..., Server], database_url: str, tmp_path: Path, credit_pipeline: Any
) -> None:
    metrics_dir = tmp_path / "prometheus"
    (metrics_dir / "stale").mkdir(parents=True)
    (metrics_dir / "counter_999999.db").write_bytes(b"a previous run's values")
    env = environment(MAAS_ADMIN_TOKEN=ADMIN_TOKEN, MAAS_DATABASE_URL=database_url, MAAS_STORE_DIR=str(tmp_path / "s"))
    server = serve("--workers", str(WORKERS), env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, cwd=tmp_path)
    assert not (metrics_dir / "counter_999999.db").exists(), "a previous run's values were kept"
    created = upload(server, "credit", joblib_bytes(credit_pipeline))
    assert created.status_code == 201, created.text

    rows = 0
    for i in range(60):
        batch = [CREDIT_ROW] * (1 + i % 3)
        r = requests.post(server.url + "/api/models/credit/predict", json={"data": batch}, timeout=30)
        assert r.status_code == 200, r.text
        rows += len(batch)
    assert len(pids_counting(metrics_dir, "counter")) >= 2, "the predictions did not reach several workers"

    for _ in range(6):  # whichever worker answers, the same sums
        samples = scrape(server)
        assert value(samples, "maas_http_requests_total", method="POST", route=PREDICT_ROUTE, status="200") == 60
        assert value(samples, "maas_http_request_duration_seconds_count", route=PREDICT_ROUTE) == 60
        assert value(samples, "maas_prediction_rows_total", model="credit", version="1") == rows
        assert value(samples, "maas_prediction_duration_seconds_count", model="credit", version="1") == 60
        hits = value(samples, "maas_model_cache_hits_total")
        misses = value(samples, "maas_model_cache_misses_total")
        assert hits + misses == 60 and 1 <= misses <= WORKERS
        # A miss is a load; the uploading worker serves from the runner that tried the upload.
        assert value(samples, "maas_model_loads_total", outcome="ok") == misses
        assert value(samples, "maas_models_in_memory") in (misses, misses + 1)
        assert value(samples, "maas_uploads_total", outcome="created") == 1
        assert value(samples, "maas_upload_bytes_total") == created.json()["size_bytes"]

    # A worker killed: its models in memory stop counting (gunicorn's child_exit), its counts stay.
    before = scrape(server)
    holding = pids_counting(metrics_dir, "gauge_livesum") - {server.process.pid}
    victim = max(holding)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while victim in pids_counting(metrics_dir, "gauge_livesum") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in pids_counting(metrics_dir, "gauge_livesum"), server.output()
    after = scrape(server)
    assert value(after, "maas_models_in_memory") == value(before, "maas_models_in_memory") - 1
    assert value(after, "maas_http_requests_total", method="POST", route=PREDICT_ROUTE, status="200") == 60
    assert value(after, "maas_prediction_rows_total", model="credit", version="1") == rows


def test_maas_serve_makes_and_removes_its_metrics_directory(
    serve: Callable[..., Server], database_url: str, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = environment(MAAS_DATABASE_URL=database_url, MAAS_STORE_DIR=str(tmp_path / "s"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = serve(env={**env, "TMPDIR": str(scratch)}, cwd=tmp_path)
    [made] = list(scratch.glob("maas-metrics-*"))
    assert requests.get(server.url + "/health/live", timeout=10).status_code == 200
    samples = scrape(server)
    assert value(samples, "maas_http_requests_total", method="GET", route="/health/live", status="200") >= 1
    assert any(made.iterdir())
    assert server.stop() == 0
    assert not made.exists(), "maas serve left its metrics directory behind"
