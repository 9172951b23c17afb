"""Check prediction input against a version's feature schema and shape it for the model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from model_store.features import FeatureSpec, FeatureType
from serving.inference.errors import InvalidRows, TooManyRows, json_type
from serving.inference.tensors import Tensors
from serving.inference.texttable import TextTable, Unreadable

_MISSING = object()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NUMBER_LIMIT = 1.7e308  # a number's magnitude must stay below it (float64 tops out near 1.8e308)


_A_VALUE_OF = {
    FeatureType.NUMBER: "a number",
    FeatureType.INTEGER: "an integer",
    FeatureType.STRING: "a string",
    FeatureType.BOOLEAN: "a boolean",
}


class CompiledFeature:
    """One feature as every prediction checks it: its allowed values as a set, its value types."""

    __slots__ = ("allowed", "allowed_list", "maximum", "minimum", "name", "required", "type", "types")

    def __init__(self, spec: FeatureSpec) -> None:
        self.name = spec.name
        self.type = spec.type
        self.types = spec.type.python_types
        self.required = spec.required
        # `allowed` is what the checks enforce, `allowed_list` the values known (forms, what-if grids):
        # a feature that accepts unseen values lists them and enforces nothing.
        self.allowed = frozenset(spec.allowed) if spec.allowed is not None and not spec.accepts_unseen else None
        self.allowed_list = list(spec.allowed or ())
        self.minimum = spec.minimum
        self.maximum = spec.maximum


def _check_value(feature: CompiledFeature, value: Any) -> str | None:
    """The problem with one value, or None if it is fine (None values are handled by the caller)."""
    kind = feature.type
    if type(value) not in feature.types:
        return f"Must be {_A_VALUE_OF[kind]}, not {json_type(value)}."
    if kind is FeatureType.NUMBER and not -NUMBER_LIMIT < value < NUMBER_LIMIT:
        return "Number out of range."  # huge ints, and 1e999 (JSON parses it as inf)
    if kind is FeatureType.INTEGER and not INT64_MIN <= value <= INT64_MAX:
        return "Integer out of range."
    allowed = feature.allowed
    if allowed is not None and value not in allowed:
        listed = feature.allowed_list
        shown = ", ".join(map(repr, listed[:20])) + (", ..." if len(listed) > 20 else "")
        return f"Must be one of: {shown}."
    if feature.minimum is not None and value < feature.minimum:
        return f"Must be at least {feature.minimum:g}."
    if feature.maximum is not None and value > feature.maximum:
        return f"Must be at most {feature.maximum:g}."
    return None


def _fast_array(feature: CompiledFeature, column: list[Any]) -> np.ndarray | None:
    """The typed array of a column whose every value is fine, checked by numpy and set operations;
    None when any value may not be (a null, a wrong type, a value not allowed, a bound crossed): the
    caller then checks value by value (_check_value), so that errors name each offending row."""
    kind = feature.type
    if not set(map(type, column)) <= feature.types:
        return None
    if feature.allowed is not None and not feature.allowed.issuperset(column):
        return None
    if kind is FeatureType.STRING:
        return np.array(column, dtype=object)
    if kind is FeatureType.BOOLEAN:
        return np.array(column, dtype=bool)
    try:
        array = np.array(column, dtype=np.float64 if kind is FeatureType.NUMBER else np.int64)
    except OverflowError:  # an integer beyond int64 / float64
        return None
    if kind is FeatureType.NUMBER and not (np.abs(array) < NUMBER_LIMIT).all():
        return None
    if feature.minimum is not None and (array < feature.minimum).any():
        return None
    if feature.maximum is not None and (array > feature.maximum).any():
        return None
    return array


def _to_array(kind: FeatureType, column: list[Any]) -> np.ndarray:
    has_missing = any(v is None for v in column)
    if kind is FeatureType.NUMBER or (kind is FeatureType.INTEGER and has_missing):
        return np.array([math.nan if v is None else v for v in column], dtype=np.float64)
    if kind is FeatureType.INTEGER:
        return np.array(column, dtype=np.int64)
    if kind is FeatureType.BOOLEAN and not has_missing:
        return np.array(column, dtype=bool)
    return np.array([math.nan if v is None else v for v in column], dtype=object)


def _mixed_rows(data: list[Any]) -> InvalidRows:
    """The error for a list that mixes rows (arrays of values) with records (objects), or rows
    with other values: each item unlike the first is named."""
    if type(data[0]) is list:
        odd = {i: item for i, item in enumerate(data) if type(item) is not list}
        what = "an array of values (a row), as row 0 is"
    else:
        odd = {i: item for i, item in enumerate(data) if type(item) is list}
        what = "an object (a record), as row 0 is"
    return InvalidRows(
        "The data mixes rows given as arrays with records given as objects (or other values): "
        "use arrays only or objects only.",
        {str(i): {"_schema": [f"Must be {what}, not {json_type(item)}."]} for i, item in odd.items()},
    )


class InputSchema:
    """A version's feature schema, compiled once per version and used on every prediction."""

    def __init__(
        self,
        model: str,
        version: int | None,
        features: Sequence[FeatureSpec],
        column_names: Sequence[str] | None,
        max_rows: int,
    ) -> None:
        self.label = f"'{model}' version {version}" if version is not None else f"the uploaded model '{model}'"
        self.features = [CompiledFeature(f) for f in features]
        self.by_name = {f.name: f for f in self.features}
        # Models fitted on a DataFrame get one in their own column order; others get numpy.
        self.column_names = list(column_names) if column_names is not None else None
        self.max_rows = max_rows

    # -- shapes -------------------------------------------------------------------------
    def _columns(self, data: Any) -> tuple[dict[str, list[Any]], int, dict[str, Any]]:
        """Columns of equal length from any of the three shapes, plus shape-level errors."""
        if isinstance(data, dict):
            arrays = [isinstance(v, list) for v in data.values()]
            if data and all(arrays):
                lengths = {k: len(v) for k, v in data.items()}
                if len(set(lengths.values())) > 1:
                    raise InvalidRows(
                        "Columnar data needs arrays of one length; got "
                        + ", ".join(f"{k}: {n}" for k, n in lengths.items())
                        + ".",
                        {k: [f"Array of length {n}."] for k, n in lengths.items()},
                    )
                n = next(iter(lengths.values()))
                self._check_rows(n)
                return data, n, {}
            if any(arrays):
                raise InvalidRows(
                    "The data object mixes arrays and scalars: use all arrays (columns) or all scalars (one record).",
                    {k: ["Array among scalars."] for k, v in data.items() if isinstance(v, list)},
                )
            return {k: [v] for k, v in data.items()}, 1, {}
        if isinstance(data, Tensors):  # an Open Inference Protocol (V2) request's inputs
            tensor_columns, n = data.columns(self.by_name)
            self._check_rows(n)
            return tensor_columns, n, {}
        if isinstance(data, TextTable):
            self._check_rows(len(data.rows))
            return data.columns(self.by_name), len(data.rows), {}
        if isinstance(data, list):
            self._check_rows(len(data))
            if type(data[0]) is list:
                return self._positional_columns(data), len(data), {}
            columns: dict[str, list[Any]] = {}
            errors: dict[str, Any] = {}
            for i, record in enumerate(data):
                if not isinstance(record, dict):
                    if isinstance(record, list):
                        raise _mixed_rows(data)
                    errors[str(i)] = {"_schema": ["Each record must be an object."]}
                    continue
                for key, value in record.items():
                    columns.setdefault(key, [_MISSING] * len(data))[i] = value
            for name in self.by_name:
                columns.setdefault(name, [_MISSING] * len(data))
            return columns, len(data), errors
        raise InvalidRows(
            "'data' must be an object (columns or one record) or an array of records or of rows.",
            [f"Must be an object or an array, not {json_type(data)}."],
        )

    def _positional_columns(self, rows: list[Any]) -> dict[str, list[Any]]:
        """Columns from rows given as arrays of values in the schema's order; raises InvalidRows
        naming each row of another length, or that is no array."""
        width = len(self.features)
        if any(type(row) is not list for row in rows):
            raise _mixed_rows(rows)
        wrong = {
            str(i): {"_schema": [f"{len(row)} value{'' if len(row) == 1 else 's'}, not {width}."]}
            for i, row in enumerate(rows)
            if len(row) != width
        }
        if wrong:
            names = [f.name for f in self.features]
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise InvalidRows(
                f"Each row given as an array needs {width} values, one per feature in the schema's order "
                f"({shown}); {len(wrong)} row(s) do not: see errors.",
                wrong,
            )
        return {f.name: list(column) for f, column in zip(self.features, zip(*rows, strict=True), strict=True)}

    def _check_rows(self, n: int) -> None:
        if n == 0:
            raise InvalidRows("The data has no rows.", ["No rows."])
        if n > self.max_rows:
            raise TooManyRows(n, self.max_rows)

    # -- the check ----------------------------------------------------------------------
    def record(self, data: Any) -> dict[str, Any]:
        """The one record `data` holds, checked like a prediction row, as {feature: JSON value}
        in the schema's order (None for a missing optional feature).

        Raises InvalidRows (also for more or fewer than one row), as check() does.
        """
        self.check(data)
        columns, n, _ = self._columns(data)
        if n != 1:
            raise InvalidRows(f"'data' must be exactly one record; it holds {n} rows.", [f"{n} rows, not 1."])
        values = {name: column[0] for name, column in columns.items()}
        return {f.name: None if values.get(f.name, _MISSING) is _MISSING else values[f.name] for f in self.features}

    def check(self, data: Any) -> tuple[dict[str, np.ndarray], int]:
        """The checked columns (one typed array per feature, in the schema's order) and the row
        count; a runner assembles the model's input from them (serving.runners.runner.assemble).

        Raises InvalidRows naming every offending feature (and row), TooManyRows past the limit.
        """
        columns, n, row_errors = self._columns(data)
        feature_errors: dict[str, list[str]] = {}

        def problem(row: int, name: str, message: str) -> None:
            target = row_errors.setdefault(str(row), {}) if n > 1 else feature_errors
            target.setdefault(name, []).append(message)

        for name in columns:
            if name not in self.by_name:
                if n > 1 and isinstance(data, list):
                    for row, value in enumerate(columns[name]):
                        if value is not _MISSING:
                            problem(row, name, "Unknown feature.")
                else:
                    feature_errors[name] = ["Unknown feature."]

        typed: dict[str, np.ndarray] = {}
        checked: dict[str, list[Any]] = {}  # columns checked value by value, typed once all pass
        for feature in self.features:
            name = feature.name
            column = columns.get(name)
            if column is None:  # an absent column in columnar / one-record data
                if feature.required:
                    feature_errors[name] = ["Missing feature."]
                    continue
                column = [None] * n
            fast = _fast_array(feature, column)
            if fast is not None:
                typed[name] = fast
                continue
            values: list[Any] = []
            for row, value in enumerate(column):
                if type(value) is Unreadable:  # a CSV field not of the feature's type
                    problem(row, name, value.problem)
                    values.append(None)
                    continue
                if value is _MISSING or value is None:
                    if feature.required:
                        problem(row, name, "Missing feature." if value is _MISSING else "Must not be null.")
                    values.append(None)
                    continue
                message = _check_value(feature, value)
                if message is not None:
                    problem(row, name, message)
                values.append(value)
            checked[name] = values

        errors: dict[str, Any] = {**feature_errors, **row_errors}
        if errors:
            count = sum(len(v) if isinstance(v, dict) else 1 for v in errors.values())
            raise InvalidRows(
                f"The input does not match the feature schema of {self.label}: {count} problem(s).", errors
            )
        for name, values in checked.items():
            typed[name] = _to_array(self.by_name[name].type, values)
        return {f.name: typed[f.name] for f in self.features}, n
