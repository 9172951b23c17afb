"""Hostile requests against a real `maas serve`, over real HTTP, on SQLite and PostgreSQL.

Every operation of the live /openapi.json (the seed's `/api` among them) gets bad model names,
version selectors and aliases in its path, bad `model` and `version` values, non-standard and
100,000-level-deep JSON in its body, bodies over the limit (a Content-Length far above it with
only a few bytes sent, and a chunked body that grows past it), forged Authorization headers,
wrong methods. Each answer must be the contract's status in the contract's error shape, never a
5xx and never a traceback, and afterwards the registry (read over HTTP) and the files under the
servers' directory must be what they were. A second server on the same database and store has
MAAS_API_TOKEN set: there, reads and predictions need a token too.

Requests go over raw sockets (bytes exactly as written: no client normalises `..` or refuses a
non-ASCII header), each read until the server closes the connection; gunicorn writes its access
log line before it closes, so the log checks see every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.linear_model import LinearRegression

from serving.api.app import UPLOAD_OVERHEAD_BYTES
from tests.estimators.fixture_models import PickyRegressor
from tests.support import (
    CREDIT_ROW,
    REPO,
    Live,
    database_of_its_own,
    joblib_bytes,
    live_server,
    tracebacks_of_our_own,
)
from tests.support.live import HTTP_TIMEOUT_S

# Distinct secrets, so that finding one in a log can only mean it was logged.
ADMIN_SECRET = f"admin-{secrets.token_hex(12)}"
READER_SECRET = f"reader-{secrets.token_hex(12)}"
WRONG_SECRET = f"wrong-{secrets.token_hex(12)}"
MAX_REQUEST_BYTES = 1 << 20  # room for 100,000 levels of JSON (600 KB), far below any 413 probe
MAX_UPLOAD_BYTES = 1 << 20
UPLOAD_LIMIT = MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD_BYTES
DEPTH = 100_000
# A guard for the probes that send only part of a body: a server that waits for the rest fails
# them. Nothing is timed.
EARLY_ANSWER_TIMEOUT_S = 15.0
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", "sqlalchemy", "psycopg", "sqlite3", "SELECT ", "/secret/")


# -- the servers --------------------------------------------------------------------------------
@dataclass
class Servers:
    admin: Live  # MAAS_ADMIN_TOKEN set; reads open
    reader: Live  # the same database and store, with MAAS_API_TOKEN set as well
    root: Path  # both servers' cwd, store and logs (and the SQLite file) are under it
    artifact: bytes = field(repr=False)  # a valid artifact (credit's version 1), for uploads that must be refused


def register(live: Live, credit_pipeline: Any) -> bytes:
    """credit versions 1 and 2 with `production` on 1 (the default model), and a model that raises."""
    admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}

    def upload(name: str, payload: bytes) -> None:
        answer = live.server.post(
            f"/api/admin/models/{name}/versions", files={"file": ("model.joblib", payload)}, headers=admin
        )
        assert answer.status_code == 201, answer.text

    artifact = joblib_bytes(credit_pipeline)
    upload("credit", artifact)
    upload("credit", joblib_bytes(credit_pipeline, compress=3))
    alias = live.server.put("/api/admin/models/credit/aliases/production", json={"version": 1}, headers=admin)
    assert alias.status_code == 200, alias.text
    upload("picky", joblib_bytes(PickyRegressor().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))))
    return artifact


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, credit_pipeline: Any
) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    variables: dict[str, Any] = {
        "MAAS_ADMIN_TOKEN": ADMIN_SECRET,
        "MAAS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "MAAS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "MAAS_DEFAULT_MODEL": "credit",
        "MAAS_TRUSTED_MODULES": "tests",  # lets the `picky` test model load
        "PYTHONPATH": str(REPO),
    }
    with (
        database_of_its_own(request.param, root) as database_url,
        live_server(request.param, root, database_url, log="admin-server.log", **variables) as admin,
    ):
        artifact = register(admin, credit_pipeline)
        with live_server(
            request.param, root, database_url, log="reader-server.log", MAAS_API_TOKEN=READER_SECRET, **variables
        ) as reader:
            yield Servers(admin, reader, root, artifact)


# -- raw HTTP -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _parse(raw: bytes) -> Answer:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        raise ConnectionError(f"no complete answer: {raw[:300]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return Answer(status, headers, bytes(body))
    if "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    return Answer(status, headers, rest)


def exchange(port: int, data: bytes, more: Iterable[bytes] = (), timeout: float = HTTP_TIMEOUT_S) -> Answer:
    """Send `data`, then each of `more` unless the server has answered already; read the answer
    until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            for part in more:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):  # it answered and closed: read that answer
            pass
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            if not received:
                raise
    return _parse(bytes(received))


def head_bytes(method: str, target: str, headers: Iterable[tuple[str, bytes]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("ascii"), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode("ascii") + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def multipart(*parts: tuple[str, bytes | None, bytes]) -> tuple[str, bytes]:
    """(content type, body) of a multipart/form-data body of (field, filename or None, bytes) parts."""
    boundary = "hostile-" + secrets.token_hex(8)
    body = bytearray()
    for name, filename, data in parts:
        disposition = b'form-data; name="' + name.encode() + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return f"multipart/form-data; boundary={boundary}", bytes(body)


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


# -- the operations of the contract ---------------------------------------------------------------
# A good value for each path parameter: a hostile variant changes one thing only.
GOOD_PATH = {"name": "credit", "selector": "1", "version": "2", "alias": "production"}
# A valid body per JSON operation, chosen so that accepting it would change the registry (the
# alias moves from 1 to 2, the description changes) and the snapshot would show it.
V2_INPUTS = {
    "inputs": [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in CREDIT_ROW.items()
    ]
}
VALID_JSON: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/predict"): {"model": "credit", "version": 1, "data": CREDIT_ROW},
    ("POST", "/api/models/{name}/versions/{selector}/predict"): {"data": CREDIT_ROW},
    ("POST", "/api/models/{name}/predict"): {"data": CREDIT_ROW},
    ("POST", "/api"): {"data": CREDIT_ROW},
    ("POST", "/api/models/{name}/versions/{selector}/whatif"): {"data": CREDIT_ROW, "points": 3},
    ("POST", "/api/models/{name}/whatif"): {"data": CREDIT_ROW, "points": 3},
    ("PATCH", "/api/admin/models/{name}"): {"description": "changed by a hostile request"},
    ("PUT", "/api/admin/models/{name}/aliases/{alias}"): {"version": 2},
    ("PATCH", "/api/admin/models/{name}/versions/{version}"): {
        "description": "changed by a hostile request",
        "tags": {"changed": "by a hostile request"},
    },
    ("POST", "/v2/models/{name}/infer"): V2_INPUTS,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): V2_INPUTS,
}


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    body: str  # "json", "multipart" or ""
    paginated: bool
    csv: bool = False  # also takes text/csv (the path-based predict routes, API v1.1)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def params(self) -> set[str]:
        return set(re.findall(r"\{(\w+)\}", self.template))

    def target(self, **values: str) -> str:
        chosen = {**GOOD_PATH, **values}
        return re.sub(r"\{(\w+)\}", lambda m: chosen[m.group(1)], self.template)

    @property
    def admin(self) -> bool:
        return self.template.startswith("/api/admin/")

    @property
    def v2(self) -> bool:
        return self.template == "/v2" or self.template.startswith("/v2/")

    @property
    def upload(self) -> bool:
        return self.body == "multipart"

    @property
    def needs_api_token(self) -> bool:
        """The contract: with MAAS_API_TOKEN set, everything under /api and /v2 but /v2/health/*."""
        path = self.template
        return path == "/api" or path.startswith("/api/") or (self.v2 and not path.startswith("/v2/health/"))

    @property
    def valid_json(self) -> dict[str, Any]:
        return VALID_JSON[(self.method, self.template)]


def operations(spec: dict[str, Any]) -> list[Operation]:
    found = []
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            if method.upper() not in HTTP_METHODS:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            body = "multipart" if "multipart/form-data" in content else "json" if content else ""
            names = {p.get("name") for p in operation.get("parameters", []) + item.get("parameters", [])}
            paginated = {"page", "page_size"} <= names
            found.append(Operation(method.upper(), template, body, paginated, csv="text/csv" in content))
    return found


# -- hostile values ---------------------------------------------------------------------------------
# As they appear in the path (percent-encoded where a client would have to encode them).
BAD_PATH_NAMES = {
    "NUL": "cr%00edit",
    "NUL alone": "%00",
    "dot-dot": "..",
    "encoded dot-dot": "%2E%2E",
    "encoded slash": "a%2Fb",
    "encoded slash onto another route": "credit%2Fversions",
    "lower-case encoded slash": "credit%2fversions%2f2",
    "encoded slash and dot-dot": "credit%2F..",
    "encoded backslashes": "..%5C..%5Ccredit",
    "300 characters": "c" * 300,
    "non-ASCII letter": "cr%C3%A9dit",
    "invalid UTF-8": "cr%FFdit",
    "upper case": "Credit",
    "trailing newline": "credit%0A",
    "space": "cr%20edit",
}
BAD_PATH_SELECTORS = {
    "2**70": str(2**70),
    "-1": "-1",
    "1.5": "1.5",
    "empty": "",
    "0": "0",
    "11 digits": "99999999999",
    "NUL": "1%00",
    "dot-dot": "..",
    "encoded slash": "1%2F..",
    "non-ASCII digit": "%D9%A3",
    "trailing newline": "1%0A",
    "alias and NUL": "production%00",
    "upper case latest": "LATEST",
}
BAD_PATH_ALIASES = {
    "NUL": "prod%00",
    "dot-dot": "..",
    "300 characters": "a" * 300,
    "non-ASCII letter": "prod%C3%A9",
    "upper case": "Production",
    "encoded slash": "production%2F..",
    "leading digit": "1prod",
    "empty": "",
}
BAD_BODY_NAMES = {
    "NUL": "cr\x00edit",
    "dot-dot": "..",
    "slash onto another route": "credit/versions",
    "parent": "../credit",
    "300 characters": "c" * 300,
    "non-ASCII letter": "crédit",
    "trailing newline": "credit\n",
    "empty": "",
    "upper case": "Credit",
    "lone surrogate": "\ud800",
    "percent-encoded": "credit%2F..",
}
WRONG_TYPE_NAMES = {"number": 123, "list": ["credit"], "object": {"name": "credit"}, "boolean": True}
NUMBER_TOKEN = "\u2063number\u2063"  # stands for a number JSON cannot hold, written in by hand
BAD_BODY_VERSIONS: dict[str, Any] = {
    "2**70": 2**70,
    "-2**70": -(2**70),
    "-1": -1,
    "0": 0,
    "1.5": 1.5,
    "1.0": 1.0,
    "1e400": NUMBER_TOKEN,
    "4,000 digits": 10**3999,
    "empty": "",
    "'1.5'": "1.5",
    "'2**70'": str(2**70),
    "true": True,
    "list": [1],
    "object": {"version": 1},
    "NUL": "1\x00",
    "trailing newline": "1\n",
    "non-ASCII digit": "\u0663",
    "lone surrogate": "\ud800",
}
UNSTORABLE_TEXT = {"NUL": "a\x00b", "lone surrogate": "\ud800", "lone low surrogate": "\udfff x"}
LEAF = "\u2063leaf\u2063"


def _replace_first_leaf(value: Any, numbers_only: bool) -> tuple[Any, bool]:
    if isinstance(value, dict):
        out, done = {}, False
        for k, v in value.items():
            if not done:
                v, done = _replace_first_leaf(v, numbers_only)
            out[k] = v
        return out, done
    if isinstance(value, list):
        items, done = [], False
        for v in value:
            if not done:
                v, done = _replace_first_leaf(v, numbers_only)
            items.append(v)
        return items, done
    if numbers_only and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return value, False
    return LEAF, True


def with_leaf(body: dict[str, Any], raw: bytes) -> bytes:
    """`body` as JSON, its first number (else its first value) replaced by the raw JSON text `raw`."""
    replaced, done = _replace_first_leaf(body, numbers_only=True)
    if not done:
        replaced, _ = _replace_first_leaf(body, numbers_only=False)
    return json.dumps(replaced).encode().replace(json.dumps(LEAF).encode(), raw)


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode().replace(json.dumps(NUMBER_TOKEN).encode(), b"1e400")


def bad_json_bodies(valid: dict[str, Any]) -> dict[str, bytes]:
    """Bodies that are not strict JSON, or nested deeper than the limit: each is a 400."""
    text = json.dumps(valid).encode()
    deep = b"[" * DEPTH + b"]" * DEPTH
    return {
        "NaN": with_leaf(valid, b"NaN"),
        "Infinity": with_leaf(valid, b"Infinity"),
        "-Infinity": with_leaf(valid, b"-Infinity"),
        "a number of 5,000 digits": with_leaf(valid, b"1" + b"0" * 5000),
        "a bare NaN": b"NaN",
        "100,000 nested arrays": deep,
        "100,000 nested objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        "100,000 nested arrays inside a valid body": with_leaf(valid, deep),
        "65 nested objects": b'{"a":' * 65 + b"1" + b"}" * 65,
        "100,000 unclosed arrays": b"[" * DEPTH,
        "not UTF-8": with_leaf(valid, b'"\xff\xfe"'),
        "an array, not an object": b"[" + text + b"]",
        "a string, not an object": b'"text"',
        "empty": b"",
        "truncated": text[:-1],
        "trailing garbage": text + b"x",
        "single quotes": text.replace(b'"', b"'"),
    }


def auth_variants(secret: str) -> dict[str, list[bytes]]:
    """Authorization headers (each a list: none, one, or two headers) that must all be 401."""
    token = secret.encode()
    return {
        "no Authorization header": [],
        "an empty header": [b""],
        "an empty bearer token": [b"Bearer "],
        "the scheme alone": [b"Bearer"],
        "another scheme": [b"Basic xyz"],
        "the token under another scheme": [b"Token " + token],
        "the token without a scheme": [token],
        "a wrong token": [bearer(WRONG_SECRET)],
        "the token and one more character": [b"Bearer " + token + b"x"],
        "the token less its last character": [b"Bearer " + token[:-1]],
        "the token twice": [b"Bearer " + token + b" " + token],
        "non-ASCII bytes": [b"Bearer \xe9t\xe9\xff"],
        "the token and a UTF-8 letter": [b"Bearer " + token + "\u00e9".encode()],
        "a wrong header, then the right one": [bearer(WRONG_SECRET), b"Bearer " + token],
        "the right header, then a wrong one": [b"Bearer " + token, bearer(WRONG_SECRET)],
    }


# -- the battery --------------------------------------------------------------------------------------
@dataclass
class Battery:
    """Sends hostile requests, checks each answer, and keeps the count."""

    servers: Servers
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    server_errors: int = 0

    def send(
        self,
        what: str,
        method: str,
        target: str,
        expected: set[int],
        *,
        live: Live | None = None,
        body: bytes | None = None,
        content_type: str | None = "application/json",
        authorization: list[bytes] | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        challenge: bool = False,
    ) -> Answer | None:
        """One request; `authorization` defaults to the admin token. Records what is wrong with the answer."""
        live = live or self.servers.admin
        auth = [bearer(ADMIN_SECRET)] if authorization is None else authorization
        all_headers = [("Authorization", value) for value in auth] + list(headers)
        if body is not None and content_type:
            all_headers.append(("Content-Type", content_type.encode()))
        if body is not None:
            all_headers.append(("Content-Length", str(len(body)).encode()))
        data = head_bytes(method, target, all_headers) + (body or b"")
        return self.raw(what, method, target, data, expected, live=live, challenge=challenge)

    def raw(
        self,
        what: str,
        method: str,
        target: str,
        data: bytes,
        expected: set[int],
        *,
        live: Live | None = None,
        more: Iterable[bytes] = (),
        timeout: float = HTTP_TIMEOUT_S,
        challenge: bool = False,
    ) -> Answer | None:
        """Send the bytes `data` (then `more`: see exchange) as they are; check the answer."""
        live = live or self.servers.admin
        label = f"[{live.server.log.stem}] {what}: {method} {target[:120]}"
        try:
            answer = exchange(live.server.port, data, more, timeout=timeout)
        except TimeoutError:
            self.problems.append(
                f"{label}: no answer in {timeout:.0f} s (does the server wait for the rest of the body?)"
            )
            return None
        except OSError as exc:
            self.problems.append(f"{label}: no answer ({exc!r})")
            return None
        self.check(label, answer, expected, v2=target.startswith("/v2"), challenge=challenge)
        return answer

    def check(
        self,
        label: str,
        answer: Answer,
        expected: set[int],
        *,
        v2: bool = False,
        challenge: bool = False,
    ) -> None:
        self.statuses[answer.status] += 1
        problems = []
        if answer.status >= 500:
            self.server_errors += 1
        if answer.status not in expected:
            problems.append(f"status {answer.status}, expected {sorted(expected)}")
        if answer.status >= 400:
            problems += _error_shape_problems(answer, v2)
        leaks = [m for m in (*LEAK_MARKERS, str(REPO), str(self.servers.root)) if m in answer.text]
        if leaks:
            problems.append(f"the answer shows {leaks}")
        if challenge and not answer.headers.get("www-authenticate", "").startswith("Bearer"):
            problems.append(f"WWW-Authenticate is {answer.headers.get('www-authenticate')!r}")
        if answer.status == 405 and "allow" not in answer.headers:
            problems.append("a 405 without Allow")
        if problems:
            self.problems.append(f"{label}: {'; '.join(problems)} -- {answer.text[:300]}")

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def _error_shape_problems(answer: Answer, v2: bool) -> list[str]:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return [f"Content-Type {answer.headers.get('content-type')!r}"]
    try:
        body = json.loads(answer.body)
    except ValueError:
        return ["the body is not JSON"]
    if v2:  # the Open Inference Protocol's own error shape
        return (
            []
            if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
            else ["not {'error': ...}"]
        )
    problems = []
    if not isinstance(body, dict) or body.get("code") != answer.status:
        problems.append("code is not the status")
    elif not (isinstance(body.get("status"), str) and body["status"]):
        problems.append("no status")
    elif not (isinstance(body.get("message"), str) and body["message"]):
        problems.append("no message")
    elif set(body) - {"code", "status", "message", "errors"}:
        problems.append(f"unexpected fields {sorted(set(body) - {'code', 'status', 'message', 'errors'})}")
    return problems


def upload_body(
    battery: Battery, *, filename: bytes = b"model.joblib", metadata: str | None = None
) -> tuple[str, bytes]:
    parts: list[tuple[str, bytes | None, bytes]] = [("file", filename, battery.servers.artifact)]
    if metadata is not None:
        parts.append(("metadata", None, metadata.encode("utf-8", errors="surrogatepass")))
    return multipart(*parts)


def valid_request(battery: Battery, op: Operation) -> tuple[bytes | None, str | None]:
    """(body, content type) of a request to `op` that is right in every way."""
    if op.upload:
        content_type, body = upload_body(battery)
        return body, content_type
    if op.body == "json":
        return json.dumps(op.valid_json).encode(), "application/json"
    return None, None


# -- what the battery sends -------------------------------------------------------------------------
def send_bad_path_values(battery: Battery, ops: list[Operation]) -> None:
    for op in ops:
        body, content_type = valid_request(battery, op)
        if "name" in op.params:
            for what, name in BAD_PATH_NAMES.items():
                battery.send(
                    f"model name in the path: {what}",
                    op.method,
                    op.target(name=name),
                    {422} if op.upload else {404},
                    body=body,
                    content_type=content_type,
                )
        for param in op.params & {"selector", "version"}:
            for what, selector in BAD_PATH_SELECTORS.items():
                battery.send(
                    f"{param} in the path: {what}",
                    op.method,
                    op.target(**{param: selector}),
                    {404},
                    body=body,
                    content_type=content_type,
                )
        if "alias" in op.params:
            for what, alias in BAD_PATH_ALIASES.items():
                # An empty alias leaves no route at all; any other bad alias is 422 to set, 404 to delete.
                expected = {404} if alias == "" or op.method == "DELETE" else {422}
                battery.send(
                    f"alias in the path: {what}",
                    op.method,
                    op.target(alias=alias),
                    expected,
                    body=body,
                    content_type=content_type,
                )


def send_bad_body_values(battery: Battery, ops: list[Operation]) -> None:
    for op in ops:
        if op.body != "json" or op.v2:
            continue
        valid = op.valid_json
        target = op.target()
        if "model" in valid or op.template == "/api":
            for what, name in BAD_BODY_NAMES.items():
                battery.send(
                    f"'model' in the body: {what}", op.method, target, {404}, body=dumps({**valid, "model": name})
                )
            for what, wrong in WRONG_TYPE_NAMES.items():
                battery.send(
                    f"'model' in the body: {what}", op.method, target, {422}, body=dumps({**valid, "model": wrong})
                )
        if "version" in valid or op.template == "/api":
            for what, version in BAD_BODY_VERSIONS.items():
                battery.send(
                    f"'version' in the body: {what}",
                    op.method,
                    target,
                    {404},
                    body=dumps({**valid, "version": version}),
                )
        if isinstance(valid.get("data"), dict):
            data = dict(valid["data"])
            first_number = next(k for k, v in data.items() if isinstance(v, (int, float)))
            for what, number in (("4,000 digits", 10**3999), ("1e400", NUMBER_TOKEN)):
                battery.send(
                    f"a number in 'data': {what}",
                    op.method,
                    target,
                    {422},
                    body=dumps({**valid, "data": {**data, first_number: number}}),
                )
        if "description" in valid:
            for what, text in UNSTORABLE_TEXT.items():
                battery.send(
                    f"'description' in the body: {what}",
                    op.method,
                    target,
                    {422},
                    body=dumps({**valid, "description": text}),
                )


def send_bad_json(battery: Battery, ops: list[Operation]) -> None:
    for op in ops:
        if op.body == "json":
            for what, body in bad_json_bodies(op.valid_json).items():
                battery.send(f"body: {what}", op.method, op.target(), {400}, body=body)
            if not op.v2:  # V2's infer takes a body with any content type or none
                battery.send(
                    "body: text/plain",
                    op.method,
                    op.target(),
                    {415},
                    body=json.dumps(op.valid_json).encode(),
                    content_type="text/plain",
                )
        if op.upload:
            metadata = {"description": "hostile"}
            for what, raw in bad_json_bodies(metadata).items():
                # Empty metadata is no metadata; a form field is text (bytes that are not UTF-8
                # become U+FFFD); 600 KB is over Flask's limit for one form field (413).
                if raw.strip() and what not in ("not UTF-8", "100,000 nested objects"):
                    content_type, body = upload_body(battery, metadata=raw.decode("utf-8", errors="replace"))
                    battery.send(
                        f"upload metadata: {what}", op.method, op.target(), {422}, body=body, content_type=content_type
                    )
            for what, text in UNSTORABLE_TEXT.items():
                for key, value in (("description", text), ("tags", {"team": text}), ("tags", {text: "x"})):
                    content_type, body = upload_body(battery, metadata=json.dumps({key: value}))
                    battery.send(
                        f"upload metadata {key}: {what}",
                        op.method,
                        op.target(),
                        {422},
                        body=body,
                        content_type=content_type,
                    )
            parts = {
                "no file part": multipart(("metadata", None, b"{}")),
                "the file as a plain field": multipart(("file", None, battery.servers.artifact)),
                "the metadata as a file": multipart(
                    ("file", b"m.joblib", battery.servers.artifact), ("metadata", b"m.json", b"{}")
                ),
                "a truncated multipart body": (upload_body(battery)[0], upload_body(battery)[1][:-40]),
            }
            for what, (content_type, body) in parts.items():
                battery.send(f"upload: {what}", op.method, op.target(), {422}, body=body, content_type=content_type)
            for sent_type in ("application/json", None):
                battery.send(
                    f"upload as {sent_type}",
                    op.method,
                    op.target(),
                    {415},
                    body=b'{"file": "x"}',
                    content_type=sent_type,
                )


# What-if's own fields (API v1.1), each wrong: 422.
BAD_WHATIF: dict[str, dict[str, Any]] = {
    "unknown feature": {"features": ["zip"]},
    "a feature twice": {"features": ["age", "age"]},
    "no features": {"features": []},
    "10,001 features": {"features": ["age"] * 10_001},
    "a feature that is a number": {"features": [1]},
    "a feature with NUL": {"features": ["a\x00ge"]},
    "a lone surrogate feature": {"features": ["\ud800"]},
    "points 1": {"points": 1},
    "points 201": {"points": 201},
    "points 2**70": {"points": 2**70},
    "points 1.5": {"points": 1.5},
    "points true": {"points": True},
    "range of an unknown feature": {"ranges": {"zip": [0, 1]}},
    "range of a string": {"ranges": {"gender": [0, 1]}},
    "range low == high": {"ranges": {"age": [30, 30]}},
    "range of one number": {"ranges": {"age": [30]}},
    "range of strings": {"ranges": {"age": ["a", "b"]}},
    "range 1e400": {"ranges": {"age": [0, NUMBER_TOKEN]}},
    "range 4,000 digits": {"ranges": {"age": [0, 10**3999]}},
    "ranges a list": {"ranges": [[0, 1]]},
    "target not a class": {"target": "7"},
    "target a number": {"target": 1},
    "target NUL": {"target": "1\x00"},
    "two baseline rows": {"data": [CREDIT_ROW, CREDIT_ROW]},
    "no baseline rows": {"data": []},
    "a baseline of columns": {"data": {k: [v, v] for k, v in CREDIT_ROW.items()}},
    "an unknown field": {"surprise": 1},
}
# The other spellings of `data` (API v1.1: rows as arrays, MLflow's scoring format), each wrong:
# 422 (each replaces the valid body's `data`). Columns of a "dataframe_split" are named in hex: the
# 100,000 of them stay under the battery's body limit.
SPLIT: dict[str, Any] = {"columns": list(CREDIT_ROW), "data": [list(CREDIT_ROW.values())]}
BAD_SPELLINGS: dict[str, dict[str, Any]] = {
    "both data and dataframe_split": {"data": CREDIT_ROW, "dataframe_split": SPLIT},
    "all three spellings": {"data": CREDIT_ROW, "dataframe_split": SPLIT, "dataframe_records": [CREDIT_ROW]},
    "no rows at all": {},
    "data: a row too short": {"data": [list(CREDIT_ROW.values())[:-1]]},
    "data: a row too long": {"data": [[*CREDIT_ROW.values(), 1]]},
    "data: rows and records": {"data": [list(CREDIT_ROW.values()), CREDIT_ROW]},
    "data: records and rows": {"data": [CREDIT_ROW, list(CREDIT_ROW.values())]},
    "data: a row of rows": {"data": [[list(CREDIT_ROW.values())]]},
    "data: an empty row": {"data": [[]]},
    "data: 10,001 rows": {"data": [list(CREDIT_ROW.values())] * 10_001},
    "dataframe_split: ragged rows": {"dataframe_split": {**SPLIT, "data": [SPLIT["data"][0], [1]]}},
    "dataframe_split: a row not an array": {"dataframe_split": {**SPLIT, "data": [CREDIT_ROW]}},
    "dataframe_split: data an object": {"dataframe_split": {**SPLIT, "data": CREDIT_ROW}},
    "dataframe_split: columns not strings": {"dataframe_split": {**SPLIT, "columns": [1, 2, 3, 4]}},
    "dataframe_split: columns null": {"dataframe_split": {**SPLIT, "columns": None}},
    "dataframe_split: a column twice": {"dataframe_split": {"columns": ["age"] * 4, "data": SPLIT["data"]}},
    "dataframe_split: no columns": {"dataframe_split": {"data": SPLIT["data"]}},
    "dataframe_split: no data": {"dataframe_split": {"columns": SPLIT["columns"]}},
    "dataframe_split: an unknown key": {"dataframe_split": {**SPLIT, "orient": "split"}},
    "dataframe_split: an array": {"dataframe_split": [SPLIT["columns"], SPLIT["data"]]},
    "dataframe_split: no rows": {"dataframe_split": {**SPLIT, "data": []}},
    "dataframe_split: 100,000 columns, a row of none": {
        "dataframe_split": {"columns": [f"{i:x}" for i in range(100_000)], "data": [[]]}
    },
    "dataframe_split: 40,000 unknown columns": {
        "dataframe_split": {"columns": [f"{i:x}" for i in range(40_000)], "data": [[0] * 40_000]}
    },
    "dataframe_split: a NUL column": {"dataframe_split": {"columns": ["a\x00ge"], "data": [[1]]}},
    "dataframe_split: 10,001 rows": {"dataframe_split": {**SPLIT, "data": SPLIT["data"] * 10_001}},
    "dataframe_records: an array of arrays": {"dataframe_records": SPLIT["data"]},
    "dataframe_records: an object": {"dataframe_records": CREDIT_ROW},
    "dataframe_records: no rows": {"dataframe_records": []},
    "dataframe_records: an unknown feature": {"dataframe_records": [{**CREDIT_ROW, "zip": 1}]},
}
GOOD_SPELLINGS: dict[str, dict[str, Any]] = {
    "data: rows": {"data": SPLIT["data"] * 2},
    "dataframe_split": {"dataframe_split": {**SPLIT, "index": [0]}},
    "dataframe_records": {"dataframe_records": [CREDIT_ROW] * 2},
}
CSV_ROW = ",".join(str(v) for v in CREDIT_ROW.values())
CSV_HEADER = ",".join(CREDIT_ROW)
# Bad CSV bodies (API v1.1): each a 422 in the contract's JSON.
BAD_CSV: dict[str, bytes] = {
    "empty": b"",
    "a byte order mark alone": "\ufeff".encode(),
    "not UTF-8": f"{CSV_HEADER}\n35,42000,m\xe4le,north\n".encode("latin-1"),
    "a lone surrogate (CESU bytes)": f"{CSV_HEADER}\n".encode() + b"35,1,\xed\xa0\x80,north\n",
    "an open quote": f'{CSV_HEADER}\n35,42000,"male,north\n'.encode(),
    "a row too long": f"{CSV_HEADER}\n{CSV_ROW},x\n".encode(),
    "a row too short": f"{CSV_HEADER}\n35,42000\n".encode(),
    "a column twice": f"{CSV_HEADER},age\n{CSV_ROW},35\n".encode(),
    "a header alone": f"{CSV_HEADER}\n".encode(),
    "an unknown column": f"{CSV_HEADER},zip\n{CSV_ROW},1\n".encode(),
    "a missing column": b"age,income\n35,42000\n",
    "nan": f"{CSV_HEADER}\n".encode() + CSV_ROW.replace("42000.0", "nan").encode() + b"\n",
    "1e999": f"{CSV_HEADER}\n".encode() + CSV_ROW.replace("42000.0", "1e999").encode() + b"\n",
    "4,000 digits": f"{CSV_HEADER}\n".encode() + CSV_ROW.replace("42000.0", "9" * 4000).encode() + b"\n",
    "1_000": f"{CSV_HEADER}\n".encode() + CSV_ROW.replace("42000.0", "1_000").encode() + b"\n",
    "NUL in a number": f"{CSV_HEADER}\n".encode() + CSV_ROW.replace("42000.0", "42\x00").encode() + b"\n",
    "a value not allowed": f"{CSV_HEADER}\n".encode() + CSV_ROW.replace("male", "robot").encode() + b"\n",
    "a field of 200,000 characters": f"{CSV_HEADER}\n35,42000,{'m' * 200_000},north\n".encode(),
    "100,000 columns": (",".join(f"c{i}" for i in range(100_000)) + "\n" + "1," * 99_999 + "1\n").encode(),
    "JSON sent as CSV": json.dumps({"data": CREDIT_ROW}).encode(),
}


def send_bad_v11_bodies(battery: Battery, ops: list[Operation]) -> None:
    """What-if's fields and CSV bodies (API v1.1): 422 (413 past a limit, 415 for another
    charset) in the contract's JSON, never a 5xx."""
    for op in ops:
        if op.template.endswith("/whatif"):
            for what, change in BAD_WHATIF.items():
                battery.send(f"what-if: {what}", op.method, op.target(), {422}, body=dumps({**op.valid_json, **change}))
        if op.method == "POST" and (op.template.endswith("/predict") or op.template == "/api"):
            rest = {k: v for k, v in op.valid_json.items() if k != "data"}
            for what, change in BAD_SPELLINGS.items():
                expected = {413} if "10,001 rows" in what else {422}
                battery.send(f"spelling: {what}", op.method, op.target(), expected, body=dumps({**rest, **change}))
            for what, change in GOOD_SPELLINGS.items():
                battery.send(f"spelling: {what}", op.method, op.target(), {200}, body=dumps({**rest, **change}))
        if not op.csv:
            continue
        for what, body in BAD_CSV.items():
            battery.send(f"CSV body: {what}", op.method, op.target(), {422}, body=body, content_type="text/csv")
        good = f"{CSV_HEADER}\n{CSV_ROW}\n".encode()
        battery.send("CSV body: right", op.method, op.target(), {200}, body=good, content_type="text/csv")
        battery.send(
            "CSV body: Latin-1", op.method, op.target(), {415}, body=good, content_type="text/csv; charset=latin-1"
        )
        battery.send(
            "CSV body: return_probabilities=maybe",
            op.method,
            op.target() + "?return_probabilities=maybe",
            {422},
            body=good,
            content_type="text/csv",
        )
        rows = f"{CSV_HEADER}\n".encode() + f"{CSV_ROW}\n".encode() * 10_001  # one over the row limit
        battery.send("CSV body: 10,001 rows", op.method, op.target(), {413}, body=rows, content_type="text/csv")
        battery.send(
            "CSV body: over the byte limit",
            op.method,
            op.target(),
            {413},
            body=good * (MAX_REQUEST_BYTES // len(good) + 1),
            content_type="text/csv",
        )


# Malformed Open Inference Protocol (V2) tensors for credit (age, income: FP64; gender, region:
# BYTES): each a 422 in the protocol's shape (413 past a limit, 400 for what is not strict JSON).
def _v2_with(name: str, **changes: Any) -> dict[str, Any]:
    return {"inputs": [{**t, **changes} if t["name"] == name else t for t in V2_INPUTS["inputs"]]}


def _v2_tensor(name: str, data: Any, datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": [1], "datatype": datatype, "data": data}


TENSORS = V2_INPUTS["inputs"]
BAD_V2_BODIES: dict[str, tuple[set[int], Any]] = {
    "shape [1, 2]": ({422}, _v2_with("age", shape=[1, 2])),
    "shape of three dimensions": ({422}, _v2_with("age", shape=[1, 1, 1])),
    "shape []": ({422}, _v2_with("age", shape=[])),
    "shape and data disagree": ({422}, _v2_with("age", shape=[2])),
    "mismatched lengths": ({422}, _v2_with("age", shape=[2], data=[35.0, 52.0])),
    "shape 10**30": ({422}, _v2_with("age", shape=[10**30])),
    "shape 2**63": ({422}, _v2_with("age", shape=[2**63, 1])),
    "shape -1": ({422}, _v2_with("age", shape=[-1])),
    "shape of strings": ({422}, _v2_with("age", shape=["1"])),
    "shape 1.0": ({422}, _v2_with("age", shape=[1.0])),
    "shape not a list": ({422}, _v2_with("age", shape=1)),
    "unknown input": ({422}, {"inputs": [*TENSORS, _v2_tensor("zip", [1])]}),
    "an input named twice": ({422}, {"inputs": [*TENSORS, TENSORS[0]]}),
    "missing input": ({422}, {"inputs": TENSORS[1:]}),
    "no inputs": ({422}, {"inputs": []}),
    "inputs an object": ({422}, {"inputs": {"age": [35]}}),
    "inputs null": ({422}, {"inputs": None}),
    "no 'inputs'": ({422}, {}),
    "15,000 unknown inputs": ({422}, {"inputs": [_v2_tensor(f"f{i}", [1]) for i in range(15_000)]}),
    # (100,000 inputs do not fit under this battery's byte limit: tests/api/test_v2.py sends them.)
    "10,001 rows (one over the row limit)": (
        {413},
        {"inputs": [{**t, "shape": [10_001], "data": t["data"] * 10_001} for t in TENSORS]},
    ),
    "BYTES for a number": ({422}, _v2_with("age", datatype="BYTES", data=["35"])),
    "BOOL for a number": ({422}, _v2_with("age", datatype="BOOL", data=[True])),
    "FP64 for a string": ({422}, _v2_with("gender", datatype="FP64", data=[1.0])),
    "FP16": ({422}, _v2_with("age", datatype="FP16")),
    "an unknown datatype": ({422}, _v2_with("age", datatype="FP128")),
    "a datatype in lower case": ({422}, _v2_with("age", datatype="fp64")),
    "datatype null": ({422}, _v2_with("age", datatype=None)),
    "INT64 holding a float": ({422}, _v2_with("age", datatype="INT64", data=[35.5])),
    "INT8 out of its range": ({422}, _v2_with("age", datatype="INT8", data=[300])),
    "INT64 of 4,000 digits": ({422}, _v2_with("age", datatype="INT64", data=[10**3999])),
    "FP64 of 4,000 digits": ({422}, _v2_with("age", data=[10**3999])),
    "FP64 1e400": ({422}, _v2_with("age", data=[NUMBER_TOKEN])),
    "FP64 holding a string": ({422}, _v2_with("age", data=["35"])),
    "FP64 holding a boolean": ({422}, _v2_with("age", data=[True])),
    "BYTES holding a number": ({422}, _v2_with("gender", data=[1])),
    "BYTES holding null for a required feature": ({422}, _v2_with("gender", data=[None])),
    "BYTES not allowed": ({422}, _v2_with("gender", data=["robot"])),
    "BYTES holding NUL": ({422}, _v2_with("gender", data=["ma\x00le"])),
    "nested garbage": ({422}, _v2_with("age", data=[[[[35.0]]]])),
    "nested objects": ({422}, _v2_with("age", data=[{"a": 1}])),
    "data an object": ({422}, _v2_with("age", data={"a": 1})),
    "data a string": ({422}, _v2_with("age", data="35")),
    "data null": ({422}, _v2_with("age", data=None)),
    "no data": ({422}, {"inputs": [{k: v for k, v in TENSORS[0].items() if k != "data"}, *TENSORS[1:]]}),
    "a name that is a number": ({422}, {"inputs": [{**TENSORS[0], "name": 7}, *TENSORS[1:]]}),
    "an unknown tensor field": ({422}, _v2_with("age", contents={"fp64_contents": [1.0]})),
    "parameters a list": ({422}, {**V2_INPUTS, "parameters": [1]}),
    "an unknown output": ({422}, {**V2_INPUTS, "outputs": [{"name": "explain"}]}),
    "outputs an object": ({422}, {**V2_INPUTS, "outputs": {"name": "predict"}}),
    "an id that is a number": ({422}, {**V2_INPUTS, "id": 7}),
    "an unknown field": ({422}, {**V2_INPUTS, "model": "picky"}),
}


def send_bad_v2_tensors(battery: Battery, ops: list[Operation]) -> None:
    """Malformed tensors to each V2 infer operation: 4xx in the protocol's shape, and a right one answers."""
    for op in ops:
        if not (op.v2 and op.template.endswith("/infer")):
            continue
        for what, (expected, body) in BAD_V2_BODIES.items():
            battery.send(f"V2 tensors: {what}", op.method, op.target(), expected, body=dumps(body))
        nan = json.dumps(_v2_with("age", data=[LEAF])).encode().replace(json.dumps(LEAF).encode(), b"NaN")
        battery.send("V2 tensors: NaN in FP64 data", op.method, op.target(), {400}, body=nan)
        binary = json.dumps(V2_INPUTS).encode()
        battery.send(
            "V2 tensors: the binary tensor data extension",
            op.method,
            op.target(),
            {400},
            body=binary + b"\x00" * 8,
            content_type=None,
            headers=[("Inference-Header-Content-Length", str(len(binary)).encode())],
        )
        battery.send(
            "V2: a right request with no Content-Type",
            op.method,
            op.target(),
            {200},
            body=dumps(V2_INPUTS),
            content_type=None,
        )
        picky = {"inputs": [_v2_tensor("a", [1.0]), _v2_tensor("b", [1.0])], "outputs": [{"name": "predict_proba"}]}
        battery.send("V2: predict_proba of a regressor", "POST", "/v2/models/picky/infer", {422}, body=dumps(picky))


# A version's PATCH (API v1.1), each wrong: 422.
BAD_VERSION_PATCH: dict[str, Any] = {
    "an empty object": {},
    "tags a list": {"tags": ["a"]},
    "tags null": {"tags": None},
    "a tag value that is a number": {"tags": {"a": 1}},
    "a tag value 4,000 digits": {"tags": {"a": 10**3999}},
    "an empty tag name": {"tags": {"": "x"}},
    "a tag name of 256 characters": {"tags": {"k" * 256: "x"}},
    "a tag value of 10,001 characters": {"tags": {"a": "x" * 10_001}},
    "a tag name with NUL": {"tags": {"a\x00": "x"}},
    "a lone surrogate tag value": {"tags": {"a": "\ud800"}},
    "a description that is a number": {"description": 5},
    "a description of 10,001 characters": {"description": "x" * 10_001},
    "an unknown field": {"tags": {}, "version": 3},
}
# `?force=` of a model's delete: only `true` and `false` are words (credit has versions: a
# delete without force is 409, and nothing is deleted).
FORCE_QUERIES = {
    "force=maybe": {422},
    "force=TRUE": {422},
    "force=True": {422},
    "force=1": {422},
    "force=yes": {422},
    "force=": {422},
    "force=%00": {422},
    "force=true%00": {422},
    "force=false": {409},
    "": {409},
}


def send_lifecycle_requests(battery: Battery, ops: list[Operation]) -> None:
    """A version's PATCH with bad bodies, a model's DELETE with bad `force` values (API v1.1)."""
    for op in ops:
        if (op.method, op.template) == ("PATCH", "/api/admin/models/{name}/versions/{version}"):
            for what, body in BAD_VERSION_PATCH.items():
                battery.send(f"version PATCH: {what}", op.method, op.target(), {422}, body=dumps(body))
        if (op.method, op.template) == ("DELETE", "/api/admin/models/{name}"):
            for query, expected in FORCE_QUERIES.items():
                target = op.target() + (f"?{query}" if query else "")
                battery.send(f"model delete: {query or 'no force'}", op.method, target, expected)


def send_forged_tokens(battery: Battery, ops: list[Operation]) -> None:
    """401 with a Bearer challenge on every admin route (and, on the reader server, every read)."""
    for op in ops:
        body, content_type = valid_request(battery, op)
        if op.admin:
            for live, secret in ((battery.servers.admin, ADMIN_SECRET), (battery.servers.reader, ADMIN_SECRET)):
                for what, auth in auth_variants(secret).items():
                    battery.send(
                        f"admin token: {what}",
                        op.method,
                        op.target(),
                        {401},
                        live=live,
                        body=body,
                        content_type=content_type,
                        authorization=auth,
                        challenge=True,
                    )
            battery.send(
                "the API token on an admin route",
                op.method,
                op.target(),
                {401},
                live=battery.servers.reader,
                body=body,
                content_type=content_type,
                authorization=[bearer(READER_SECRET)],
                challenge=True,
            )
            battery.send(
                "a NUL byte in the token",
                op.method,
                op.target(),
                {400},
                body=body,
                content_type=content_type,
                authorization=[bearer(ADMIN_SECRET) + b"\x00"],
            )
        elif op.needs_api_token:
            reader = battery.servers.reader
            for what, auth in auth_variants(READER_SECRET).items():
                battery.send(
                    f"API token: {what}",
                    op.method,
                    op.target(),
                    {401},
                    live=reader,
                    body=body,
                    content_type=content_type,
                    authorization=auth,
                    challenge=True,
                )
            for what, name in list(BAD_PATH_NAMES.items())[:3] if "name" in op.params else []:
                battery.send(
                    f"API token missing, model name {what}",
                    op.method,
                    op.target(name=name),
                    {401},
                    live=reader,
                    body=body,
                    content_type=content_type,
                    authorization=[],
                    challenge=True,
                )
            # The right tokens open it (a read or a prediction: nothing changes).
            for what, token in (("the API token", READER_SECRET), ("the admin token", ADMIN_SECRET)):
                battery.send(
                    f"{what} on a read",
                    op.method,
                    op.target(),
                    {200},
                    live=reader,
                    body=body,
                    content_type=content_type,
                    authorization=[bearer(token)],
                )
        else:
            battery.send(
                "no token on an open route",
                op.method,
                op.target(),
                {200},
                live=battery.servers.reader,
                body=body,
                content_type=content_type,
                authorization=[],
            )
    for target in ("/openapi.json", "/docs"):
        battery.send("no token on an open route", "GET", target, {200}, live=battery.servers.reader, authorization=[])


def send_oversized(battery: Battery, ops: list[Operation]) -> None:
    """413 before the body is read: a Content-Length far over the limit with a few bytes sent,
    and a chunked body sent past the limit without its end. The server must answer at once."""
    for op in ops:
        if not op.body:
            continue
        limit = UPLOAD_LIMIT if op.upload else MAX_REQUEST_BYTES
        content_type = upload_body(battery)[0] if op.upload else "application/json"
        for what, auth, expected in (
            ("right token", bearer(ADMIN_SECRET), {413}),
            ("no token", None, {401} if op.admin else {413}),
        ):
            headers = [("Content-Type", content_type.encode()), ("Content-Length", b"1000000000000")]
            if auth:
                headers.append(("Authorization", auth))
            battery.raw(
                f"Content-Length 10**12, 10 bytes sent, {what}",
                op.method,
                op.template,
                head_bytes(op.method, op.target(), headers) + (b"--hostile-" if op.upload else b'{"data": ['),
                expected,
                timeout=EARLY_ANSWER_TIMEOUT_S,
            )
        headers = [
            ("Content-Type", content_type.encode()),
            ("Transfer-Encoding", b"chunked"),
            ("Authorization", bearer(ADMIN_SECRET)),
        ]
        # The limit in full, then 1 KiB more (little enough that the server has read it all when it
        # answers, so its close is no reset that could swallow the answer).
        sizes = [*[64 * 1024] * (limit // (64 * 1024)), limit % (64 * 1024), 1024]
        chunks = [b"%x\r\n" % size + b" " * size + b"\r\n" for size in sizes if size]
        battery.raw(
            f"chunked body past the limit of {limit} bytes, never ended",
            op.method,
            op.template,
            head_bytes(op.method, op.target(), headers),
            {413},
            more=chunks,
            timeout=EARLY_ANSWER_TIMEOUT_S,
        )
        # A chunk size that is not hex, and a chunk without its CRLF.
        for what, chunked in (
            ("a chunk size that is not hex", b'5\r\n{"a":\r\nzz\r\n1}\r\n0\r\n\r\n'),
            ("a chunk without its CRLF", b"2\r\n{}XX0\r\n\r\n"),
        ):
            battery.raw(
                f"chunked body: {what}",
                op.method,
                op.template,
                head_bytes(op.method, op.target(), headers) + chunked,
                {400},
            )
    # gunicorn's own refusals, in the contract's shape too.
    battery.send("request line of 5,000 bytes", "GET", "/api/models/" + "c" * 5000, {414})
    battery.send("header of 9,000 bytes", "GET", "/api/models", {431}, headers=[("X-Hostile", b"x" * 9000)])
    battery.send("Authorization of 9,000 bytes", "GET", "/api/models", {431}, authorization=[b"Bearer " + b"x" * 9000])


def send_malformed_http(battery: Battery) -> None:
    """Requests gunicorn itself refuses: 400, in the contract's shape too."""
    token = ADMIN_SECRET.encode()
    json_head = b"Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    requests_ = {
        "Content-Length and Transfer-Encoding": b"POST /api/predict HTTP/1.1\r\n"
        + json_head
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding gzip": b"POST /api/predict HTTP/1.1\r\n" + json_head + b"Transfer-Encoding: gzip\r\n\r\n",
        "two Content-Lengths": b"POST /api/predict HTTP/1.1\r\n"
        + json_head
        + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "a negative Content-Length": b"POST /api/predict HTTP/1.1\r\n" + json_head + b"Content-Length: -1\r\n\r\n{}",
        "a Content-Length that is not a number": b"POST /api/predict HTTP/1.1\r\n"
        + json_head
        + b"Content-Length: 2x\r\n\r\n{}",
        "a lower-case method": b"get /api/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "HTTP/2.0 on the request line": b"GET /api/models HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n",
        "bare LF line ends": b"GET /api/models HTTP/1.1\nHost: x\nConnection: close\n\n",
        "a header without a colon": b"GET /api/models HTTP/1.1\r\nHost: x\r\nBogus\r\nConnection: close\r\n\r\n",
        "a NUL in the path, unencoded": b"GET /api/models/cr\x00edit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a non-ASCII byte in the path, unencoded": (
            b"GET /api/models/cr\xc3\xa9dit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        "the token folded onto a second line": b"PATCH /api/admin/models/credit HTTP/1.1\r\n"
        + json_head
        + b"Authorization: Bearer\r\n "
        + token
        + b"\r\nContent-Length: 2\r\n\r\n{}",
    }
    for what, data in requests_.items():
        method, target = data.split(b" ", 2)[:2]
        battery.raw(f"malformed HTTP: {what}", method.decode(), target.decode("latin-1"), data, {400})


def send_wrong_methods_and_routes(battery: Battery, ops: list[Operation]) -> None:
    by_path: dict[str, set[str]] = {}
    for op in ops:
        by_path.setdefault(op.template, set()).add(op.method)
    for template, methods in by_path.items():
        target = Operation("GET", template, "", False).target()
        for method in sorted(set(HTTP_METHODS) - methods):
            battery.send(f"method {method}", method, target, {405}, body=b"{}")
    for target in (
        "/api/nothing",
        "/nothing",
        "/api/admin/nothing",
        "/api/models/credit/versions/1/predict/more",
        "/api/models//versions",
        "/api/models/credit/",
        "/docs/static/..%2F..%2F..%2Fapp.py",
        "/docs/static/../../../../../etc/passwd",
        "/static/app.py",
        "/api/models/credit/versions/%2E%2E/%2E%2E",
    ):
        battery.send("unknown route", "GET", target, {404})
    # Decoded, these would be the routes of a delete and of an alias move.
    battery.send("encoded slashes onto a delete", "DELETE", "/api/admin/models/credit%2Fversions/2", {404})
    battery.send(
        "encoded slashes onto an alias move",
        "PUT",
        "/api/admin/models/credit%2Faliases/production",
        {404},
        body=b'{"version": 2}',
    )
    for op in ops:
        if op.paginated:
            for query, expected in (
                ("page=" + str(2**70), {200}),
                ("page=-1", {422}),
                ("page=0", {422}),
                ("page_size=0", {422}),
                ("page_size=" + str(2**70), {422}),
                ("page=1.5", {422}),
                ("page=%00", {422}),
                ("page=", {422}),
                ("page_size=%C3%A9", {422}),
            ):
                battery.send(f"query {query}", op.method, op.target() + "?" + query, expected)


def send_failing_model(battery: Battery) -> None:
    """A model whose predict raises: 422 naming the exception, then the next request works."""
    bad, good = {"a": [1, -1], "b": [1, 1]}, {"a": [1, 2], "b": [1, 1]}
    for round_ in range(4):  # both workers see a failure followed by a success
        target, extra = ("/api/predict", {"model": "picky"}) if round_ % 2 else ("/api/models/picky/predict", {})
        failed = battery.send("a model that raises", "POST", target, {422}, body=dumps({**extra, "data": bad}))
        if failed is not None and "ValueError" not in failed.text:
            battery.problems.append(f"the model's failure does not name ValueError: {failed.text}")
        answer = battery.send(
            "the next request to that model", "POST", target, {200}, body=dumps({**extra, "data": good})
        )
        if answer is not None and answer.status == 200 and json.loads(answer.body)["predictions"] != [2.0, 3.0]:
            battery.problems.append(f"wrong predictions after a failure: {answer.text}")


# -- what must not change ----------------------------------------------------------------------------
def registry_snapshot(live: Live) -> dict[str, Any]:
    """Every model, every version in full, the aliases and the default model, read over HTTP."""

    def get(path: str) -> Any:
        answer = live.server.get(path)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
        return answer.json()

    models = get("/api/models?page_size=1000")
    snapshot: dict[str, Any] = {"models": models, "default": get("/api")}
    for model in models:
        name = model["name"]
        versions = get(f"/api/models/{name}/versions?page_size=1000")
        snapshot[name] = {
            "detail": get(f"/api/models/{name}"),
            "versions": [get(f"/api/models/{name}/versions/{v['version']}") for v in versions],
        }
    return snapshot


def files_under(root: Path) -> dict[str, str]:
    """Every file under `root` (but the logs and the SQLite files, which the servers write to) and its sha256."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".log" and not path.name.startswith("registry.db")
    }


def server_logs(servers: Servers) -> str:
    return "".join(live.server.log.read_text(errors="replace") for live in (servers.admin, servers.reader))


# -- the tests ------------------------------------------------------------------------------------------
def test_hostile_requests_are_refused_in_the_contract_shape_and_change_nothing(servers: Servers) -> None:
    spec = servers.admin.server.get("/openapi.json").json()
    ops = operations(spec)
    assert {"POST /api", "GET /api", "POST /api/predict", "POST /api/admin/models/{name}/versions"} <= {
        str(op) for op in ops
    }
    unknown_params = {f"{op}: {{{p}}}" for op in ops for p in op.params - set(GOOD_PATH)}
    assert not unknown_params, f"give GOOD_PATH a good value for {sorted(unknown_params)}"
    no_body = [str(op) for op in ops if op.body == "json" and (op.method, op.template) not in VALID_JSON]
    assert not no_body, f"give VALID_JSON a valid body for {no_body}"

    assert any(op.paginated for op in ops), "no paginated operation found in the document"
    assert {"DELETE /api/admin/models/{name}", "PATCH /api/admin/models/{name}/versions/{version}"} <= {
        str(op) for op in ops
    }

    registry_before, files_before = registry_snapshot(servers.admin), files_under(servers.root)
    log_starts = [live.server.log.stat().st_size for live in (servers.admin, servers.reader)]
    battery = Battery(servers)
    send_bad_path_values(battery, ops)
    send_bad_body_values(battery, ops)
    send_bad_json(battery, ops)
    send_bad_v11_bodies(battery, ops)
    send_bad_v2_tensors(battery, ops)
    send_lifecycle_requests(battery, ops)
    send_forged_tokens(battery, ops)
    send_oversized(battery, ops)
    send_malformed_http(battery)
    send_wrong_methods_and_routes(battery, ops)
    send_failing_model(battery)
    registry_after, files_after = registry_snapshot(servers.admin), files_under(servers.root)

    print(
        f"\n[{servers.admin.database}] hostile requests: {battery.requests} tried on {len(ops)} operations, "
        f"statuses {dict(sorted(battery.statuses.items()))}, 5xx found: {battery.server_errors}"
    )
    assert not battery.problems, f"{len(battery.problems)} problems:\n" + "\n".join(battery.problems[:60])
    assert battery.server_errors == 0
    assert registry_after == registry_before
    assert files_after == files_before, sorted(set(files_after.items()) ^ set(files_before.items()))

    log = server_logs(servers)  # all of it: the uploads of the set-up sent the token too
    # The access log: one JSON object per request (serving.api.accesslog).
    assert log.count('"method":"POST","route":"/api/predict"') > 10, "the access log is not where the test reads it"
    for secret in (ADMIN_SECRET[:-1], READER_SECRET[:-1], WRONG_SECRET):
        assert secret not in log, "a token is in the server's log"
    during = "".join(
        live.server.log.read_bytes()[start:].decode(errors="replace")
        for live, start in zip((servers.admin, servers.reader), log_starts, strict=True)
    )
    # Nothing failed inside.
    for marker in ("unhandled error", "database error"):
        assert marker not in during, f"{marker!r} in the server log:\n{during[-3000:]}"
    # The failing model's tracebacks are logged on purpose (send_failing_model); no other.
    assert tracebacks_of_our_own(during) == 0, f"a traceback in the server log:\n{during[-3000:]}"
    for live in (servers.admin, servers.reader):
        assert live.server.process.poll() is None, "a server died under the battery"


def _refitted(shift: float) -> bytes:
    frame = pd.DataFrame({"x1": np.linspace(-3, 3, 40), "x2": np.linspace(2, -2, 40)})
    return joblib_bytes(LinearRegression().fit(frame, 2 * frame["x1"] - frame["x2"] + shift))


def test_upload_filenames_never_become_paths(servers: Servers) -> None:
    absolute = Path(f"/tmp/maas-hostile-{secrets.token_hex(8)}.pkl")
    names = [
        b"../../x.pkl",
        str(absolute).encode(),
        b"a\x00/../../x.pkl",
        b"..\\..\\x.pkl",
        "../../\u00e9.pkl".encode(),
    ]
    payload = _refitted(shift=float(secrets.randbelow(10**6)))  # bytes the store has never seen
    sha256 = hashlib.sha256(payload).hexdigest()
    base = servers.root.parent  # where ../../ from the store or the cwd could lead
    before = files_under(servers.root)
    outside_before = set(base.rglob("*.pkl"))
    battery = Battery(servers)

    for filename in names:
        content_type, body = multipart(("file", filename, payload))
        answer = battery.send(
            f"upload filename {filename!r}",
            "POST",
            "/api/admin/models/filenames/versions",
            {201},
            body=body,
            content_type=content_type,
        )
        assert answer is not None and answer.status == 201, battery.problems
        assert json.loads(answer.body)["sha256"] == sha256

    print(
        f"\n[{servers.admin.database}] upload filenames: {battery.requests} tried, statuses {dict(battery.statuses)}, "
        f"5xx found: {battery.server_errors}"
    )
    assert not battery.problems, battery.problems
    added = set(files_under(servers.root)) - set(before)
    # the artifact under its sha256, and the ONNX graph compiled from it (also under its own)
    graphs = added - {f"store/objects/{sha256[:2]}/{sha256}"}
    assert len(graphs) == 1 and len(added) == 2, added
    assert all(re.fullmatch(r"store/objects/([0-9a-f]{2})/\1[0-9a-f]{62}", g) for g in graphs), added
    stored = servers.admin.store / "objects" / sha256[:2] / sha256
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha256
    assert not absolute.exists()
    assert set(base.rglob("*.pkl")) == outside_before
    assert not [p for p in base.rglob("*") if p.name in ("x.pkl", "\u00e9.pkl")]
    versions = requests.get(servers.admin.url("/api/models/filenames/versions")).json()
    assert len(versions) == len(names)


def test_a_secret_sent_as_basic_credentials_is_not_logged(servers: Servers) -> None:
    leaked = f"basic-{secrets.token_hex(12)}"
    credential = b"Basic " + base64.b64encode(f"{leaked}:password".encode())
    battery = Battery(servers)
    battery.send(
        "a secret in Basic credentials",
        "PATCH",
        "/api/admin/models/credit",
        {401},
        body=b'{"description": "x"}',
        authorization=[credential],
        challenge=True,
    )
    assert not battery.problems, battery.problems
    assert leaked not in server_logs(servers)


@pytest.mark.parametrize(
    "what, column", [("NUL", "a\x00b"), ("lone surrogate", "\ud800"), ("300 characters", "x" * 300)]
)
def test_artifact_whose_feature_names_cannot_be_stored_is_422(servers: Servers, what: str, column: str) -> None:
    frame = pd.DataFrame({column: [1.0, 2.0, 3.0], "z": [3.0, 1.0, 2.0]})
    content_type, body = multipart(("file", b"model.joblib", joblib_bytes(LinearRegression().fit(frame, [1, 2, 3]))))
    battery = Battery(servers)
    battery.send(
        f"feature name: {what}",
        "POST",
        "/api/admin/models/unstorable/versions",
        {422},
        body=body,
        content_type=content_type,
    )
    assert not battery.problems, battery.problems
