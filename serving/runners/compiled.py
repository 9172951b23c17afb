"""The ONNX engine, inside a runner: compile a loaded model, verify the graph against it, check
an ONNX file before opening it, and run it with onnxruntime on one thread.

A graph made from an uploaded object is as untrusted as the object: it is only ever parsed and run
in a confined runner, and only after check_graph found nothing but the standard operators (the
default and `ai.onnx.ml` domains), no external data and no functions of other domains; no custom
operator library is ever registered with onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The operator domains a graph may use: the standard operators and the classical ML ones.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
# The opsets the converters target (onnxruntime 1.17, the lowest allowed, runs both).
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
PROBABILITY_TOLERANCE = 1e-5
REGRESSION_TOLERANCE = 1e-5  # relative (absolute below 1)
# The input types the compiler tries for the numeric features, in order: the first that verifies wins.
_NUMERIC_TYPES = ("double", "float")
_NUMPY_TYPES = {
    "tensor(double)": np.float64,
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class GraphRefused(Exception):
    """An ONNX file this service will not run: the reason is safe to show."""


class NotCompiled(Exception):
    """The model was not compiled: the reason says why (recorded as the version's engine_detail)."""


def check_graph(data: bytes) -> Any:
    """Parse an ONNX file and refuse it unless it uses only the allowed operator domains, holds
    no external data and no functions of other domains. Returns the parsed ModelProto.
    Raises GraphRefused."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's own decode errors
        raise GraphRefused(f"not an ONNX file ({type(exc).__name__})") from None
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_DOMAINS:
            raise GraphRefused(f"it imports the operator set of domain {opset.domain!r}")
    if len(model.functions):
        raise GraphRefused("it defines functions of its own")

    def graphs(graph: Any) -> Any:
        yield graph
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    yield from graphs(attribute.g)
                for sub in attribute.graphs:
                    yield from graphs(sub)

    def external(tensor: Any) -> bool:
        return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0

    for graph in graphs(model.graph):
        for node in graph.node:
            if node.domain not in ALLOWED_DOMAINS:
                raise GraphRefused(f"its node {node.op_type!r} is of domain {node.domain!r}")
            for attribute in node.attribute:
                tensors = [attribute.t] if attribute.HasField("t") else []
                if any(external(t) for t in [*tensors, *attribute.tensors]):
                    raise GraphRefused("it refers to external data")
        if any(external(t) for t in graph.initializer) or any(external(t.values) for t in graph.sparse_initializer):
            raise GraphRefused("it refers to external data")
    return model


def open_session(data: bytes) -> Any:
    """An onnxruntime session of a checked graph: one thread, sequential, the CPU provider only."""
    check_graph(data)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@dataclass
class Engine:
    """A verified graph, ready to predict: its session and how to feed it."""

    session: Any
    # "columns": an input per feature, named after it ([N, 1] each); "matrix": one [N, F] input.
    layout: str
    inputs: list[tuple[str, Any]]  # (name, numpy dtype)
    features: list[str]
    classifier: bool

    @classmethod
    def from_session(cls, session: Any, features: Sequence[str], classifier: bool) -> Engine:
        inputs = [(i.name, _NUMPY_TYPES.get(i.type)) for i in session.get_inputs()]
        if any(t is None for _, t in inputs):
            raise GraphRefused("an input of a type this service does not feed")
        names = [name for name, _ in inputs]
        if names == list(features):
            layout = "columns"
        elif len(inputs) == 1:
            layout = "matrix"
        else:
            raise GraphRefused("its inputs are not the model's features")
        outputs = len(session.get_outputs())
        if outputs != (2 if classifier else 1):
            raise GraphRefused(f"{outputs} outputs where {2 if classifier else 1} were expected")
        return cls(session, layout, inputs, list(features), classifier)

    def feed(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The graph's inputs from the checked columns; None when a value is missing (NaN, a
        missing string): the ONNX engine is not verified on missing values."""
        if self.layout == "matrix":
            ((name, dtype),) = self.inputs
            stacked = []
            for feature in self.features:
                numeric = _numeric(columns[feature])
                if numeric is None:
                    return None
                stacked.append(numeric)
            return {name: np.column_stack(stacked).astype(dtype, copy=False)}
        fed = {}
        for name, dtype in self.inputs:
            column = columns[name]
            if dtype is object:
                if column.dtype != object or not all(type(v) is str for v in column):
                    return None
                fed[name] = column.reshape(-1, 1)
            else:
                numeric = _numeric(column)
                if numeric is None:
                    return None
                fed[name] = numeric.astype(dtype, copy=False).reshape(-1, 1)
        return fed

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) of one batch."""
        outputs = self.session.run(None, feed)
        if self.classifier:
            labels, proba = outputs
            return np.asarray(labels).ravel(), np.asarray(proba, dtype=np.float64)
        return np.asarray(outputs[0], dtype=np.float64).reshape(len(outputs[0]), -1)[:, 0], None


def _numeric(column: np.ndarray) -> np.ndarray | None:
    if column.dtype.kind not in "biuf":
        return None
    if column.dtype.kind == "f" and np.isnan(column).any():
        return None
    return column


# -- compiling, at upload -------------------------------------------------------------------------
def compile_model(
    estimator: Any,
    features: Sequence[dict[str, Any]],
    batches: Sequence[tuple[Any, dict[str, np.ndarray]]],
    predict_sklearn: Any,
) -> tuple[bytes, Engine]:
    """Convert `estimator` to ONNX and verify it on `batches` ((model input, checked columns) per
    batch) against `predict_sklearn(model_input, probabilities)`. Returns the graph and its engine.
    Raises NotCompiled saying why (the last attempt's reason)."""
    reason = _unsupported(estimator)
    if reason is not None:
        raise NotCompiled(reason)
    _register_boosters(estimator)
    classifier = hasattr(estimator, "classes_")
    probabilities = classifier and hasattr(estimator, "predict_proba")
    names = [f["name"] for f in features]
    expected: list[Any] = []  # the model's own answers, computed once a graph is there to compare
    attempts: list[str] = []
    strings = any(f["type"] == "string" for f in features)
    # Integers and booleans first as numbers (what scikit-learn computes with), then as themselves.
    widths = (True, False) if any(f["type"] in ("integer", "boolean") for f in features) else (True,)
    tries = [("columns", numeric, widen) for numeric in _NUMERIC_TYPES for widen in widths]
    tries += [] if strings else [("matrix", numeric, True) for numeric in _NUMERIC_TYPES]
    for layout, numeric, widen in tries:
        try:
            data = _convert(estimator, features, layout, numeric, probabilities, widen)
        except NotCompiled as exc:
            attempts.append(str(exc))
            continue
        try:
            engine = Engine.from_session(open_session(data), names, classifier)
        except GraphRefused as exc:
            attempts.append(f"the compiled graph is refused: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            attempts.append(f"onnxruntime cannot open the compiled graph ({type(exc).__name__})")
            continue
        if not expected:
            for model_input, _ in batches:
                try:
                    expected.append(predict_sklearn(model_input, probabilities))
                except Exception as exc:  # noqa: BLE001 - the model's own code
                    raise NotCompiled(
                        f"the model cannot predict the verification rows ({type(exc).__name__})"
                    ) from None
        mismatch = _verify(engine, batches, expected)
        if mismatch is None:
            return data, engine
        attempts.append(f"with {numeric} inputs, {mismatch}")
    if not attempts:
        raise NotCompiled("no input layout fits the model")
    raise NotCompiled(attempts[-1] if len(set(attempts)) == 1 else "; ".join(dict.fromkeys(attempts))[:1000])


# Gradient-boosting libraries with a scikit-learn API, converted by onnxmltools' converters
# registered with skl2onnx (as skl2onnx's own examples do), so that they convert alone and as the
# final step of a pipeline: (base class name, its package, kind), and each package's converter.
_BOOSTERS = (
    ("LGBMClassifier", "lightgbm", "classifier"),
    ("LGBMRegressor", "lightgbm", "regressor"),
    ("XGBClassifier", "xgboost", "classifier"),
    ("XGBRegressor", "xgboost", "regressor"),
)
_CONVERTERS = {
    "lightgbm": ("onnxmltools.convert.lightgbm.operator_converters.LightGbm", "convert_lightgbm"),
    "xgboost": ("onnxmltools.convert.xgboost.operator_converters.XGBoost", "convert_xgboost"),
}


def _steps(estimator: Any) -> list[Any]:
    return [estimator, *(s for _, s in getattr(estimator, "steps", ()))]


def _unsupported(estimator: Any) -> str | None:
    for step in _steps(estimator):
        mro = {cls.__name__ for cls in type(step).__mro__}
        if mro & {"LGBMModel", "XGBModel"} and not mro & {name for name, *_ in _BOOSTERS}:
            return f"{type(step).__name__} models are not compiled to ONNX"
    return None


def _register_boosters(estimator: Any) -> None:
    """Register onnxmltools' converter for each LightGBM or XGBoost step of `estimator` with
    skl2onnx (by the step's own class). Raises NotCompiled when onnxmltools cannot be imported."""
    import importlib

    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    for step in _steps(estimator):
        bases = {(cls.__name__, cls.__module__.split(".")[0]) for cls in type(step).__mro__}
        for name, package, kind in _BOOSTERS:
            if (name, package) not in bases:
                continue
            module_name, function = _CONVERTERS[package]
            try:
                convert = getattr(importlib.import_module(module_name), function)
            except ImportError as exc:
                raise NotCompiled(
                    f"onnxmltools, which converts {name} models, cannot be imported ({exc.name})"
                ) from None
            if kind == "classifier":
                shapes, options = calculate_linear_classifier_output_shapes, {"nocl": [True, False], "zipmap": [False]}
            else:
                shapes, options = calculate_linear_regressor_output_shapes, None
            update_registered_converter(
                type(step), f"{package}.{type(step).__name__}", shapes, convert, options=options
            )
            break


def _convert(
    estimator: Any, features: Sequence[dict[str, Any]], layout: str, numeric: str, probabilities: bool, widen: bool
) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import (
        BooleanTensorType,
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    number = DoubleTensorType if numeric == "double" else FloatTensorType
    if layout == "matrix":
        initial_types = [("X", number([None, len(features)]))]
    else:
        kinds = {"number": number, "integer": Int64TensorType, "string": StringTensorType, "boolean": BooleanTensorType}
        if widen:
            kinds.update(integer=number, boolean=number)
        initial_types = [(f["name"], kinds[f["type"]]([None, 1])) for f in features]
    options = None
    if probabilities:  # as one tensor, not a list of maps
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        options = {id(final): {"zipmap": False}}
    try:
        model = to_onnx(estimator, initial_types=initial_types, options=options, target_opset=TARGET_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter's own errors, and the model's
        raise NotCompiled(f"skl2onnx cannot convert it ({_short(exc)})") from None
    return bytes(model.SerializeToString())


def _short(exc: BaseException) -> str:
    message = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"{name}: {message[:200]}" if message and "/" not in message else name


def _verify(
    engine: Engine, batches: Sequence[tuple[Any, dict[str, np.ndarray]]], expected: Sequence[tuple[Any, Any]]
) -> str | None:
    """None when the graph answers every batch as the model does, else the first difference."""
    offset = 0
    for (_, columns), (want, want_proba) in zip(batches, expected, strict=True):
        feed = engine.feed(columns)
        if feed is None:
            return "a verification row holds a missing value"
        try:
            got, proba = engine.run(feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            return f"onnxruntime failed on the verification rows ({type(exc).__name__})"
        want = np.asarray(want)
        if engine.classifier:
            for i, (a, b) in enumerate(zip(want.tolist(), got.tolist(), strict=True)):
                if type(a) is not type(b) or a != b:
                    return f"row {offset + i} is labelled {b!r} by the graph, {a!r} by the model"
            if want_proba is None:
                offset += len(want)
                continue
            if proba is None or proba.shape != np.shape(want_proba):
                return "its probabilities do not have the model's shape"
            diff = np.abs(proba - want_proba)
            if not (diff <= PROBABILITY_TOLERANCE).all():
                row = int(np.argmax(diff.max(axis=1)))
                return (
                    f"row {offset + row}'s probabilities differ by up to {float(np.nanmax(diff)):.3g} "
                    f"(tolerance {PROBABILITY_TOLERANCE:g})"
                )
        else:
            if want.dtype.kind not in "biuf" or want.shape != got.shape:
                return "its predictions do not have the model's type or shape"
            want = want.astype(np.float64)
            scale = np.maximum(np.abs(want), 1.0)
            diff = np.abs(got - want) / scale
            if not (diff <= REGRESSION_TOLERANCE).all():
                row = int(np.nanargmax(diff)) if not np.isnan(diff).all() else 0
                return (
                    f"row {offset + row} is predicted {got[row]!r} by the graph, {want[row]!r} by the model "
                    f"(relative difference {float(np.nanmax(diff)) if not np.isnan(diff).all() else math.nan:.3g})"
                )
        offset += len(want)
    return None
