"""gunicorn, configured from code: the options `maas serve` runs with, and the worker classes that
answer the requests gunicorn refuses itself in the contract's JSON error shape."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from ssl import SSLError
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http import errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from serving.config import Settings
from serving.telemetry.logs import write_access_line

SYNC_WORKER = "serving.cli.server.JsonErrorSyncWorker"
THREAD_WORKER = "serving.cli.server.JsonErrorThreadWorker"


def gunicorn_options(settings: Settings, host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """The gunicorn settings `maas serve` runs with."""
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": THREAD_WORKER if threads > 1 else SYNC_WORKER,
        "timeout": settings.worker_timeout,
        "preload_app": settings.preload,
        "graceful_timeout": 30,
        # No gunicorn access log: the app writes its own (serving.api.accesslog, one JSON line per
        # request), and gunicorn's would log the raw request line, query string and all. The
        # requests gunicorn refuses itself get a line of the same shape (JsonErrors.handle_error).
        "accesslog": None,
        "errorlog": "-",
        # gunicorn's control socket is one path shared by every instance on the machine.
        "control_socket_disable": True,
        "post_worker_init": _worker_started,
        "child_exit": _worker_exited,
    }


class GunicornServer(BaseApplication):
    """gunicorn, configured from code, serving create_app in each worker (or once, before the
    workers fork, with preload_app)."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from serving.api.app import create_app

        return create_app(self.settings, upgrade_db=False)


def _worker_started(worker: Any) -> None:
    """In each worker, its app loaded: connections inherited from a preloading master are left to
    it (SQLAlchemy's recipe for forks), and the zygote starts importing while the worker starts."""
    runtime = worker.wsgi.extensions["maas"]
    runtime.db.engine.dispose(close=False)
    runtime.runners.warm()


def _worker_exited(server: Any, worker: Any) -> None:
    """In the master, a worker gone: its live gauges (models in memory) stop counting."""
    from serving.telemetry.metrics import worker_exited

    worker_exited(worker.pid)


# -- gunicorn's own refusals, in the contract's shape -------------------------------------------
# What gunicorn answers for the requests it cannot parse (gunicorn.workers.base.Worker.handle_error):
# exception -> (status, reason, message format); any other ParseException is a 400 with its text.
_REFUSALS: dict[type[BaseException], tuple[int, str, str]] = {
    errors.InvalidRequestLine: (400, "Bad Request", "Invalid Request Line '{}'"),
    errors.InvalidRequestMethod: (400, "Bad Request", "Invalid Method '{}'"),
    errors.InvalidHTTPVersion: (400, "Bad Request", "Invalid HTTP Version '{}'"),
    errors.UnsupportedTransferCoding: (501, "Not Implemented", "{}"),
    errors.LimitRequestLine: (414, "URI Too Long", "{}"),
    errors.LimitRequestHeaders: (431, "Request Header Fields Too Large", "Error parsing headers: '{}'"),
    errors.InvalidProxyLine: (400, "Bad Request", "'{}'"),
    errors.ForbiddenProxyRequest: (403, "Forbidden", "Request forbidden"),
    SSLError: (403, "Forbidden", "'{}'"),
}
for _name, _answer in (
    ("ConfigurationProblem", (500, "Internal Server Error", "{}")),
    ("ExpectationFailed", (417, "Expectation Failed", "{}")),
):
    if hasattr(errors, _name):  # not in every gunicorn that setup.cfg allows
        _REFUSALS[getattr(errors, _name)] = _answer
# Headers the application tried to send: the application's fault, a 500 like any other (not in
# every gunicorn that setup.cfg allows).
_APPLICATION_FAULTS = tuple(
    getattr(errors, name) for name in ("InvalidResponseHeader", "InvalidResponseHeaderName") if hasattr(errors, name)
)


def refusal(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, reason, message) for a request gunicorn refuses, None for a server-side failure."""
    if isinstance(exc, _APPLICATION_FAULTS):
        return None
    for kind, (status, reason, message) in _REFUSALS.items():
        if isinstance(exc, kind):
            return status, reason, message.format(exc)
    if isinstance(exc, errors.ParseException):
        return 400, "Bad Request", str(exc)
    return None


def json_error(status: int, reason: str, message: str, *, v2: bool = False) -> tuple[bytes, bytes]:
    """The head and body of an HTTP/1.1 answer in the contract's error shape, or the Open Inference
    Protocol's {"error": ...} for a request under /v2 (`v2`) (connection closed)."""
    text = message if status < 500 and message else "The request could not be handled."
    body = json.dumps({"error": text} if v2 else {"code": status, "status": reason, "message": text}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1"), body


class JsonErrors:
    """handle_error for gunicorn workers (the hook gunicorn's workers leave to subclasses): log as
    gunicorn does, then answer JSON instead of gunicorn's HTML page."""

    log: Any
    cfg: Any

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        request_start = datetime.now(UTC)
        started = time.perf_counter()
        addr = addr or ("", -1)  # a unix socket
        answer = refusal(exc)
        if answer is not None:
            status, reason, message = answer
            self.log.warning(f"Invalid request from ip={addr[0]}: {exc}")
            if req is None and isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName)):
                req = getattr(exc, "req", None)  # for the access log
        else:
            if hasattr(req, "uri") and hasattr(req, "method"):
                self.log.exception("Error handling request %s %s", req.method, req.uri)
            elif hasattr(req, "uri"):
                self.log.exception("Error handling request %s", req.uri)
            else:
                self.log.exception("Error handling request (no URI read)")
            status, reason, message = 500, "Internal Server Error", ""
        path = getattr(req, "path", None) or ""
        head, body = json_error(status, reason, message, v2=path == "/v2" or path.startswith("/v2/"))
        # No route matched (none was tried) and no request id was given (no X-Request-ID is sent).
        write_access_line(
            request_start.isoformat(timespec="milliseconds"),
            getattr(req, "method", None),
            None,
            status,
            round((time.perf_counter() - started) * 1000, 3),
            None,
        )
        try:
            util.write_nonblock(client, head + body)
        except Exception:  # noqa: BLE001 - the client is gone: nothing to answer
            self.log.debug("Failed to send error message.")


class JsonErrorSyncWorker(JsonErrors, SyncWorker):
    """gunicorn's sync worker (`maas serve` with one thread per worker)."""


class JsonErrorThreadWorker(JsonErrors, ThreadWorker):
    """gunicorn's gthread worker (`maas serve --threads N`)."""
