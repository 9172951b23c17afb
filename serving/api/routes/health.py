"""Operations: liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify
from flask.views import MethodView

from serving.api.blueprint import Blueprint
from serving.api.context import runtime
from serving.api.errors import error_response
from serving.api.schemas import HealthSchema
from serving.telemetry import metrics

log = logging.getLogger(__name__)

blp = Blueprint("ops", __name__, url_prefix="/health", description="Health checks")


@blp.route("/live")
class Live(MethodView):
    @blp.response(200, HealthSchema)
    @blp.errors()
    def get(self) -> dict[str, Any]:
        """200 while the process runs"""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.alt_response(200, schema=HealthSchema, success=True, description="Ready")
    @blp.errors(503)
    def get(self) -> Response:
        """200 when the database and the model store answer, else 503"""
        problems = readiness_problems()
        if problems:
            return error_response(503, "Not ready: " + "; ".join(problems) + ".")
        return jsonify({"status": "ready"})


def readiness_problems() -> list[str]:
    """Why this worker is not ready (the database or the model store does not answer); [] when it is."""
    rt = runtime()
    problems = []
    try:
        rt.db.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means "not ready"
        log.warning("readiness: database: %s", exc)
        problems.append("the registry database does not answer")
    try:
        rt.store.check()
    except OSError as exc:
        log.warning("readiness: model store: %s", exc)
        problems.append("the model store is not writable")
    return problems


metrics_blp = Blueprint("metrics", __name__, description="Prometheus metrics")


@metrics_blp.route("/metrics")
class Metrics(MethodView):
    @metrics_blp.doc(
        responses={
            "200": {
                "description": "Prometheus text format (0.0.4): requests, latencies, rows and failures per route and "
                "model version, model loads, cache hits and misses, models in memory, upload bytes, database "
                "outages; the sum over every worker of `maas serve`.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    )
    @metrics_blp.errors()
    def get(self) -> Response:
        """Prometheus metrics"""
        return Response(metrics.exposition(), mimetype=None, content_type=metrics.CONTENT_TYPE)
