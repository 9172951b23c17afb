"""WSGI and request-level plumbing: upload spooling into the model store, encoded slashes kept."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Request

from model_store.store import Spool
from serving.api.context import runtime


class SpoolingRequest(Request):
    """A request whose multipart files are spooled into the model store (ArtifactStore.spool),
    not into TMPDIR: an upload needs no room outside the store, is written to disk once, and a
    crash mid-upload leaves a temp file where `maas store gc` removes it.

    A write the store's file system refuses while werkzeug spools the upload raises the
    store's StoreWriteFailed (a 503) out of the form parsing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._spools: list[Spool] = []

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> Any:
        spool = runtime().store.spool()
        self._spools.append(spool)
        return spool

    def close(self) -> None:
        """Close the spools too: when parsing fails half-way (a refused write, a client gone)
        werkzeug never lists them in `files`, and their names would stay in the store."""
        try:
            super().close()
        finally:
            for spool in self._spools:
                spool.close()


class EncodedSlashes:
    """WSGI middleware: a `%2F` in the request path stays `%2F` in PATH_INFO.

    The server decodes the path before routing, so `GET /api/models/credit%2Fversions` would
    reach the route of `/api/models/credit/versions`, and `DELETE
    /api/admin/models/credit%2Fversions/1` would delete a version of 'credit'. Kept encoded, it
    stays one path segment naming what can never exist (no name, alias or selector holds '%'):
    404 on reads, 422 on upload.
    """

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        if "%2f" in raw.lower():
            # The origin form (/path?query), or the absolute form a client may send instead.
            path = raw.partition("?")[0] if raw.startswith("/") else urlsplit(raw).path
            segments = path.split("/")
            decoded = [unquote_to_bytes(s) for s in segments]
            script = environ.get("SCRIPT_NAME", "")
            # Only when the raw path is the one the server decoded (WSGI: bytes as latin-1).
            if b"/".join(decoded).decode("latin-1") == script + environ.get("PATH_INFO", ""):
                kept = b"/".join(s.replace(b"/", b"%2F") for s in decoded).decode("latin-1")
                environ["PATH_INFO"] = kept[len(script) :]
        return self.wsgi_app(environ, start_response)
