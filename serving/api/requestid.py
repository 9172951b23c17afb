"""Request ids (API v1.1): every response carries `X-Request-ID`, the client's own when it is
1 to 128 characters of `[A-Za-z0-9._-]`, otherwise a new one; every log record made while a
request is handled carries it as `request_id` ("-" outside a request)."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from serving.telemetry.logs import install_log_record_ids

HEADER = "X-Request-ID"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def register_request_ids(app: Flask) -> None:
    """Give each request its id (first of the app's before_request functions) and echo it back."""

    @app.before_request
    def _request_id() -> None:
        sent = request.headers.get(HEADER, "")
        g.request_id = sent if _CLIENT_ID.fullmatch(sent) else uuid.uuid4().hex

    @app.after_request
    def _echo(response: Response) -> Response:
        # A request refused before any before_request ran (a routing 404 still runs them) has none yet.
        if "request_id" not in g:
            g.request_id = uuid.uuid4().hex
        response.headers[HEADER] = g.request_id
        return response

    # Every logger's records, whichever handler writes them (the CLI's, pytest's caplog, gunicorn's).
    install_log_record_ids()
