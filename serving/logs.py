"""Log records that say which request they were written for (no Flask import here: the CLI
installs this before it knows whether it will serve)."""

from __future__ import annotations

import logging
import sys
from typing import Any

NO_REQUEST = "-"


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
