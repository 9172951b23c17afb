"""The app factory: reading create_app shows the whole application."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import swagger_ui_bundle
from flask import Flask, Request, request, send_from_directory
from werkzeug.routing import PathConverter

from migrations.runner import upgrade_database
from model_store.store import Spool
from serving import admin, models_api, ops, predict
from serving.auth import require_token
from serving.config import Settings
from serving.errors import MaasApi, register_error_handlers
from serving.jsonbody import JSONProvider
from serving.runtime import Runtime, runtime

API_TITLE = "maas"
API_VERSION = "1"
SWAGGER_UI_STATIC = "/docs/static/"
# Multipart framing and the metadata part ride on top of the artifact's own bytes.
UPLOAD_OVERHEAD_BYTES = 1 << 20


def create_app(settings: Settings | None = None, *, upgrade_db: bool = True) -> Flask:
    """Build the Flask app; `upgrade_db` runs the Alembic migrations first (off in workers)."""
    settings = settings or Settings.from_env()
    # No static folder: the only files served are Swagger UI's (register_docs_assets).
    app = Flask(__name__, static_folder=None)
    app.request_class = SpoolingRequest
    app.wsgi_app = EncodedSlashes(app.wsgi_app)  # type: ignore[method-assign]
    app.json = JSONProvider(app)
    configure_openapi(app)
    rt = Runtime(settings)
    if upgrade_db:
        upgrade_database(rt.db.engine)
    rt.init_app(app)
    register_request_guards(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_docs_assets(app)
    return app


def configure_openapi(app: Flask) -> None:
    app.config.update(
        API_TITLE=API_TITLE,
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_STATIC,
        API_SPEC_OPTIONS={
            "info": {"description": "Model as a Service: a versioned registry and prediction server."},
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
            },
        },
    )


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

    def _get_file_stream(  # type: ignore[override]
        self, total_content_length: int | None, content_type: str | None,
        filename: str | None = None, content_length: int | None = None,
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
                environ["PATH_INFO"] = kept[len(script):]
        return self.wsgi_app(environ, start_response)  # type: ignore[no-any-return]


def register_request_guards(app: Flask) -> None:
    @app.before_request
    def _limits_and_api_token() -> None:
        settings = runtime().settings
        is_upload = request.method == "POST" and request.path.startswith("/api/admin/")
        request.max_content_length = (
            settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES if is_upload else settings.max_request_bytes
        )
        path = request.path
        if settings.api_token and (
            path == "/api" or path.startswith("/api/")
            or ((path == "/v2" or path.startswith("/v2/")) and not path.startswith("/v2/health/"))
        ):
            require_token(settings.api_token, settings.admin_token, what="This endpoint")


class AnyTextConverter(PathConverter):
    """Any text, slashes and newlines included: for a path segment whose bad values (a model
    name holding %2F, say) must reach the view and its 422 instead of matching no route."""

    regex = r"[^/][\s\S]*?"


def register_blueprints(app: Flask) -> None:
    # werkzeug would answer `//` in a path with a 308 to the path without it: another resource
    # (`/api/models/credit/versions//predict` -> a version named 'predict'). An empty segment
    # names nothing: 404.
    app.url_map.merge_slashes = False
    app.url_map.converters["anytext"] = AnyTextConverter
    api = MaasApi(app)
    api.register_converter(AnyTextConverter, lambda _converter: {"type": "string"})
    for blueprint in (predict.blp, models_api.blp, admin.blp, ops.blp):
        api.register_blueprint(blueprint)


def register_docs_assets(app: Flask) -> None:
    """Serve Swagger UI's files ourselves so /docs works offline (no CDN)."""
    assets = Path(swagger_ui_bundle.swagger_ui_path)

    @app.get(SWAGGER_UI_STATIC + "<path:filename>")
    def swagger_ui_asset(filename: str):  # type: ignore[no-untyped-def]
        return send_from_directory(assets, filename)
