"""Prometheus metrics of the service (`GET /metrics`), with prometheus-client.

Under `maas serve` every gunicorn worker is a process of its own: the client library's
multiprocess mode keeps each worker's values in files of one directory (PROMETHEUS_MULTIPROC_DIR,
made before the workers fork and removed at exit by `maas serve`), and a scrape, answered by any
one worker, adds up every worker's. Without that variable (the Flask test client, `flask run`) the
values are this process's own.

No Flask here: the runner pool and the upload code count too.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# One prediction costs from ~0.1 ms (a compiled graph) to seconds (a big forest on a big batch).
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "maas_http_requests",
    "HTTP requests answered, by method, route template (the URL rule; 'unmatched' for no route) and status.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "maas_http_request_duration_seconds",
    "Time from the request reaching the app to its answer, by route template.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
PREDICTION_SECONDS = Histogram(
    "maas_prediction_duration_seconds",
    "Time one model call takes in its runner, round trip included, by model and version.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
PREDICTION_ROWS = Counter("maas_prediction_rows", "Rows predicted, by model and version.", ["model", "version"])
PREDICTION_FAILURES = Counter(
    "maas_prediction_failures",
    "Model calls that failed, by model, version and kind (model_error, timeout, runner_died).",
    ["model", "version", "kind"],
)
MODEL_LOADS = Counter("maas_model_loads", "Model versions loaded into a runner, by outcome (ok, failed).", ["outcome"])
MODEL_LOAD_SECONDS = Histogram(
    "maas_model_load_duration_seconds",
    "Time to start a runner and load a version into it.",
    buckets=_LOAD_BUCKETS,
)
CACHE_HITS = Counter("maas_model_cache_hits", "Predictions whose version was already loaded in this worker.")
CACHE_MISSES = Counter("maas_model_cache_misses", "Predictions whose version had to be loaded first.")
MODELS_IN_MEMORY = Gauge(
    "maas_models_in_memory",
    "Model versions loaded in runners, summed over live workers.",
    multiprocess_mode="livesum",
)
UPLOADS = Counter("maas_uploads", "Uploads answered, by outcome (created, refused, failed).", ["outcome"])
UPLOAD_BYTES = Counter("maas_upload_bytes", "Bytes of artifacts recorded as new versions.")
DATABASE_UNAVAILABLE = Counter(
    "maas_database_unavailable",
    "Requests answered 503 because the registry database could not be reached.",
)
DATABASE_OUTAGES = Counter(
    "maas_database_outages", "Times a worker found the registry database gone (an outage began)."
)


def exposition() -> bytes:
    """The text a scrape answers: every worker's values under `maas serve`, this process's otherwise."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(PROCESS_REGISTRY)


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit: a dead worker's live gauges stop counting (its counters stay)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
