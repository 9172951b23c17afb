"""Strict JSON request bodies: no NaN/Infinity, bounded depth, an object at the top."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, NoReturn

import flask
from flask.json.provider import DefaultJSONProvider
from gunicorn.http.errors import ParseException
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict

from serving.api.errors import RequestError

MAX_DEPTH = 64


class InvalidJSON(ValueError):
    """Text that is not strict JSON (message safe to show)."""


def _reject_constant(token: str) -> NoReturn:
    raise InvalidJSON(f"not valid JSON: {token} is not a JSON value")


def _check_depth(value: Any) -> None:
    # Iterative, so a deep document cannot exhaust the stack here either.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def loads_strict(raw: str | bytes) -> Any:
    """Parse JSON refusing NaN/Infinity and nesting deeper than MAX_DEPTH; raises InvalidJSON."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except InvalidJSON:
        raise
    except RecursionError:
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise InvalidJSON("not valid JSON: it is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError:  # Python's bound on int(): reading a longer number would be quadratic
        raise InvalidJSON("not accepted: a number has more than 4300 digits") from None
    # No deeper than the number of brackets: most bodies (columns of any length) skip the walk.
    brackets = raw.count("[") + raw.count("{") if isinstance(raw, str) else raw.count(b"[") + raw.count(b"{")
    if brackets > MAX_DEPTH:
        _check_depth(value)
    return value


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; raises RequestError(400) for anything else."""
    if not raw.strip():
        raise RequestError(400, "The request body is empty: send a JSON object.")
    try:
        value = loads_strict(raw)
    except InvalidJSON as exc:
        raise RequestError(400, f"The body is {exc}.") from None
    if not isinstance(value, dict):
        raise RequestError(400, "The JSON body must be an object.")
    return value


def read_body(req: flask.Request) -> bytes:
    """The request body, at most `req.max_content_length` bytes; raises RequestError(413) beyond.

    A Content-Length over the limit is refused before a byte is read. A body without one
    (chunked) is read up to the limit, where werkzeug stops without an error: one byte more
    from the server's stream tells whether the body went on.
    """
    limit = req.max_content_length
    if limit is not None and req.content_length is not None and req.content_length > limit:
        raise RequestError(413, f"The body is larger than the limit of {limit} bytes.")
    with broken_framing_is_400():
        raw = req.get_data(cache=True)
        if limit is not None and req.content_length is None and len(raw) >= limit and req.environ["wsgi.input"].read(1):
            raise RequestError(413, f"The body is larger than the limit of {limit} bytes.")
    return raw


@contextlib.contextmanager
def broken_framing_is_400() -> Iterator[None]:
    """gunicorn reads a chunked body as the app asks for it, so a chunk size that is not hex
    (or a chunk without its CRLF) is raised in the middle of the app's read: a 400 here."""
    try:
        yield
    except ParseException:
        raise RequestError(400, "The body's chunked transfer encoding is malformed.") from None


def is_json_mimetype(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


class StrictJSONParser(FlaskParser):
    """webargs' parser, reading JSON bodies with parse_json_body (415 for other content types).

    Adds the location "multipart": the files and form fields of one multipart body.
    """

    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}  # noqa: RUF012 - as webargs declares it

    def load_multipart(self, req: flask.Request, schema: Any) -> Any:
        with broken_framing_is_400():
            return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)

    def load_json(self, req: flask.Request, schema: Any) -> Any:
        if req.mimetype and not is_json_mimetype(req.mimetype):
            raise RequestError(415, f"Send the body as application/json, not {req.mimetype}.")
        return parse_json_body(read_body(req))


class JSONProvider(DefaultJSONProvider):
    """Responses keep their key order (no sorting costs on the hot path)."""

    sort_keys = False
    compact = True
