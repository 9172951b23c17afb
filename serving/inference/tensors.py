"""Open Inference Protocol (V2) tensors: a request's inputs as the columns of a prediction, and a
prediction as the response's output tensors.

One input tensor per feature, named after it, of shape [N] or [N, 1], its `data` flat (row-major)
or nested as its shape; the columns it gives go through the same schema check as every other
prediction (serving.inference.inputs.InputSchema.check), so bounds, `allowed` and `required` hold
the same way. No Flask here: serving/api decides how the errors are answered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from model_store.features import FeatureType
from serving.inference.errors import InvalidRequest, json_type

if TYPE_CHECKING:
    from serving.inference.inputs import CompiledFeature
    from serving.inference.runtime import Prediction

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
OUTPUT_NAMES = (PREDICT, PREDICT_PROBA)

# The datatype a feature's tensor is described with (model metadata), and those it accepts.
FEATURE_DATATYPE = {
    FeatureType.NUMBER: "FP64",
    FeatureType.INTEGER: "INT64",
    FeatureType.BOOLEAN: "BOOL",
    FeatureType.STRING: "BYTES",
}
_INTEGER_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOATS = ("FP32", "FP64")
ACCEPTED_DATATYPES: dict[FeatureType, tuple[str, ...]] = {
    FeatureType.NUMBER: (*_FLOATS, *_INTEGER_RANGES),
    FeatureType.INTEGER: tuple(_INTEGER_RANGES),
    FeatureType.BOOLEAN: ("BOOL",),
    FeatureType.STRING: ("BYTES",),
}
# Every datatype of the protocol: one outside this set is not V2 at all; one inside it that a
# feature does not accept (FP16, BF16, an FP32 for an integer feature...) is the wrong datatype.
V2_DATATYPES = frozenset({*_INTEGER_RANGES, *_FLOATS, "BOOL", "BYTES", "FP16", "BF16"})


def _problem(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Input '{name}': {message}", {"inputs": {name: [message]}})


def _value_problem(datatype: str, value: Any) -> str | None:
    """What is wrong with one element of a tensor of `datatype` (null is a missing value: the schema check decides)."""
    if value is None:
        return None
    kind = type(value)
    if datatype in _INTEGER_RANGES:
        if kind is not int:
            return f"{datatype} data holds {json_type(value)}."
        low, high = _INTEGER_RANGES[datatype]
        return None if low <= value <= high else f"{value} is out of the range of {datatype}."
    if datatype in _FLOATS:
        if kind is float and not math.isfinite(value):
            return f"{datatype} data holds {value}, not a finite number."
        return None if kind in (int, float) else f"{datatype} data holds {json_type(value)}."
    if datatype == "BOOL":
        return None if kind is bool else f"BOOL data holds {json_type(value)}."
    return None if kind is str else f"BYTES data holds {json_type(value)}, not a string."


def _rows_of(name: str, shape: Any) -> int:
    """N, from a shape [N] or [N, 1]."""
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or any(type(d) is not int or d < 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise _problem(name, f"shape must be [N] or [N, 1] (one value per row), not {shape!r}.")
    return int(shape[0])


def _flat_data(name: str, shape: list[int], data: Any) -> list[Any]:
    """The tensor's elements in row-major order: `data` flat, or nested as `shape` says."""
    if not isinstance(data, list):
        raise _problem(name, f"data must be an array, not {json_type(data)}.")
    rows = shape[0]
    if len(data) != rows:
        raise _problem(name, f"data holds {len(data)} elements at its top level; shape {shape} needs {rows}.")
    if len(shape) == 2 and data and all(type(v) is list for v in data):
        if any(len(v) != 1 for v in data):
            raise _problem(name, f"data nested as rows must hold one value per row (shape {shape}).")
        return [v[0] for v in data]
    return data


class Tensors:
    """The `inputs` of an infer request, as the columns of a prediction's data.

    InputSchema.check takes it like any other spelling of `data`; it reads it with columns().
    """

    __slots__ = ("inputs",)

    def __init__(self, inputs: Sequence[Mapping[str, Any]]) -> None:
        self.inputs = inputs

    def columns(self, features: Mapping[str, CompiledFeature]) -> tuple[dict[str, list[Any]], int]:
        """{feature: values} and the row count N; raises InvalidRequest for a tensor that is not
        one of a feature (unknown or repeated name, shape, datatype, elements, lengths)."""
        columns: dict[str, list[Any]] = {}
        rows: dict[str, int] = {}
        for tensor in self.inputs:
            name, datatype = tensor["name"], tensor["datatype"]
            if name in columns:
                raise _problem(name, "given twice.")
            feature = features.get(name)
            if feature is None:
                shown = ", ".join(list(features)[:20]) + (", ..." if len(features) > 20 else "")
                raise _problem(name, f"no such input: the inputs are the model's features ({shown}).")
            if datatype not in V2_DATATYPES:
                raise _problem(name, f"{datatype!r} is not a datatype of the protocol.")
            accepted = ACCEPTED_DATATYPES[feature.type]
            if datatype not in accepted:
                raise _problem(name, f"a {feature.type} feature takes {', '.join(accepted)} tensors, not {datatype}.")
            shape = tensor["shape"]
            rows[name] = _rows_of(name, shape)
            values = _flat_data(name, shape, tensor["data"])
            for value in values:
                problem = _value_problem(datatype, value)
                if problem is not None:
                    raise _problem(name, problem)
            columns[name] = values
        if not rows:
            raise InvalidRequest("The request has no inputs: send one per feature.", {"inputs": ["No inputs."]})
        if len(set(rows.values())) > 1:
            raise InvalidRequest(
                "The inputs must have the same number of rows; got "
                + ", ".join(f"{k}: {n}" for k, n in rows.items())
                + ".",
                {"inputs": {k: [f"{n} rows."] for k, n in rows.items()}},
            )
        return columns, next(iter(rows.values()))


def _datatype_of(values: Sequence[Any]) -> str:
    """The datatype of a tensor of labels or predictions: BOOL, INT64, FP64 or BYTES."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int} and None not in values:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def labels_datatype(classes: Sequence[Any] | None) -> str:
    """The datatype of `predict` for a model with these `classes` (None: a regressor, FP64)."""
    return "FP64" if not classes else _datatype_of(classes)


def requested_outputs(outputs: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The names of the outputs asked for, in order, once each (`predict` when none);
    raises InvalidRequest for a name the models do not answer."""
    if not outputs:
        return [PREDICT]
    names = list(dict.fromkeys(o["name"] for o in outputs))
    unknown = [n for n in names if n not in OUTPUT_NAMES]
    if unknown:
        raise InvalidRequest(
            f"Unknown output {unknown[0]!r}: the outputs are {', '.join(OUTPUT_NAMES)}.",
            {"outputs": {n: ["Unknown output."] for n in unknown}},
        )
    return names


def output_tensors(prediction: Prediction, names: Sequence[str]) -> list[dict[str, Any]]:
    """The response's `outputs`: `predict` of shape [N]; `predict_proba` of shape [N, n_classes],
    its data flattened row-major, the classes in the model's order."""
    tensors = []
    for name in names:
        if name == PREDICT:
            values = prediction.predictions
            datatype = _datatype_of(values)
            data = values if datatype != "BYTES" else [v if isinstance(v, str) else str(v) for v in values]
            tensors.append({"name": PREDICT, "datatype": datatype, "shape": [len(values)], "data": data})
        else:
            rows = prediction.probabilities or []
            width = len(rows[0]) if rows else 0
            flat = [p for row in rows for p in row.values()]
            tensors.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [len(rows), width], "data": flat})
    return tensors
