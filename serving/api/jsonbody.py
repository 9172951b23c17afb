"""Strict JSON request bodies: no NaN/Infinity, bounded depth, an object at the top."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import flask
import marshmallow as ma
from flask.json.provider import DefaultJSONProvider
from gunicorn.http.errors import ParseException
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict

from serving.api.csvbody import CSV_MIMETYPE, parse_csv, return_probabilities_query
from serving.api.errors import RequestError
from serving.api.schemas import FieldProblem
from serving.api.strictjson import InvalidJSON, loads_strict


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


# Where the contract's `errors` name a location: a multipart body's fields under "form", a JSON body's under "json".
_ERRORS_KEY = {"multipart": "form", "json_or_csv": "json"}


class StrictJSONParser(FlaskParser):
    """webargs' parser, reading JSON bodies with parse_json_body (415 for other content types).

    Adds the location "multipart": the files and form fields of one multipart body.
    """

    __location_map__ = {  # noqa: RUF012 - as webargs declares it
        **FlaskParser.__location_map__,
        "multipart": "load_multipart",
        "json_or_csv": "load_json_or_csv",
    }

    def load_querystring(self, req: flask.Request, schema: Any) -> Any:
        """The query string; a parameter given more than once where the schema takes one value is
        a 422 naming it (webargs alone would take the first and drop the rest, so that
        `?force=true&force=maybe` meant true)."""
        proxy = self._makeproxy(req.args, schema)
        repeated = sorted(k for k in req.args if k not in proxy.multiple_keys and len(req.args.getlist(k)) > 1)
        if repeated:
            names = ", ".join(repr(k) for k in repeated)
            raise RequestError(
                422,
                f"The query string gives {names} more than once: give each once.",
                {"query": {k: ["Given more than once."] for k in repeated}},
            )
        return proxy

    def load_multipart(self, req: flask.Request, schema: Any) -> Any:
        with broken_framing_is_400():
            return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)

    def handle_error(
        self,
        error: ma.ValidationError,
        req: flask.Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        """webargs' 422, except for a field's own problem (FieldProblem): alone, it is
        answered with its own message and its detail under `form` (or `json`); with other errors, those
        are answered first (the field is reported once the rest of the body is right)."""
        by_location = error.messages if isinstance(error.messages, dict) else {}
        for location, messages in by_location.items():
            if not isinstance(messages, dict):
                continue
            problems = {name: m for name, m in messages.items() if isinstance(m, FieldProblem)}
            if not problems:
                continue
            others = {name: m for name, m in messages.items() if name not in problems}
            if not others:
                name, problem = next(iter(problems.items()))
                raise RequestError(422, problem.message, {_ERRORS_KEY.get(location, location): {name: problem.detail}})
            error.messages[location] = others
        super().handle_error(error, req, schema, error_status_code=error_status_code, error_headers=error_headers)

    def load_json(self, req: flask.Request, schema: Any) -> Any:
        if req.mimetype and not is_json_mimetype(req.mimetype):
            raise RequestError(415, f"Send the body as application/json, not {req.mimetype}.")
        return parse_json_body(read_body(req))

    def load_json_or_csv(self, req: flask.Request, schema: Any) -> Any:
        """A JSON body, or a CSV one (text/csv) as {"data": TextTable, "return_probabilities" and
        "engine": from the query (the schema checks the engine's word)}."""
        if req.mimetype == CSV_MIMETYPE:
            table = parse_csv(read_body(req), req.mimetype_params.get("charset"))
            body = {"data": table, "return_probabilities": return_probabilities_query(req.args)}
            if "engine" in req.args:
                body["engine"] = req.args["engine"]
            return body
        if req.mimetype and not is_json_mimetype(req.mimetype):
            raise RequestError(415, f"Send the body as application/json or text/csv, not {req.mimetype}.")
        return parse_json_body(read_body(req))


class JSONProvider(DefaultJSONProvider):
    """Responses keep their key order (no sorting costs on the hot path)."""

    sort_keys = False
    compact = True
