"""The Open Inference Protocol (V2, as KServe, MLServer and Triton speak it): health, metadata,
readiness and `infer`, so that their clients (tritonclient's HTTP client among them) work unchanged.

Errors under /v2 are the protocol's {"error": ...} (serving.api.errors.error_response), with the
contract's statuses. An infer request goes through the same check and model call as every other
prediction: its tensors are one more spelling of `data` (serving.inference.tensors.Tensors).
"""

from __future__ import annotations

import http
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import flask
from flask import Response, jsonify, request
from flask.views import MethodView

from registry import service
from registry.names import LATEST
from serving.api.accesslog import note_model
from serving.api.blueprint import OPTIONAL_BEARER, SERVER_ERRORS, Blueprint
from serving.api.context import runtime
from serving.api.errors import RequestError, error_response
from serving.api.jsonbody import StrictJSONParser, parse_json_body, read_body
from serving.api.routes.health import readiness_problems
from serving.api.v2schemas import (
    InferRequestSchema,
    InferResponseSchema,
    LiveSchema,
    ModelMetadataSchema,
    ModelReadySchema,
    ReadySchema,
    ServerMetadataSchema,
    V2ErrorSchema,
)
from serving.inference.tensors import (
    FEATURE_DATATYPE,
    PREDICT,
    PREDICT_PROBA,
    Tensors,
    labels_datatype,
    output_tensors,
    requested_outputs,
)


class AnyContentTypeJSONParser(StrictJSONParser):
    """The strict JSON parser, reading the body as JSON whatever its Content-Type says: tritonclient
    sends none, `curl -d` sends application/x-www-form-urlencoded, and V2 servers read JSON either way."""

    def load_json(self, req: flask.Request, schema: Any) -> Any:
        return parse_json_body(read_body(req))


class V2Blueprint(Blueprint):
    ARGUMENTS_PARSER = AnyContentTypeJSONParser()


blp = V2Blueprint(
    "v2",
    __name__,
    url_prefix="/v2",
    description='Open Inference Protocol (V2): errors are {"error": message}',
    security=OPTIONAL_BEARER,
)
health = Blueprint("v2-health", __name__, url_prefix="/v2/health", description="Open Inference Protocol (V2) health")

F = TypeVar("F", bound=Callable[..., Any])
SERVER_NAME = "maas"
# A tensor has one value per row: [N] for a feature, and the model metadata says so.
FEATURE_SHAPE = [-1]
METADATA_ERRORS = (401, 404, 503)
READY_ERRORS = (401, 404, 503, 504)
INFER_ERRORS = (400, 401, 404, 413, 422, 503, 504)
# tritonclient's binary tensor data extension announces the JSON part's length in this header.
BINARY_HEADER = "Inference-Header-Content-Length"


def v2_errors(bp: Blueprint, *codes: int) -> Callable[[F], F]:
    """Document the error statuses of an operation, in the protocol's shape (as Blueprint.errors
    does for the contract's): gunicorn's own 400, 414 and 431 included."""

    def decorator(func: F) -> F:
        for code in sorted({*codes, *SERVER_ERRORS}):
            func = bp.alt_response(code, schema=V2ErrorSchema, description=http.HTTPStatus(code).phrase)(func)
        return func

    return decorator


def server_version() -> str:
    try:
        return version("maas")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0"


# -- health -------------------------------------------------------------------------------------
@health.route("/live")
class Live(MethodView):
    @health.response(200, LiveSchema)
    @v2_errors(health)
    def get(self) -> dict[str, Any]:
        """200 while the process runs"""
        return {"live": True}


@health.route("/ready")
class Ready(MethodView):
    @health.alt_response(200, schema=ReadySchema, success=True, description="Ready")
    @v2_errors(health, 503)
    def get(self) -> Response:
        """200 when the database and the model store answer, else 503"""
        problems = readiness_problems()
        if problems:
            return error_response(503, "Not ready: " + "; ".join(problems) + ".")
        return jsonify({"ready": True})


# -- metadata -----------------------------------------------------------------------------------
@blp.before_request
def _no_binary_tensors() -> None:
    if request.headers.get(BINARY_HEADER) is not None:
        raise RequestError(
            400,
            "The binary tensor data extension is not supported: send each tensor's values as JSON 'data' "
            "(tritonclient: set_data_from_numpy(..., binary_data=False), "
            "InferRequestedOutput(..., binary_data=False)).",
        )


# Made once: given a class, webargs would build a schema for every request.
INFER_BODY = InferRequestSchema()


@blp.route("")
class Server(MethodView):
    @blp.response(200, ServerMetadataSchema)
    @v2_errors(blp, 401)
    def get(self) -> dict[str, Any]:
        """Server metadata: name, version, extensions (none)"""
        return {"name": SERVER_NAME, "version": server_version(), "extensions": []}


def model_metadata(name: str, selector: object, *, every_version: bool) -> dict[str, Any]:
    """A version's metadata: its features as input tensors, `predict` (and `predict_proba`) as outputs;
    `versions` lists every version of the model when `every_version`, else the one named."""
    with runtime().db.read() as session:
        found = service.get_version(session, name, selector)
        numbers = [v.version for v in service.versions_of(session, found.model)] if every_version else [found.version]
        features = [spec.to_spec() for spec in found.features]
    note_model(found.model.name, found.version)
    outputs = [{"name": PREDICT, "datatype": labels_datatype(found.classes), "shape": [-1]}]
    if found.has_predict_proba:
        outputs.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(found.classes or ())]})
    return {
        "name": found.model.name,
        "versions": [str(n) for n in sorted(numbers)],
        "platform": "sklearn",
        "inputs": [{"name": f.name, "datatype": FEATURE_DATATYPE[f.type], "shape": FEATURE_SHAPE} for f in features],
        "outputs": outputs,
    }


@blp.route("/models/<name>")
class Model(MethodView):
    @blp.response(200, ModelMetadataSchema)
    @v2_errors(blp, *METADATA_ERRORS)
    def get(self, name: str) -> dict[str, Any]:
        """Model metadata: every version, and the latest's inputs and outputs"""
        return model_metadata(name, LATEST, every_version=True)


@blp.route("/models/<name>/versions/<version>")
class ModelVersion(MethodView):
    @blp.response(200, ModelMetadataSchema)
    @v2_errors(blp, *METADATA_ERRORS)
    def get(self, name: str, version: str) -> dict[str, Any]:
        """A version's metadata (number, alias or `latest`): its inputs and outputs"""
        return model_metadata(name, version, every_version=False)


# -- readiness ----------------------------------------------------------------------------------
def model_ready(name: str, selector: object) -> dict[str, Any]:
    """Ready when the version exists and its runner has it loaded (loaded here when not yet):
    NotFound (404) or ArtifactUnavailable (503) otherwise."""
    rt = runtime()
    ref = rt.resolve(name, selector)
    note_model(ref.model, ref.version)
    rt.runner(ref)
    return {"name": ref.model, "version": str(ref.version), "ready": True}


@blp.route("/models/<name>/ready")
class ModelReady(MethodView):
    @blp.response(200, ModelReadySchema)
    @v2_errors(blp, *READY_ERRORS)
    def get(self, name: str) -> dict[str, Any]:
        """200 when the model's latest version can be served"""
        return model_ready(name, LATEST)


@blp.route("/models/<name>/versions/<version>/ready")
class ModelVersionReady(MethodView):
    @blp.response(200, ModelReadySchema)
    @v2_errors(blp, *READY_ERRORS)
    def get(self, name: str, version: str) -> dict[str, Any]:
        """200 when the version (number, alias or `latest`) can be served"""
        return model_ready(name, version)


# -- inference ----------------------------------------------------------------------------------
def infer(name: str, selector: object, body: dict[str, Any]) -> dict[str, Any]:
    """Predict from the request's tensors and answer the outputs asked for."""
    outputs = requested_outputs(body.get("outputs"))
    rt = runtime()
    ref = rt.resolve(name, selector)
    note_model(ref.model, ref.version)
    engine = body.get("parameters", {}).get("engine", "auto")
    prediction = rt.predict_version(ref, Tensors(body["inputs"]), PREDICT_PROBA in outputs, engine)
    answer: dict[str, Any] = {"model_name": prediction.model, "model_version": str(prediction.version)}
    if "id" in body:
        answer["id"] = body["id"]
    answer["parameters"] = {"engine": prediction.engine}
    answer["outputs"] = output_tensors(prediction, outputs)
    return answer


@blp.route("/models/<name>/infer")
class Infer(MethodView):
    @blp.arguments(INFER_BODY)
    @blp.response(200, InferResponseSchema)
    @v2_errors(blp, *INFER_ERRORS)
    def post(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """Infer with the latest version (a JSON body, whatever its Content-Type, or none)"""
        return infer(name, LATEST, body)


@blp.route("/models/<name>/versions/<version>/infer")
class InferVersion(MethodView):
    @blp.arguments(INFER_BODY)
    @blp.response(200, InferResponseSchema)
    @v2_errors(blp, *INFER_ERRORS)
    def post(self, body: dict[str, Any], name: str, version: str) -> dict[str, Any]:
        """Infer with a version (number, alias or `latest`; a JSON body, whatever its Content-Type, or none)"""
        return infer(name, version, body)
