"""The access log (API v1.1): one JSON line per request on the `maas.access` logger (see
serving.telemetry.logs.write_access_line), with the route's template, the status, the duration, the
request id, and the model and version when the request used one.

What a line never holds: the raw path or query string (a model name in a path is any text the
client sent, and a query string can carry anything), a header (tokens, Basic credentials and
their user), a body. `route` is the URL rule (`/api/models/<name>/predict`), or null when no
rule matched; `model` and `version` are set only by `note_model`, which the views call with
what the registry resolved: a name that exists and the version number it resolved to.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from flask import Flask, Response, g, request

from serving.telemetry.logs import access_log, write_access_line


def note_model(name: str, version: int | None = None) -> None:
    """Name the model (and the version number resolved, when there is one) this request used,
    for its access-log line. Call it once the registry has resolved them (any blueprint may)."""
    g.access_model = name
    g.access_version = version


def register_access_log(app: Flask) -> None:
    """Time each request (first of the before_request functions) and log it (last of the
    after_request ones, so the request id is set)."""

    @app.before_request
    def _started() -> None:
        g.access_started = (time.time(), time.perf_counter())

    @app.after_request
    def _access(response: Response) -> Response:
        # 30 to 40 us a request with the line written (a quarter of it json.dumps, most of the
        # rest the logging module's record), under 1 us when the logger is off.
        if not access_log.isEnabledFor(logging.INFO):
            return response
        wall, started = g.get("access_started") or (time.time(), time.perf_counter())
        rule = request.url_rule
        write_access_line(
            datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds"),
            request.method,
            rule.rule if rule is not None else None,
            response.status_code,
            round((time.perf_counter() - started) * 1000, 3),
            g.get("request_id"),
            g.get("access_model"),
            g.get("access_version"),
        )
        return response
