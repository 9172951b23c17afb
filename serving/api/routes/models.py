"""Reading the registry: models, their versions, one version in full."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView
from sqlalchemy.orm import Session

from registry import service
from serving.api.accesslog import note_model
from serving.api.blueprint import OPTIONAL_BEARER, Blueprint
from serving.api.context import runtime
from serving.api.schemas import (
    ModelDetailSchema,
    ModelSummarySchema,
    VersionSchema,
    VersionSummarySchema,
)

blp = Blueprint(
    "models", __name__, url_prefix="/api/models", description="The model registry", security=OPTIONAL_BEARER
)


def model_detail(session: Session, name: str) -> dict[str, Any]:
    """A model's summary fields plus all its versions, newest first; raises NotFound."""
    model = service.get_model(session, name)
    versions = service.versions_of(session, model)
    return {**asdict(service.summarize_model(session, model)), "versions": versions}


@blp.route("")
class Models(MethodView):
    @blp.response(200, ModelSummarySchema(many=True))
    @blp.paginate()
    @blp.errors(401, 503)
    def get(self, pagination_parameters: Any) -> list[Any]:
        """List registered models by name (paginated)"""
        with runtime().db.read() as session:
            models, total = service.list_models(
                session,
                offset=pagination_parameters.first_item,
                limit=pagination_parameters.page_size,
            )
        pagination_parameters.item_count = total
        return models


@blp.route("/<name>")
class Model(MethodView):
    @blp.response(200, ModelDetailSchema)
    @blp.errors(401, 404, 503)
    def get(self, name: str) -> dict[str, Any]:
        """A model with all its versions, newest first"""
        with runtime().db.read() as session:
            detail = model_detail(session, name)
        note_model(name)
        return detail


@blp.route("/<name>/versions")
class Versions(MethodView):
    @blp.response(200, VersionSummarySchema(many=True))
    @blp.paginate()
    @blp.errors(401, 404, 503)
    def get(self, name: str, pagination_parameters: Any) -> list[Any]:
        """A model's versions, newest first (paginated)"""
        with runtime().db.read() as session:
            versions, total = service.list_versions(
                session,
                name,
                offset=pagination_parameters.first_item,
                limit=pagination_parameters.page_size,
            )
        pagination_parameters.item_count = total
        return versions


@blp.route("/<name>/versions/<selector>")
class Version(MethodView):
    @blp.response(200, VersionSchema)
    @blp.errors(401, 404, 503)
    def get(self, name: str, selector: str) -> Any:
        """One version in full: artifact, estimator, classes, feature schema"""
        with runtime().db.read() as session:
            version = service.get_version(session, name, selector)
        note_model(name, version.version)
        return version
