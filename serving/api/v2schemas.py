"""Marshmallow schemas of the Open Inference Protocol (V2) routes (serving.api.routes.v2)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from model_store.features import MAX_FEATURES
from serving.api.schemas import ENGINE_CHOICES, StrictSchema
from serving.inference.tensors import OUTPUT_NAMES, V2_DATATYPES

# One input per feature: a request with more inputs than a schema may have features is refused
# before each of them is read.
MAX_INPUTS = MAX_FEATURES
V2_DATATYPE_NAMES = sorted(V2_DATATYPES)


class V2ErrorSchema(ma.Schema):
    """Every error under /v2: the protocol's own shape."""

    error = fields.String(required=True, metadata={"description": "What went wrong"})


class TensorData(fields.Raw):
    """A tensor's `data`: an array, its elements checked against the datatype in one pass by
    serving.inference.tensors (marshmallow's List would visit each element once more)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list):
            raise ma.ValidationError("Not a valid list.")
        return value


class InferInputSchema(StrictSchema):
    name = fields.String(required=True, metadata={"description": "The feature this tensor gives"})
    shape = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=0)),
        required=True,
        validate=validate.Length(min=1, max=2),
        metadata={"description": "[N] or [N, 1]: one value per row"},
    )
    datatype = fields.String(
        required=True,
        validate=validate.OneOf(V2_DATATYPE_NAMES),
        metadata={
            "description": "number features: FP32, FP64 or INT*/UINT*; integer features: INT*/UINT*; "
            "boolean: BOOL; string: BYTES (FP16 and BF16 are refused)"
        },
    )
    parameters = fields.Dict(keys=fields.String(), metadata={"description": "Accepted and ignored"})
    data = TensorData(
        required=True,
        metadata={
            "type": "array",
            "items": {},
            "description": "The N values, flat, or nested as the shape ([[v], [v], ...] for [N, 1]); null is a "
            "missing value (an optional feature's)",
        },
    )


class InferOutputSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.OneOf(OUTPUT_NAMES))
    parameters = fields.Dict(keys=fields.String(), metadata={"description": "Accepted and ignored"})


class InferRequestSchema(StrictSchema):
    id = fields.String(metadata={"description": "Echoed in the response"})
    parameters = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "`engine`: `auto` (the default), `sklearn` or `onnx`, as in this service's predict "
            "routes (422 when the version has no such engine); other parameters are accepted and ignored"
        },
    )
    inputs = fields.List(
        fields.Nested(InferInputSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_INPUTS),
        metadata={"description": "One tensor per feature, named after it"},
    )
    outputs = fields.List(
        fields.Nested(InferOutputSchema),
        metadata={"description": "predict (the default) and/or predict_proba"},
    )

    @ma.validates_schema
    def _engine(self, data: dict[str, Any], **_: Any) -> None:
        engine = data.get("parameters", {}).get("engine", "auto")
        if engine not in ENGINE_CHOICES:
            raise ma.ValidationError({"engine": [f"Must be one of: {', '.join(ENGINE_CHOICES)}."]}, "parameters")

    @ma.pre_load
    def _bounded_inputs(self, data: Any, **_: Any) -> Any:
        inputs = data.get("inputs") if isinstance(data, dict) else None
        if isinstance(inputs, list) and len(inputs) > MAX_INPUTS:
            raise ma.ValidationError(f"More than {MAX_INPUTS} inputs.", "inputs")
        return data


class OutputTensorSchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    datatype = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)
    data = fields.List(fields.Raw(allow_none=True), required=True)


class InferResponseSchema(ma.Schema):
    class Meta:
        ordered = True

    model_name = fields.String(required=True)
    model_version = fields.String(required=True, metadata={"description": "The version number that answered"})
    id = fields.String(metadata={"description": "The request's id, when it sent one"})
    parameters = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={"description": "`engine`: the backend engine that answered, `sklearn` or `onnx`"},
    )
    outputs = fields.List(fields.Nested(OutputTensorSchema), required=True)


class TensorMetadataSchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    datatype = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)


class ModelMetadataSchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    versions = fields.List(fields.String(), required=True)
    platform = fields.String(required=True)
    inputs = fields.List(fields.Nested(TensorMetadataSchema), required=True)
    outputs = fields.List(fields.Nested(TensorMetadataSchema), required=True)


class ServerMetadataSchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    version = fields.String(required=True)
    extensions = fields.List(fields.String(), required=True)


class LiveSchema(ma.Schema):
    live = fields.Boolean(required=True)


class ReadySchema(ma.Schema):
    ready = fields.Boolean(required=True)


class ModelReadySchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    version = fields.String(required=True)
    ready = fields.Boolean(required=True)
