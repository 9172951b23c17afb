"""Counting and timing every request for `GET /metrics` (serving.telemetry.metrics holds the metrics)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from serving.telemetry import metrics

UNMATCHED = "unmatched"


def register_request_metrics(app: Flask) -> None:
    @app.before_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        # The URL rule, never the path: a path holds names and selectors without bound.
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        metrics.REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response
