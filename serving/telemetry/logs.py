"""Log records that say which request they were written for (no Flask import here: the CLI
installs this before it knows whether it will serve)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

NO_REQUEST = "-"
# The access log (API v1.1): one JSON object per line per request, never a token, payload,
# query string or credential's user. `maas serve` writes it to stderr (install_access_log).
ACCESS_LOGGER = "maas.access"
access_log = logging.getLogger(ACCESS_LOGGER)


def current_request_id() -> str:
    """The X-Request-ID of the request being handled (serving.api.requestid sets it), or "-"."""
    flask = sys.modules.get("flask")  # not imported: no request can be under way
    if flask is None or not flask.has_request_context():
        return NO_REQUEST
    return str(flask.g.get("request_id", NO_REQUEST))


def install_log_record_ids() -> None:
    """Make every LogRecord carry `request_id`, whichever handler writes it (the CLI's, gunicorn's,
    pytest's caplog); once per process."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "maas_request_ids", False):
        return

    def with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = current_request_id()
        return record

    with_request_id.maas_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(with_request_id)


def write_access_line(
    time: str,
    method: str | None,
    route: str | None,
    status: int,
    duration_ms: float,
    request_id: str | None,
    model: str | None = None,
    version: int | None = None,
) -> None:
    """Log one request's line on `maas.access`: JSON with exactly these keys (model and version
    only when the request used one). `route` is the URL rule's template, never the path sent."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    line: dict[str, Any] = {
        "time": time,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "request_id": request_id,
    }
    if model is not None:
        line["model"] = model
        line["version"] = version
    access_log.info(json.dumps(line, separators=(",", ":")))


def install_access_log(stream: Any = None) -> None:
    """Write `maas.access` lines as they are (no prefix: each line is one JSON object) to
    `stream` (stderr), whatever the root logger's format and level; once per process."""
    if any(getattr(h, "maas_access", False) for h in access_log.handlers):
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.maas_access = True  # type: ignore[attr-defined]
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
