"""Admin endpoints (bearer MAAS_ADMIN_TOKEN or one of MAAS_ADMIN_TOKENS): upload versions, aliases, deletes,
descriptions, tags, and the audit trail of all of these."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request, url_for
from flask.views import MethodView

from registry import service
from serving.api.accesslog import note_model
from serving.api.auth import require_labelled_token
from serving.api.blueprint import BEARER, Blueprint
from serving.api.context import runtime
from serving.api.errors import RequestError
from serving.api.routes.models import model_detail
from serving.api.schemas import (
    AliasRequestSchema,
    DeleteModelQuerySchema,
    EventSchema,
    EventsQuerySchema,
    ModelDetailSchema,
    PatchModelSchema,
    PatchVersionSchema,
    UploadSchema,
    VersionSchema,
)
from serving.operations.upload import register_upload

blp = Blueprint(
    "admin", __name__, url_prefix="/api/admin", description="Registry administration (admin token)", security=BEARER
)

UPLOAD_ENDPOINT = "admin.Upload"


@blp.after_request
def _seen_here_at_once(response: Response) -> Response:
    """A change made through this worker (a new latest, an alias moved, a version deleted) is
    what its next prediction resolves; other workers follow within MAAS_ALIAS_TTL."""
    name = (request.view_args or {}).get("name")
    if request.method != "GET" and isinstance(name, str):
        runtime().forget_model(name)
    return response


@blp.before_request
def _admin_only() -> None:
    credentials = runtime().settings.admin_credentials
    if not credentials:
        raise RequestError(
            403, "Admin endpoints are disabled: set MAAS_ADMIN_TOKEN or MAAS_ADMIN_TOKENS to enable them."
        )
    # Who acts: every change an admin request makes is recorded under this label.
    g.actor = require_labelled_token(credentials, what="This admin endpoint")
    if request.endpoint == UPLOAD_ENDPOINT and request.method == "POST" and request.mimetype != "multipart/form-data":
        raise RequestError(
            415,
            f"Upload the artifact as multipart/form-data (a 'file' part), not {request.mimetype or 'no content type'}.",
        )


# A bad name (one holding %2F, say) reaches the view and its 422 instead of matching no route.
@blp.route("/models/<anytext:name>/versions", endpoint="Upload")
class Upload(MethodView):
    @blp.arguments(UploadSchema, location="multipart")
    @blp.response(
        201,
        VersionSchema,
        headers={"Location": {"description": "URL of the new version", "schema": {"type": "string"}}},
    )
    @blp.errors(400, 401, 403, 404, 409, 413, 415, 422, 503, 504)
    def post(self, parts: dict[str, Any], name: str) -> tuple[Any, int, dict[str, str]]:
        """Upload a new version (joblib, pickle or skops file + optional JSON metadata)"""
        version = register_upload(runtime(), name, parts["file"].stream, parts.get("metadata", {}), actor=g.actor)
        note_model(name, version.version)
        location = url_for("models.Version", name=name, selector=str(version.version))
        return version, 201, {"Location": location}


@blp.route("/models/<name>")
class AdminModel(MethodView):
    @blp.arguments(PatchModelSchema)
    @blp.response(200, ModelDetailSchema)
    @blp.errors(400, 401, 403, 404, 415, 422, 503)
    def patch(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """Change a model's description"""
        rt = runtime()
        with rt.db.write() as session:
            service.update_model(session, name, description=body["description"], actor=g.actor)
            detail = model_detail(session, name)
        note_model(name)
        return detail

    @blp.arguments(DeleteModelQuerySchema, location="query")
    @blp.response(204)
    @blp.errors(401, 403, 404, 409, 422, 503)
    def delete(self, query: dict[str, Any], name: str) -> None:
        """Delete a model (409 while it has versions, unless force=true); its numbers are never reused"""
        with runtime().db.write() as session:
            service.delete_model(session, name, force=query["force"], actor=g.actor)
        note_model(name)


@blp.route("/models/<name>/aliases/<alias>")
class AdminAlias(MethodView):
    @blp.arguments(AliasRequestSchema)
    @blp.response(200, VersionSchema)
    @blp.errors(400, 401, 403, 404, 409, 415, 422, 503)
    def put(self, body: dict[str, Any], name: str, alias: str) -> Any:
        """Create or move an alias to a version"""
        with runtime().db.write() as session:
            version = service.set_alias(session, name, alias, body["version"], actor=g.actor)
        note_model(name, version.version)
        return version

    @blp.response(204)
    @blp.errors(401, 403, 404, 503)
    def delete(self, name: str, alias: str) -> None:
        """Remove an alias"""
        with runtime().db.write() as session:
            service.delete_alias(session, name, alias, actor=g.actor)
        note_model(name)


@blp.route("/models/<name>/versions/<version>")
class AdminVersion(MethodView):
    @blp.arguments(PatchVersionSchema)
    @blp.response(200, VersionSchema)
    @blp.errors(400, 401, 403, 404, 415, 422, 503)
    def patch(self, body: dict[str, Any], name: str, version: str) -> Any:
        """Change a version's description and/or tags (`tags` replaces the whole map)"""
        with runtime().db.write() as session:
            updated = service.update_version(session, name, version, **body, actor=g.actor)
        note_model(name, updated.version)
        return updated

    @blp.response(204)
    @blp.errors(401, 403, 404, 409, 503)
    def delete(self, name: str, version: str) -> None:
        """Delete a version (409 while an alias points to it); its number is never reused"""
        with runtime().db.write() as session:
            number = service.delete_version(session, name, version, actor=g.actor)
        note_model(name, number)


@blp.route("/events")
class Events(MethodView):
    @blp.arguments(EventsQuerySchema, location="query")
    @blp.response(200, EventSchema(many=True))
    @blp.paginate()
    @blp.errors(401, 403, 422, 503)
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
        """The audit trail, newest first (paginated): every upload, alias move or delete, version delete and
        description or tags change, who made it (the admin token's label) and what changed"""
        with runtime().db.read() as session:
            events, total = service.list_events(
                session,
                query.get("model"),
                offset=pagination_parameters.first_item,
                limit=pagination_parameters.page_size,
            )
        pagination_parameters.item_count = total
        return events
