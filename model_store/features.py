"""Features: their types and specs, inferred from a fitted estimator or checked against it."""

from __future__ import annotations

import enum
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model_store.errors import InvalidArtifact


class FeatureType(enum.StrEnum):
    """The type of a feature's values, as JSON sends them; a str, so `str()`, f-strings and
    marshmallow's String give the contract's word ("number", not "FeatureType.NUMBER")."""

    NUMBER = "number"
    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"

    @property
    def python_types(self) -> frozenset[type]:
        """The exact Python types of the parsed JSON values this type accepts (no subclasses:
        a bool is no number, and 1.0 no integer)."""
        return _PYTHON_TYPES[self]

    def accepts(self, value: Any) -> bool:
        """Whether a parsed JSON value is of this type (null is not: the caller decides on it)."""
        return type(value) in _PYTHON_TYPES[self]

    @property
    def is_numeric(self) -> bool:
        """Whether features of this type can have bounds."""
        return self in (FeatureType.NUMBER, FeatureType.INTEGER)


_PYTHON_TYPES: dict[FeatureType, frozenset[type]] = {
    FeatureType.NUMBER: frozenset({int, float}),
    FeatureType.INTEGER: frozenset({int}),
    FeatureType.STRING: frozenset({str}),
    FeatureType.BOOLEAN: frozenset({bool}),
}


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One input column of a model: its name, type, and what values it takes."""

    name: str
    type: FeatureType
    required: bool = True
    allowed: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    # `allowed` lists the values the model was fitted on, and the model takes others too (an
    # encoder with handle_unknown="ignore" and the like): they are listed for forms and docs, not enforced.
    accepts_unseen: bool = False

    def __post_init__(self) -> None:
        # The checks compare types by identity and may hash `allowed`: "number" becomes
        # FeatureType.NUMBER, a list of allowed values a tuple.
        if not isinstance(self.type, FeatureType):
            object.__setattr__(self, "type", FeatureType(self.type))
        if self.allowed is not None and not isinstance(self.allowed, tuple):
            object.__setattr__(self, "allowed", tuple(self.allowed))

    def to_json(self) -> dict[str, Any]:
        """The contract's shape: {name, type, required, allowed, minimum, maximum, accepts_unseen}."""
        return {
            "name": self.name,
            "type": self.type.value,
            "required": self.required,
            "allowed": list(self.allowed) if self.allowed is not None else None,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "accepts_unseen": self.accepts_unseen,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """A spec from the contract's shape (`type` defaults to number, `required` to true);
        raises ValueError for an unknown type, KeyError without a name."""
        return cls(
            name=data["name"],
            type=FeatureType(data.get("type", FeatureType.NUMBER.value)),
            required=data.get("required", True),
            allowed=data.get("allowed"),
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
            accepts_unseen=data.get("accepts_unseen", False),
        )


# The most features a version's schema may have, however it came to be.
MAX_FEATURES = 100_000
# Upload metadata's `"features": "positional"`: name the features of a model fitted without names x0, x1, ...
POSITIONAL = "positional"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def python_value(value: Any) -> Any:
    """A numpy scalar as the plain Python value; anything else unchanged."""
    import numpy as np  # here, not at import: the registry's ORM imports this module (no numpy in `maas`)

    return value.item() if isinstance(value, np.generic) else value


# The narrowest type first: categories [1, 2] are integers, [1, 2.5] numbers.
_CATEGORY_TYPES = (FeatureType.STRING, FeatureType.BOOLEAN, FeatureType.INTEGER, FeatureType.NUMBER)


def _categorical_feature(
    name: str, categories: Sequence[Any], imputed: bool, accepts_unseen: bool = False
) -> FeatureSpec:
    values = [python_value(v) for v in categories]
    present = [v for v in values if not _is_missing(v)]
    required = not imputed and len(present) == len(values)
    kind = next((t for t in _CATEGORY_TYPES if all(t.accepts(v) for v in present)), None)
    if kind is None:  # mixed, or not JSON scalars: the categories as the strings they print as
        kind, present = FeatureType.STRING, [str(v) for v in present]
    return FeatureSpec(name, kind, required=required, allowed=tuple(present), accepts_unseen=accepts_unseen)


def takes_unseen(encoder: Any) -> bool:
    """Whether a fitted encoder takes a category it was not fitted on: a OneHotEncoder with
    handle_unknown "ignore", "infrequent_if_exist" or "warn" (all zeros, or the infrequent column),
    an OrdinalEncoder with "use_encoded_value" (its unknown_value). Strict ("error") encoders refuse it."""
    handling = getattr(encoder, "handle_unknown", "error")
    return isinstance(handling, str) and handling != "error"


def _class_names(obj: Any) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def _input_names(ct: Any, columns: Any, index: int) -> list[str]:
    names = [str(n) for n in getattr(ct, "feature_names_in_", [])]
    # sklearn resolves every column spec (names, indices, slices, masks, selectors) at fit.
    by_transformer = getattr(ct, "_transformer_to_input_indices", None)
    name = ct.transformers_[index][0]
    if by_transformer is not None and name in by_transformer and names:
        return [names[i] for i in by_transformer[name]]
    if isinstance(columns, str):
        return [columns]
    listed = isinstance(columns, (list, tuple)) or type(columns).__name__ == "ndarray"
    if listed and all(isinstance(c, str) for c in columns):
        return [str(c) for c in columns]
    return []


def _encoder_in(transformer: Any) -> tuple[Any | None, bool]:
    """The first OneHotEncoder/OrdinalEncoder a column goes through, and whether it is imputed first."""
    steps = [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]
    imputed = False
    for step in steps:
        kinds = _class_names(step)
        if kinds & {"OneHotEncoder", "OrdinalEncoder"}:
            return step, imputed
        if "SimpleImputer" in kinds or "KNNImputer" in kinds or "IterativeImputer" in kinds:
            imputed = True
            continue
        break
    return None, imputed


_TEXT_VECTORIZERS = {"CountVectorizer", "TfidfVectorizer", "HashingVectorizer"}


def is_text_vectorizer(step: Any) -> bool:
    """A vectorizer of raw text: it takes a 1-D sequence of strings, one document per row."""
    return bool(_class_names(step) & _TEXT_VECTORIZERS)


def first_step(estimator: Any) -> Any:
    """The step that receives the model's input: a pipeline's first step, recursively."""
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[0][1]
    return estimator


def _column_facts(estimator: Any) -> dict[str, dict[str, Any]]:
    """Per input column: categories from an encoder, and whether missing values are imputed."""
    first = first_step(estimator)
    facts: dict[str, dict[str, Any]] = {}
    if "ColumnTransformer" in _class_names(first) and hasattr(first, "transformers_"):
        for index, (_, transformer, columns) in enumerate(first.transformers_):
            if isinstance(transformer, str):
                continue
            names = _input_names(first, columns, index)
            if is_text_vectorizer(first_step(transformer)):  # a column of documents
                facts.update((name, {"imputed": False, "text": True}) for name in names)
                continue
            encoder, imputed = _encoder_in(transformer)
            categories = getattr(encoder, "categories_", None) if encoder is not None else None
            for position, name in enumerate(names):
                fact: dict[str, Any] = {"imputed": imputed}
                if categories is not None and position < len(categories):
                    fact["categories"] = list(categories[position])
                    fact["unseen"] = takes_unseen(encoder)
                facts[name] = fact
    else:
        encoder, imputed = _encoder_in(first)
        names = [str(n) for n in getattr(first, "feature_names_in_", [])]
        categories = getattr(encoder, "categories_", None) if encoder is not None else None
        for position, name in enumerate(names):
            fact = {"imputed": imputed}
            if categories is not None and position < len(categories):
                fact["categories"] = list(categories[position])
                fact["unseen"] = takes_unseen(encoder)
            facts[name] = fact
    return facts


# -- models that encode pandas `category` columns themselves -------------------------------------
# HistGradientBoosting* (categorical_features="from_dtype"), LightGBM's and XGBoost's scikit-learn
# wrappers fitted on a DataFrame with `category` columns: the model must get those columns with the
# categories it was fitted on. Each reader is best effort: an attribute missing or not as expected
# gives no categories from it.


def _hist_gradient_boosting_categories(model: Any, names: list[str]) -> dict[str, list[Any] | None]:
    if not _class_names(model) & {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}:
        return {}
    mask = getattr(model, "is_categorical_", None)
    preprocessor = getattr(model, "_preprocessor", None)
    if mask is None or preprocessor is None or len(mask) != len(names):
        return {}
    indices = [i for i, flag in enumerate(list(mask)) if flag]
    encoder = next((t for _, t, _ in preprocessor.transformers_ if "OrdinalEncoder" in _class_names(t)), None)
    categories = getattr(encoder, "categories_", None)
    if categories is None or len(categories) != len(indices):
        return {}
    return {names[i]: list(c) for i, c in zip(indices, categories, strict=True)}


def _lightgbm_categories(model: Any, names: list[str]) -> dict[str, list[Any] | None]:
    # `pandas_categorical` holds the categories of the `category` columns in their order in the
    # frame; `categorical_column` indexes the categorical columns (those and any named in
    # `categorical_feature=`): the two line up only when every categorical column was a `category`.
    if "LGBMModel" not in _class_names(model):
        return {}
    booster = model.booster_
    categories = getattr(booster, "pandas_categorical", None)
    columns = booster.params.get("categorical_column")
    if isinstance(columns, str):
        columns = [int(c) for c in columns.split(",") if c.strip()]
    if not categories or not columns or len(columns) != len(categories):
        return {}
    return {names[int(i)]: list(c) for i, c in zip(columns, categories, strict=True)}


def _xgboost_stored_categories(booster: Any) -> list[list[Any] | None] | None:
    """The categories xgboost (3.1+) stores per feature, read from the model's JSON (no pyarrow
    needed): strings as UTF-8 bytes cut at `offsets`, numbers as `values`. None when not there."""
    try:
        gradient_booster = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]
        model = gradient_booster.get("model") or gradient_booster["gbtree"]["model"]  # gbtree, or dart
        encoded = model["cats"]["enc"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    stored: list[list[Any] | None] = []
    for entry in encoded:
        values = entry.get("values") or []
        if "offsets" in entry:
            offsets = entry["offsets"]
            # Signed bytes. xgboost 3.2 counts the offsets in characters but stores UTF-8 bytes: only
            # all-ASCII categories read back exactly; others stay unknown (xgboost recodes them itself).
            if offsets and all(0 <= v < 128 for v in values):
                raw = bytes(values)
                stored.append([raw[a:b].decode("ascii") for a, b in itertools.pairwise(offsets)])
            else:
                stored.append(None)
        else:
            stored.append(list(values) if "type" in entry else None)
    return stored


def _xgboost_categories(model: Any, names: list[str]) -> dict[str, list[Any] | None]:
    if "XGBModel" not in _class_names(model):
        return {}
    booster = model.get_booster()
    types = booster.feature_types
    if not types or len(types) != len(names) or "c" not in types:
        return {}
    stored = _xgboost_stored_categories(booster)
    if stored is not None and len(stored) != len(names):
        stored = None
    return {names[i]: (stored[i] if stored is not None else None) for i, t in enumerate(types) if t == "c"}


_NATIVE_READERS = (_hist_gradient_boosting_categories, _lightgbm_categories, _xgboost_categories)


def native_categories(estimator: Any) -> dict[str, list[Any] | None]:
    """Per input column a model encodes as a category itself (see above): its fitted categories in
    the model's order (missing values included as they were seen), or None when the model says the
    column is categorical but its categories cannot be read. Empty for every other model."""
    model = first_step(estimator)
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return {}
    names = [str(n) for n in names]
    for reader in _NATIVE_READERS:
        try:
            found = reader(model, names)
        except Exception:  # noqa: BLE001 - another library's attributes, of another version: best effort
            continue
        if found:
            return found
    return {}


def infer_feature_schema(estimator: Any) -> list[FeatureSpec]:
    """The features of a fitted estimator, from `feature_names_in_` and its encoders.

    A column encoded by a OneHotEncoder/OrdinalEncoder (inside a ColumnTransformer) is a
    feature with `allowed` = the fitted categories (which the feature `accepts_unseen` when the
    encoder handles unknown categories); so is a column a model encodes natively as a category
    (`native_categories`; it never `accepts_unseen`, and is a `string` without `allowed` when its
    categories cannot be read); a column a text vectorizer reads is `string`;
    other columns are `number`. A column that
    an imputer fills in is not required. Raises InvalidArtifact without `feature_names_in_`.
    """
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise InvalidArtifact(
            "The feature schema cannot be inferred: the model was fitted without feature names "
            "(no feature_names_in_). Fit it on a pandas DataFrame, give 'features' in the "
            'upload metadata, or send {"features": "positional"} in it to have its features named '
            "x0, x1, ... (all numbers, in the order the model takes them)"
            + (
                "; a text pipeline fitted on a list of documents takes one feature of type string."
                if is_text_vectorizer(first_step(estimator))
                else "."
            )
        )
    facts = _column_facts(estimator)
    for name, categories in native_categories(estimator).items():
        if "categories" not in facts.get(name, {}):
            facts[name] = {"imputed": False, "categories": categories} if categories is not None else {"text": True}
    schema: list[FeatureSpec] = []
    for raw in names:
        name = str(raw)
        fact = facts.get(name, {})
        if "categories" in fact:
            schema.append(_categorical_feature(name, fact["categories"], fact["imputed"], fact.get("unseen", False)))
        elif fact.get("text"):
            schema.append(FeatureSpec(name, FeatureType.STRING))
        else:
            schema.append(FeatureSpec(name, FeatureType.NUMBER, required=not fact.get("imputed", False)))
    return schema


def _example_columns(example: Any) -> dict[str, list[Any]]:
    """The values an upload's example gives each feature: a record, a columnar record or a list of
    records; nothing for another shape (rows as arrays name no feature)."""
    records = example if isinstance(example, list) else [example]
    columns: dict[str, list[Any]] = {}
    for record in records:
        if not isinstance(record, dict):
            return {}
        for name, value in record.items():
            columns.setdefault(str(name), []).extend(value if isinstance(value, list) else [value])
    return columns


def typed_by_example(features: Sequence[FeatureSpec], example: Any) -> list[FeatureSpec]:
    """An inferred schema, with what the example shows: a feature inferred `number` (scikit-learn
    keeps no input dtypes) whose every example value is a JSON boolean was fitted on a bool
    column, and becomes `boolean`. Nothing else changes."""
    columns = _example_columns(example)
    typed = []
    for f in features:
        values = [v for v in columns.get(f.name, []) if v is not None]
        if f.type is FeatureType.NUMBER and f.allowed is None and values and all(type(v) is bool for v in values):
            f = FeatureSpec(f.name, FeatureType.BOOLEAN, required=f.required)
        typed.append(f)
    return typed


def positional_feature_schema(estimator: Any) -> list[FeatureSpec]:
    """The features of an estimator fitted without feature names: `x0`, `x1`, ... (`n_features_in_`
    of them), all numbers. Raises InvalidArtifact for a model that has feature names (they are
    its schema) or no usable `n_features_in_`."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        shown = ", ".join(str(n) for n in list(names)[:10]) + (", ..." if len(names) > 10 else "")
        raise InvalidArtifact(
            f"The model was fitted with feature names ({shown}): its features are inferred from them. "
            'Positional features (x0, x1, ...) are for models fitted without names: leave out "positional".'
        )
    count = getattr(estimator, "n_features_in_", None)
    if type(count) is not int or count < 1:
        raise InvalidArtifact(
            "The model does not say how many features it takes (no n_features_in_): declare its "
            'features in the upload metadata instead of "positional".'
        )
    if count > MAX_FEATURES:
        raise InvalidArtifact(f"The model takes {count} features, more than a schema may have ({MAX_FEATURES}).")
    return [FeatureSpec(f"x{i}", FeatureType.NUMBER) for i in range(count)]


def check_declared_schema(features: Sequence[FeatureSpec], estimator: Any) -> list[FeatureSpec]:
    """The declared schema, after checking it fits the estimator; raises InvalidArtifact."""
    declared = list(features)
    names = [f.name for f in declared]
    if not declared:
        raise InvalidArtifact("The declared feature schema is empty.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArtifact(f"The declared features repeat names: {', '.join(duplicates)}.")
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None:
        fitted_names = [str(n) for n in fitted]
        missing = [n for n in fitted_names if n not in names]
        unknown = [n for n in names if n not in fitted_names]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"not known to the model: {', '.join(unknown)}")
            raise InvalidArtifact(
                "The declared features do not match the model's feature_names_in_ (" + "; ".join(parts) + ")."
            )
    else:
        expected = getattr(estimator, "n_features_in_", None)
        if expected is not None and expected != len(declared):
            raise InvalidArtifact(f"The model expects {expected} features; the declared schema has {len(declared)}.")
    return declared
