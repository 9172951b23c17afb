"""Marshmallow schemas of the HTTP contract (they also write the OpenAPI document)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate
from werkzeug.datastructures import FileStorage

from model_store.features import POSITIONAL, FeatureSpec, FeatureType
from registry.models import EVENT_ACTIONS
from registry.names import text_problem
from registry.service import MAX_FEATURE_NAME_LENGTH
from serving.api.strictjson import InvalidJSON, loads_strict
from serving.inference.whatif import DEFAULT_POINTS, DERIVED_RANGE_DOC, MAX_POINTS, MIN_POINTS


class StrictSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE
        ordered = True


class FiniteFloat(fields.Float):
    """A JSON number that is finite (NaN and infinities cannot be sent as JSON anyway)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_nan=False, **kwargs)


class Text(fields.String):
    """A string the registry can store (registry.names.text_problem): a NUL or a lone surrogate
    is a 422 here, not a database error on write."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        problem = text_problem(text)
        if problem:
            raise ma.ValidationError(problem)
        return text


def _is_finite(number: float) -> bool:
    """Whether a number is finite as a float: JSON parses 1e999 as inf, and an integer of 400
    digits is no float at all (math.isfinite raises for it)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


_ACCEPTS_UNSEEN_DOC = (
    "API v1.1. True when `allowed` lists the values the model was fitted on (for forms and docs) and the "
    "model takes others too, as an encoder with handle_unknown='ignore' does: a value not in `allowed` "
    "is then accepted. False (the default) enforces `allowed`."
)


class FeatureSchema(StrictSchema):
    name = Text(required=True, validate=validate.Length(min=1, max=MAX_FEATURE_NAME_LENGTH))
    type = fields.String(load_default=FeatureType.NUMBER.value, validate=validate.OneOf([t.value for t in FeatureType]))
    required = fields.Boolean(load_default=True)
    allowed = fields.List(fields.Raw(), load_default=None, allow_none=True)
    minimum = FiniteFloat(load_default=None, allow_none=True)
    maximum = FiniteFloat(load_default=None, allow_none=True)
    accepts_unseen = fields.Boolean(load_default=False, metadata={"description": _ACCEPTS_UNSEEN_DOC})

    @ma.validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        kind = FeatureType(data.get("type", FeatureType.NUMBER.value))
        if not kind.is_numeric and (data.get("minimum") is not None or data.get("maximum") is not None):
            raise ma.ValidationError("Bounds apply to number and integer features only.", "minimum")
        low, high = data.get("minimum"), data.get("maximum")
        if low is not None and high is not None and low > high:
            raise ma.ValidationError("minimum is greater than maximum.", "minimum")
        allowed = data.get("allowed")
        if allowed is not None:
            if not allowed:
                raise ma.ValidationError("allowed must list at least one value.", "allowed")
            bad = [v for v in allowed if not kind.accepts(v) or (kind is FeatureType.NUMBER and not _is_finite(v))]
            if bad:
                raise ma.ValidationError(f"Values not of type {kind.value}: {bad[:5]!r}.", "allowed")
        elif data.get("accepts_unseen"):
            raise ma.ValidationError("accepts_unseen applies to a feature with allowed values only.", "accepts_unseen")

    @ma.post_load
    def _spec(self, data: dict[str, Any], **_: Any) -> FeatureSpec:
        return FeatureSpec.from_json(data)


class DeclaredFeatures(fields.List):
    """Upload metadata's `features`: the declared schema (a list of features), or the word
    "positional" (a model fitted without feature names gets x0, x1, ..., all numbers)."""

    def __init__(self) -> None:
        super().__init__(fields.Nested(FeatureSchema))

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value == POSITIONAL:
            return POSITIONAL
        if not isinstance(value, list):
            raise ma.ValidationError(f'Must be a list of features, or "{POSITIONAL}".')
        if not 1 <= len(value) <= 10_000:
            raise ma.ValidationError("Must list from 1 to 10000 features.")
        return super()._deserialize(value, attr, data, **kwargs)


MAX_DESCRIPTION_LENGTH = 10_000


def version_description() -> Text:
    return Text(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION_LENGTH))


def version_tags() -> fields.Dict:
    return fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=255)),
        values=Text(validate=validate.Length(max=10_000)),
    )


class UploadMetadataSchema(StrictSchema):
    description = version_description()
    features = DeclaredFeatures()
    tags = version_tags()
    aliases = fields.List(fields.String(), validate=validate.Length(max=100))
    example = fields.Raw(metadata={"description": "A `data` value the new version must predict without error."})


class ArtifactFile(fields.Raw):
    """A multipart file part; the same field sent as plain text is no artifact."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ma.ValidationError("Not a file: send the artifact as a file part (with a filename).")
        return value


class FieldProblem:
    """What is wrong with one field that the contract answers with a message of its own (see
    serving.api.jsonbody.StrictJSONParser.handle_error): `detail` goes in the errors.

    Marshmallow keeps a ValidationError's messages as given when they are no list or dict, so
    this arrives at the parser whole, under the field's name.
    """

    def __init__(self, message: str, detail: list[str] | dict[str, Any]) -> None:
        self.message = message
        self.detail = detail

    def __repr__(self) -> str:
        return f"FieldProblem({self.message!r}, {self.detail!r})"


class JSONObject(fields.Field):  # not Field[...]: marshmallow 3 has no generic Field
    """A form field whose text is a JSON object (strict: no NaN, bounded depth), loaded with
    `nested`; blank text is an empty object. Documented as the string it is."""

    default_error_messages = {"invalid": "Not a valid string."}  # noqa: RUF012 - as marshmallow declares it

    def __init__(self, nested: type[ma.Schema], *, what: str, metadata: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(metadata={"type": "string", **metadata}, **kwargs)
        self.nested = nested
        self.what = what

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, str):  # a file part, say
            raise self.make_error("invalid")
        if not value.strip():
            return {}
        try:
            parsed = loads_strict(value)
        except InvalidJSON as exc:
            raise ma.ValidationError(FieldProblem(f"'{attr}' is {exc}.", ["Not valid JSON."])) from None  # type: ignore[arg-type]
        if not isinstance(parsed, dict):
            raise ma.ValidationError(FieldProblem(f"'{attr}' must be a JSON object.", ["Not an object."]))  # type: ignore[arg-type]
        try:
            loaded: dict[str, Any] = self.nested().load(parsed)
        except ma.ValidationError as exc:
            raise ma.ValidationError(FieldProblem(f"The {self.what} is invalid: see errors.", exc.messages)) from None  # type: ignore[arg-type]
        return loaded


class UploadSchema(StrictSchema):
    """The multipart body of an upload."""

    file = ArtifactFile(
        required=True,
        metadata={"type": "string", "format": "binary", "description": "joblib, pickle or skops file"},
    )
    metadata = JSONObject(
        UploadMetadataSchema,
        what="upload metadata",
        metadata={
            "description": "JSON object: description, features (the feature schema, or "
            '`"positional"`: a model fitted without feature names gets x0, x1, ... , all numbers), '
            "tags, aliases, example"
        },
    )


def bound(value: float | None, kind: str) -> float | int | None:
    """A stored bound as JSON: an integer feature's bounds are integers."""
    if value is not None and kind == "integer" and float(value).is_integer():
        return int(value)
    return value


# The backend engines (API v1.1): what a request may ask for; an answer names one of the last two.
ENGINE_CHOICES = ("auto", "sklearn", "onnx")


class FeatureOutSchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    type = fields.String(required=True)
    required = fields.Boolean(required=True)
    allowed = fields.List(fields.Raw(), allow_none=True, required=True)
    minimum = fields.Function(
        lambda f: bound(f.minimum, f.type),
        allow_none=True,
        required=True,
        metadata={"type": "number", "nullable": True},
    )
    maximum = fields.Function(
        lambda f: bound(f.maximum, f.type),
        allow_none=True,
        required=True,
        metadata={"type": "number", "nullable": True},
    )
    accepts_unseen = fields.Boolean(
        required=True,
        metadata={"description": _ACCEPTS_UNSEEN_DOC},
    )


class VersionSummarySchema(ma.Schema):
    class Meta:
        ordered = True

    model = fields.Function(lambda v: v.model.name, required=True)
    version = fields.Integer(required=True)
    aliases = fields.Function(lambda v: [a.name for a in v.aliases], required=True)
    description = fields.String(allow_none=True, required=True)
    format = fields.String(required=True)
    sha256 = fields.String(required=True)
    size_bytes = fields.Integer(required=True)
    estimator = fields.String(required=True)
    has_predict_proba = fields.Boolean(required=True)
    tags = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    created_at = fields.DateTime(format="iso", required=True)


class VersionSchema(VersionSummarySchema):
    classes = fields.List(fields.Raw(), allow_none=True, required=True)
    features = fields.List(fields.Nested(FeatureOutSchema), required=True)
    library_versions = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    example = fields.Raw(
        allow_none=True,
        required=True,
        metadata={"description": "The upload's `example` (a `data` value) as it was given; null when none was"},
    )
    engines = fields.List(
        fields.String(validate=validate.OneOf(ENGINE_CHOICES[1:])),
        required=True,
        metadata={"description": "The engines this version predicts with: `sklearn`, and `onnx` when it was compiled"},
    )
    engine_detail = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "Why the version has no `onnx` engine (null when it has one, or was never tried)"},
    )


class ModelSummarySchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    description = fields.String(allow_none=True, required=True)
    latest_version = fields.Integer(allow_none=True, required=True)
    aliases = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    created_at = fields.DateTime(format="iso", required=True)
    updated_at = fields.DateTime(format="iso", required=True)


class ModelDetailSchema(ModelSummarySchema):
    versions = fields.List(fields.Nested(VersionSummarySchema), required=True)


class EventsQuerySchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE  # page and page_size are the pagination's
        ordered = True

    model = Text(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Only the events of this model name (also of a model since deleted)"},
    )


class EventSchema(ma.Schema):
    class Meta:
        ordered = True

    id = fields.Integer(required=True)
    at = fields.DateTime(format="iso", required=True)
    actor = fields.String(
        required=True,
        metadata={"description": "The label of the admin token that made the change (MAAS_ADMIN_TOKEN's: admin)"},
    )
    action = fields.String(
        required=True, validate=validate.OneOf(EVENT_ACTIONS), metadata={"enum": list(EVENT_ACTIONS)}
    )
    model = fields.String(required=True)
    version = fields.Integer(allow_none=True, required=True)
    alias = fields.String(allow_none=True, required=True)
    detail = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={
            "description": "What changed: upload {sha256, size_bytes, format}; alias_set {previous_version, "
            "version}; alias_delete {previous_version}; version_delete {sha256, size_bytes}; model_update "
            "{description: {old, new}, tags: {old, new}} (the fields given); model_deleted: true on the "
            "alias_delete and version_delete events of a model deleted with force=true"
        },
    )


class PatchModelSchema(StrictSchema):
    description = Text(required=True, allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION_LENGTH))


class PatchVersionSchema(StrictSchema):
    """A version's description and tags (either or both); `tags` replaces the whole map."""

    description = version_description()
    tags = version_tags()

    @ma.validates_schema
    def _something(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("Send 'description', 'tags' or both.", "_schema")


class DeleteModelQuerySchema(StrictSchema):
    force = fields.Boolean(
        load_default=False,
        truthy={"true"},
        falsy={"false"},
        metadata={
            "description": "`true` deletes the model's versions and aliases too (else 409 while it has versions)"
        },
    )


class AliasRequestSchema(StrictSchema):
    version = fields.Raw(
        required=True,
        metadata={"description": "The version the alias points to (a number, or a version selector)", "example": 3},
    )


SELECTOR_DOC = {
    "description": "Version selector: a version number, an alias, or `latest` (default)",
    "oneOf": [{"type": "integer"}, {"type": "string"}],
    "nullable": True,
}


# Two applicants for the demo model (serving/operations/demo.py), as the documents' examples.
EXAMPLE_COLUMNS: dict[str, list[Any]] = {
    "age": [35, 52],
    "income": [42000, 61000],
    "loan_amount": [12000, 30000],
    "term_months": [36, 60],
    "gender": ["male", "female"],
    "employment": ["salaried", "self-employed"],
    "home_ownership": ["rent", "own"],
}


class DataFrameSplitSchema(StrictSchema):
    """MLflow's `dataframe_split`: column names and rows of values in their order."""

    columns = fields.List(fields.String(), required=True, metadata={"example": ["age", "income"]})
    data = fields.Raw(
        required=True,
        metadata={
            "type": "array",
            "items": {"type": "array", "items": {}},
            "description": "Rows: each an array of one value per column",
            "example": [[35, 42000], [52, 61000]],
        },
    )
    index = fields.Raw(metadata={"description": "Ignored (pandas writes it)"})


def _rows_problems(rows: Any, width: int) -> dict[str, list[str]]:
    """What is wrong with each row of a `dataframe_split` (by its index): no array, or another length."""
    problems: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        if type(row) is not list:
            problems[str(i)] = ["Must be an array of values, one per column."]
        elif len(row) != width:
            problems[str(i)] = [f"{len(row)} value{'' if len(row) == 1 else 's'}, not {width} (one per column)."]
    return problems


SPELLINGS = ("data", "dataframe_split", "dataframe_records")


def _problem(message: str, name: str, detail: list[str] | dict[str, Any]) -> ma.ValidationError:
    """A problem of the body answered with its own message (see FieldProblem), `detail` under `name`."""
    return ma.ValidationError(FieldProblem(message, detail), name)  # type: ignore[arg-type]


def engine_field() -> fields.String:
    return fields.String(
        load_default="auto",
        validate=validate.OneOf(ENGINE_CHOICES),
        metadata={
            "description": "The backend engine: `sklearn` (the model's own predict/predict_proba), `onnx` (the "
            "version compiled to ONNX at upload, run by onnxruntime; 422 when the version has none), or `auto` "
            "(onnx where the version has it)",
            "enum": list(ENGINE_CHOICES),
        },
    )


def engine_answered() -> fields.String:
    return fields.String(
        required=True,
        validate=validate.OneOf(ENGINE_CHOICES[1:]),
        metadata={"description": "The engine that answered", "enum": list(ENGINE_CHOICES[1:])},
    )


class PathPredictSchema(StrictSchema):
    """The rows come in exactly one of three spellings: `data` (this service's own shapes), or
    MLflow's `dataframe_split` / `dataframe_records`; the latter two are loaded as `data` (columns
    and records), so everything after this schema sees one spelling."""

    data = fields.Raw(
        metadata={
            "description": "Columns (object of equal-length arrays), one record (object of scalars), records "
            "(array of objects), or rows (array of arrays, each holding one value per feature in the schema's "
            "order). Exactly one of `data`, `dataframe_split`, `dataframe_records`.",
            "example": EXAMPLE_COLUMNS,
        },
    )
    dataframe_split = fields.Nested(
        DataFrameSplitSchema,
        metadata={
            "description": "MLflow's scoring format, in place of `data`: column names (any order) and rows "
            "(`index` is ignored). Errors name rows and features under `errors.json.data`, as for `data`."
        },
    )
    dataframe_records = fields.List(
        fields.Dict(),
        metadata={
            "description": "MLflow's scoring format, in place of `data`: one object per row. Errors are named "
            "under `errors.json.data`, as for `data`."
        },
    )
    return_probabilities = fields.Boolean(load_default=False)
    engine = engine_field()

    @ma.validates_schema
    def _one_spelling(self, body: dict[str, Any], **_: Any) -> None:
        given = [name for name in SPELLINGS if name in body]
        if not given:
            raise _problem(
                "The rows are missing: send them as 'data' (or as MLflow's 'dataframe_split' or 'dataframe_records').",
                "data",
                ["Missing data for required field."],
            )
        if len(given) > 1:
            raise _problem(
                f"Send the rows once: the body has {' and '.join(repr(n) for n in given)}; "
                "use exactly one of 'data', 'dataframe_split', 'dataframe_records'.",
                "_schema",
                [f"Exactly one of data, dataframe_split, dataframe_records; not {' and '.join(given)}."],
            )
        split = body.get("dataframe_split")
        if split is None:
            return
        columns, rows = split["columns"], split["data"]
        if not isinstance(rows, list):
            raise _problem(
                "'dataframe_split.data' must be an array of rows.", "dataframe_split", {"data": ["Not a valid list."]}
            )
        repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
        if repeated:
            shown = ", ".join(repeated[:20]) + (", ..." if len(repeated) > 20 else "")
            raise _problem(
                f"'dataframe_split.columns' names a column more than once: {shown}.",
                "dataframe_split",
                {"columns": [f"Named more than once: {shown}."]},
            )
        problems = _rows_problems(rows, len(columns))
        if problems:
            raise _problem(
                f"Each row of 'dataframe_split.data' needs {len(columns)} values, one per column; "
                f"{len(problems)} row(s) do not: see errors.",
                "dataframe_split",
                {"data": problems},
            )

    @ma.post_load
    def _as_data(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        split = body.pop("dataframe_split", None)
        if split is not None:
            columns, rows = split["columns"], split["data"]
            if not rows or not columns:  # no rows, or rows of no values: records say how many
                body["data"] = [{} for _ in rows]
            else:
                body["data"] = {
                    name: list(values) for name, values in zip(columns, zip(*rows, strict=True), strict=True)
                }
        records = body.pop("dataframe_records", None)
        if records is not None:
            body["data"] = records
        return body


class WhatIfSchema(StrictSchema):
    data = fields.Raw(
        required=True,
        metadata={
            "description": "The baseline: exactly one record, checked like a prediction row",
            "example": {name: values[0] for name, values in EXAMPLE_COLUMNS.items()},
        },
    )
    features = fields.List(
        Text(),
        validate=validate.Length(min=1, max=10_000),
        metadata={
            "description": "The features to sweep; absent: every feature that can be swept (numbers, "
            "booleans, strings with allowed values)",
            "example": ["income", "gender"],
        },
    )
    points = fields.Integer(
        load_default=DEFAULT_POINTS,
        validate=validate.Range(MIN_POINTS, MAX_POINTS),
        metadata={
            "description": "Grid size of a numeric feature, both ends included (an integer feature "
            "takes distinct integers only)"
        },
    )
    ranges = fields.Dict(
        keys=Text(),
        values=fields.List(FiniteFloat(), validate=validate.Length(equal=2)),
        load_default=dict,
        metadata={
            "description": "[low, high] per numeric feature, inside its bounds. " + DERIVED_RANGE_DOC,
            "example": {"income": [10000, 150000]},
        },
    )
    target = Text(
        load_default=None,
        allow_none=True,
        metadata={"description": "The class (str(label)) whose probability is the score; default the last class"},
    )
    engine = engine_field()


class FlipSchema(ma.Schema):
    class Meta:
        ordered = True

    value = fields.Raw(required=True)
    prediction = fields.Raw(required=True)
    score = fields.Float(allow_none=True, required=True)


class SweptFeatureSchema(ma.Schema):
    class Meta:
        ordered = True

    name = fields.String(required=True)
    values = fields.List(fields.Raw(), required=True)
    predictions = fields.List(fields.Raw(), required=True)
    scores = fields.List(fields.Float(allow_none=True), required=True)
    swing = fields.Float(allow_none=True, required=True, metadata={"description": "Largest score minus smallest"})
    flip = fields.Nested(
        FlipSchema,
        allow_none=True,
        required=True,
        metadata={"description": "The swept value nearest the baseline's whose prediction differs from it"},
    )


class BaselineSchema(ma.Schema):
    class Meta:
        ordered = True

    prediction = fields.Raw(required=True)
    score = fields.Float(allow_none=True, required=True)


class WhatIfResponseSchema(ma.Schema):
    class Meta:
        ordered = True

    model = fields.String(required=True)
    version = fields.Integer(required=True)
    engine = engine_answered()
    target = fields.String(allow_none=True, required=True)
    baseline = fields.Nested(BaselineSchema, required=True)
    features = fields.List(
        fields.Nested(SweptFeatureSchema),
        required=True,
        metadata={"description": "Ordered by swing, largest first; null swings last"},
    )


class PredictSchema(PathPredictSchema):
    model = fields.String(required=True, metadata={"example": "credit-default"})
    version = fields.Raw(load_default=None, allow_none=True, metadata=SELECTOR_DOC)


class DefaultPredictSchema(PredictSchema):
    model = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "Defaults to the default model (MAAS_DEFAULT_MODEL, or the only one)"},
    )


class ErrorSchema(ma.Schema):
    """Every error's body (the contract's Errors section); `errors` is optional detail."""

    class Meta:
        ordered = True

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code"})
    status = fields.String(required=True, metadata={"description": "The HTTP status name"})
    message = fields.String(required=True, metadata={"description": "A human-readable summary"})
    errors = fields.Dict(metadata={"description": "Detail, e.g. the offending features per row"})


class PredictResponseSchema(ma.Schema):
    class Meta:
        ordered = True

    model = fields.String(required=True)
    version = fields.Integer(required=True)
    engine = engine_answered()
    predictions = fields.List(fields.Raw(), required=True)
    probabilities = fields.List(
        fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True)),
        metadata={"description": "Only when return_probabilities is true"},
    )


class DefaultModelSchema(ma.Schema):
    class Meta:
        ordered = True

    model_name = fields.String(required=True)
    version = fields.Integer(required=True)
    feature_names = fields.List(fields.String(), required=True)
    features = fields.List(fields.Nested(FeatureOutSchema), required=True)


class HealthSchema(ma.Schema):
    status = fields.String(required=True)
