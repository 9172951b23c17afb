"""Predictions: POST /api/predict, the path-based variants, and the seed's POST/GET /api."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from flask.views import MethodView
from sqlalchemy import select

from registry import service
from registry.errors import NotFound
from registry.models import RegisteredModel
from registry.names import LATEST
from serving.api.accesslog import note_model
from serving.api.blueprint import OPTIONAL_BEARER, Blueprint
from serving.api.context import runtime
from serving.api.csvbody import CSV_MIMETYPE, render_csv, wants_csv
from serving.api.schemas import (
    DefaultModelSchema,
    DefaultPredictSchema,
    PathPredictSchema,
    PredictResponseSchema,
    PredictSchema,
    WhatIfResponseSchema,
    WhatIfSchema,
)
from serving.inference.texttable import TextTable
from serving.inference.whatif import WhatIfRequest, what_if

blp = Blueprint("predict", __name__, url_prefix="/api", description="Predictions", security=OPTIONAL_BEARER)

# Schema instances, made once: given a class, webargs would build one for every request
# (about 0.14 ms of a 1 ms prediction); they hold no per-request state.
PREDICT_BODY = PredictSchema()
PATH_PREDICT_BODY = PathPredictSchema()
WHATIF_BODY = WhatIfSchema()
DEFAULT_PREDICT_BODY = DefaultPredictSchema()

PREDICT_ERRORS = (400, 401, 404, 413, 415, 422, 503, 504)


def _predict(name: str, selector: object, body: dict[str, Any]) -> Response:
    data = body["data"]
    rt = runtime()
    ref = rt.resolve(name, selector)
    note_model(ref.model, ref.version)
    prediction = rt.predict_version(ref, data, body["return_probabilities"], body["engine"])
    if type(data) is TextTable and wants_csv(request):
        return Response(render_csv(data, prediction), mimetype=CSV_MIMETYPE)
    return jsonify(prediction.as_json())


# The path-based routes also take and answer CSV (the contract's v1.1 "CSV in and out").
CSV_DOC = {
    "requestBody": {
        "content": {
            CSV_MIMETYPE: {
                "schema": {
                    "type": "string",
                    "description": "RFC 4180, UTF-8: a header row of feature names, then one row per record; "
                    "an empty field is a missing value; each field is read as its feature's type "
                    "(booleans: true/false, any case; an integer may be written 35.0). Problems with the "
                    "text (not UTF-8, bad quoting, rows longer or shorter than the header, a column named "
                    "twice) are 422 with the detail under errors.csv.body; rows are numbered as in JSON.",
                },
                "example": "age,income,loan_amount,term_months,gender,employment,home_ownership\r\n"
                "35,42000,12000,36,male,salaried,rent\r\n52,61000,30000,60,female,self-employed,own\r\n",
            }
        }
    },
    "parameters": [
        {
            "in": "query",
            "name": "return_probabilities",
            "schema": {"type": "boolean", "default": False},
            "description": "For a CSV body: also answer the class probabilities (a JSON body says it in the body)",
        },
        {
            "in": "query",
            "name": "engine",
            "schema": {"type": "string", "enum": ["auto", "sklearn", "onnx"], "default": "auto"},
            "description": "For a CSV body: the backend engine (a JSON body says it in the body)",
        },
    ],
    "responses": {
        "200": {
            "content": {
                # apispec turns the documented schema into content only when there is none
                "application/json": {"schema": PredictResponseSchema},
                CSV_MIMETYPE: {
                    "schema": {
                        "type": "string",
                        "description": "With a CSV body and Accept: text/csv: the input columns as sent, then "
                        "`prediction`, then `probability_<class>` per class when asked for",
                    }
                },
            }
        }
    },
}


def default_model_name() -> str:
    """MAAS_DEFAULT_MODEL, else the only registered model; raises NotFound with how to set one."""
    rt = runtime()
    if rt.settings.default_model:
        return rt.settings.default_model
    with rt.db.read() as session:
        names = session.scalars(select(RegisteredModel.name).limit(2)).all()
        if len(names) == 1:
            return names[0]
        count = service.count_models(session)
    raise NotFound(
        f"No default model: {count} models are registered. Name one in the request's 'model', "
        "or set MAAS_DEFAULT_MODEL."
    )


@blp.route("/predict")
class Predict(MethodView):
    @blp.arguments(PREDICT_BODY)
    @blp.alt_response(200, schema=PredictResponseSchema, success=True, description="Predictions")
    @blp.errors(*PREDICT_ERRORS)
    def post(self, body: dict[str, Any]) -> Response:
        """Predict with the model and version named in the body"""
        return _predict(body["model"], body["version"], body)


@blp.route("/models/<name>/versions/<selector>/predict")
class PredictVersion(MethodView):
    @blp.arguments(PATH_PREDICT_BODY, location="json_or_csv")
    @blp.doc(**CSV_DOC)
    @blp.alt_response(200, schema=PredictResponseSchema, success=True, description="Predictions")
    @blp.errors(*PREDICT_ERRORS)
    def post(self, body: dict[str, Any], name: str, selector: str) -> Response:
        """Predict with a version (number, alias or `latest`)"""
        return _predict(name, selector, body)


@blp.route("/models/<name>/predict")
class PredictLatest(MethodView):
    @blp.arguments(PATH_PREDICT_BODY, location="json_or_csv")
    @blp.doc(**CSV_DOC)
    @blp.alt_response(200, schema=PredictResponseSchema, success=True, description="Predictions")
    @blp.errors(*PREDICT_ERRORS)
    def post(self, body: dict[str, Any], name: str) -> Response:
        """Predict with the latest version of a model"""
        return _predict(name, LATEST, body)


def _what_if(name: str, selector: object, body: dict[str, Any]) -> dict[str, Any]:
    answer = what_if(runtime(), name, selector, WhatIfRequest(**body))
    note_model(answer["model"], answer["version"])
    return answer


@blp.route("/models/<name>/versions/<selector>/whatif")
class WhatIfVersion(MethodView):
    @blp.arguments(WHATIF_BODY)
    @blp.response(200, WhatIfResponseSchema)
    @blp.errors(*PREDICT_ERRORS)
    def post(self, body: dict[str, Any], name: str, selector: str) -> dict[str, Any]:
        """What if one feature of a record moved: each swept value's prediction and score, each feature's swing and
        nearest flip (one batch through the model)"""
        return _what_if(name, selector, body)


@blp.route("/models/<name>/whatif")
class WhatIfLatest(MethodView):
    @blp.arguments(WHATIF_BODY)
    @blp.response(200, WhatIfResponseSchema)
    @blp.errors(*PREDICT_ERRORS)
    def post(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """What if, with the latest version of a model"""
        return _what_if(name, LATEST, body)


@blp.route("")
class DefaultModel(MethodView):
    @blp.response(200, DefaultModelSchema)
    @blp.errors(401, 404, 503)
    def get(self) -> dict[str, Any]:
        """Describe the default model's latest version (the seed's route)"""
        name = default_model_name()
        with runtime().db.read() as session:
            version = service.get_version(session, name, LATEST)
            features = list(version.features)
        note_model(name, version.version)
        return {
            "model_name": name,
            "version": version.version,
            "feature_names": [f.name for f in features],
            "features": features,
        }

    @blp.arguments(DEFAULT_PREDICT_BODY)
    @blp.alt_response(200, schema=PredictResponseSchema, success=True, description="Predictions")
    @blp.errors(*PREDICT_ERRORS)
    def post(self, body: dict[str, Any]) -> Response:
        """Predict with the named model, or the default model when none is named (the seed's route)"""
        # Only an absent (or null) model means the default one: "" is a name, and a bad one.
        name = default_model_name() if body["model"] is None else body["model"]
        return _predict(name, body["version"], body)
