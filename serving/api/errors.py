"""Every error, from every route, as the contract's JSON: {code, status, message[, errors]}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, has_request_context, jsonify, request
from flask_smorest import Api
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from model_store.errors import (
    ArtifactTooLarge,
    ArtifactUnavailable,
    InvalidArtifact,
    ModelStoreError,
    PredictionFailed,
    RunnerFailed,
    RunnerTimedOut,
    StoreWriteFailed,
)
from registry.db import is_unreachable
from registry.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    RegistryError,
)
from serving.api.schemas import ErrorSchema
from serving.inference.errors import InvalidRequest, InvalidRows, TooManyRows
from serving.telemetry import metrics

log = logging.getLogger(__name__)


class RequestError(Exception):
    """An error of the HTTP layer itself, with the status it answers (auth, body parsing, media
    type, body size); the layers below raise domain errors instead."""

    def __init__(self, code: int, message: str, errors: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}


# Headers a client needs to act on the error; everything else of werkzeug's is dropped.
_PASSED_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")
# A 503 for an unreachable database is brief: the pool reconnects by itself.
_RETRY_SOON = {"Retry-After": "1"}


def is_v2_path(path: str) -> bool:
    """Whether `path` is under the Open Inference Protocol's /v2, whose errors have its own shape."""
    return path == "/v2" or path.startswith("/v2/")


def error_response(code: int, message: str, errors: Any = None, headers: dict[str, str] | None = None) -> Response:
    """The contract's error JSON; under /v2, the Open Inference Protocol's {"error": message}
    (the detail of `errors` written into the message, the protocol having no place for it)."""
    payload: dict[str, Any]
    if has_request_context() and is_v2_path(request.path):
        payload = {"error": v2_error_message(message, errors)}
    else:
        payload = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Unknown Error"), "message": message}
        if errors:
            payload["errors"] = errors
    response = jsonify(payload)
    response.status_code = code
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


V2_DETAIL_SHOWN = 10


def v2_error_message(message: str, errors: Any) -> str:
    """`message`, then up to V2_DETAIL_SHOWN of the leaf messages of `errors`, each after its path."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", errors)]
    while stack and len(found) <= V2_DETAIL_SHOWN:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(node.items()))
        elif isinstance(node, list) and not all(isinstance(v, str) for v in node):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in reversed(list(enumerate(node))))
        elif node:
            text = " ".join(node) if isinstance(node, list) else str(node)
            if text in message:  # said already
                continue
            # The contract's locations (json, json.data) say nothing to a V2 client.
            path = path.removeprefix("json").removeprefix(".data").removeprefix(".")
            found.append(f"{path}: {text.rstrip('.')}" if path else text.rstrip("."))
    if not found:
        return message
    detail = "; ".join(found[:V2_DETAIL_SHOWN]) + ("; ..." if len(found) > V2_DETAIL_SHOWN else "")
    if message.endswith(": see errors."):  # there are no `errors` here: the detail takes their place
        return f"{message.removesuffix(' see errors.')} {detail}"
    return f"{message} ({detail})"


def _http_exception(error: HTTPException) -> Response:
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message")
    if not message:
        if errors and code == 422:
            message = "The request is invalid: see errors."
        elif errors and code == 400:
            message = "The request is malformed: see errors."
        else:
            message = error.description or HTTP_STATUS_CODES.get(code, "Error")
    headers = {k: v for k, v in error.get_headers() if k in _PASSED_HEADERS}
    headers.update(data.get("headers") or {})
    if code >= 500:
        message = "Internal server error."
    return error_response(code, message, errors, headers)


class MaasApi(Api):
    """flask-smorest's Api, with `message` on every error (its own handler omits it on 404/405).

    No catch-all `default` response in the OpenAPI document: each operation lists the statuses
    it can really answer (serving.api.blueprint.Blueprint.errors), so clients and fuzzers can hold
    us to them.
    """

    DEFAULT_ERROR_RESPONSE_NAME = None
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Response:
        return _http_exception(error)


_REGISTRY_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, DatabaseUnavailable: 503}
_STORE_STATUS = {
    ArtifactTooLarge: 413,
    ArtifactUnavailable: 503,
    StoreWriteFailed: 503,
    RunnerFailed: 503,
    RunnerTimedOut: 504,
    PredictionFailed: 422,
    InvalidArtifact: 422,
}


def registry_error_status(error: RegistryError) -> int:
    """The HTTP status a domain error of the registry answers (the pages answer it too)."""
    return next((c for cls, c in _REGISTRY_STATUS.items() if isinstance(error, cls)), 422)


def _registry_error(error: RegistryError) -> Response:
    code = registry_error_status(error)
    if isinstance(error, DatabaseUnavailable):
        metrics.DATABASE_UNAVAILABLE.inc()
    return error_response(code, error.message, error.errors, _RETRY_SOON if code == 503 else None)


def _store_error(error: ModelStoreError) -> Response:
    code = next((c for cls, c in _STORE_STATUS.items() if isinstance(error, cls)), 422)
    if isinstance(error, StoreWriteFailed):  # the disk's state, for whoever runs the server
        log.error("the model store refused an upload: %s", error.__cause__, exc_info=error)
    offending = getattr(error, "offending", None)
    return error_response(code, error.message, {"artifact": offending} if offending else None)


def _request_error(error: RequestError) -> Response:
    return error_response(error.code, error.message, error.errors, error.headers)


def _invalid_rows(error: InvalidRows) -> Response:
    # Every route that predicts takes the rows as the JSON body's `data`.
    return error_response(422, error.message, {"json": {"data": error.errors}})


def _invalid_request(error: InvalidRequest) -> Response:
    return error_response(422, error.message, {"json": error.errors})


def _too_many_rows(error: TooManyRows) -> Response:
    return error_response(413, error.message)


def _database_error(error: DBAPIError | PoolTimeout) -> Response:
    if is_unreachable(error):
        metrics.DATABASE_UNAVAILABLE.inc()
        log.warning("database unavailable: %s", getattr(error, "orig", None) or type(error).__name__)
        return error_response(503, "The registry database is unavailable; try again shortly.", headers=_RETRY_SOON)
    log.exception("database error")
    return error_response(500, "Internal server error.")


def _unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return _http_exception(error)
    log.exception("unhandled error")
    return error_response(500, "Internal server error.")


def register_error_handlers(app: Flask) -> None:
    """Map domain errors to HTTP once; nothing else in serving/ reshapes errors."""
    app.register_error_handler(RegistryError, _registry_error)
    app.register_error_handler(ModelStoreError, _store_error)
    app.register_error_handler(RequestError, _request_error)
    app.register_error_handler(InvalidRows, _invalid_rows)
    app.register_error_handler(InvalidRequest, _invalid_request)
    app.register_error_handler(TooManyRows, _too_many_rows)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(PoolTimeout, _database_error)
    app.register_error_handler(Exception, _unexpected)
