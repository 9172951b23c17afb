"""The app factory: reading create_app shows the whole application."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from flask import Flask, request, send_from_directory
from werkzeug.routing import PathConverter

from migrations.runner import upgrade_database
from serving.api.accesslog import register_access_log
from serving.api.auth import require_token
from serving.api.context import attach, runtime
from serving.api.errors import MaasApi, register_error_handlers
from serving.api.instrument import register_request_metrics
from serving.api.jsonbody import JSONProvider
from serving.api.middleware import EncodedSlashes, SpoolingRequest
from serving.api.requestid import register_request_ids
from serving.api.routes import admin, health, models, predict, ui, v2
from serving.config import Settings
from serving.inference.runtime import Runtime
from serving.operations.store_claim import claim_store

API_TITLE = "maas"
API_VERSION = "1"
SWAGGER_UI_STATIC = "/docs/static/"
# Multipart framing and the metadata part ride on top of the artifact's own bytes.
UPLOAD_OVERHEAD_BYTES = 1 << 20


def create_app(settings: Settings | None = None, *, upgrade_db: bool = True) -> Flask:
    """Build the Flask app; `upgrade_db` runs the Alembic migrations first (off in workers)."""
    settings = settings or Settings.from_env()
    # No app-wide static folder: the pages' files are the ui blueprint's (/ui/static/), and
    # Swagger UI's are served by register_docs_assets.
    app = Flask(__name__, static_folder=None)
    app.request_class = SpoolingRequest
    app.wsgi_app = EncodedSlashes(app.wsgi_app)  # type: ignore[method-assign]
    app.json = JSONProvider(app)
    configure_openapi(app)
    rt = Runtime(settings)
    try:
        if upgrade_db:
            upgrade_database(rt.db.engine)
        # Here, not only in `maas serve`: every app serves from a store of its own registry
        # (`maas serve` checks first, in gunicorn's master, to refuse with one line).
        claim_store(rt.db, rt.store)
    except BaseException:
        rt.close()
        raise
    attach(app, rt)
    register_access_log(app)  # before the request ids: its line is written after they are set
    register_request_ids(app)
    register_request_metrics(app)
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
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        },
    )


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
            path == "/api"
            or path.startswith("/api/")
            or ((path == "/v2" or path.startswith("/v2/")) and not path.startswith("/v2/health/"))
        ):
            require_token(settings.api_token, *(t for _, t in settings.admin_credentials), what="This endpoint")


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
    for blueprint in (predict.blp, models.blp, admin.blp, health.blp, health.metrics_blp, v2.health, v2.blp):
        api.register_blueprint(blueprint)
    # The pages for people: plain Flask, not part of the OpenAPI document.
    app.register_blueprint(ui.blp)


def register_docs_assets(app: Flask) -> None:
    """Serve Swagger UI's files ourselves so /docs works offline (no CDN)."""
    assets = Path(swagger_ui_bundle.swagger_ui_path)

    @app.get(SWAGGER_UI_STATIC + "<path:filename>")
    def swagger_ui_asset(filename: str):
        return send_from_directory(assets, filename)
