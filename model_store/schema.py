"""The feature schema of a fitted estimator: inferred from it, or checked against it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model_store.errors import InvalidArtifact

FEATURE_TYPES = ("number", "integer", "string", "boolean")


def feature(
    name: str,
    type: str = "number",
    *,
    required: bool = True,
    allowed: list[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> dict[str, Any]:
    """One feature in the contract's shape."""
    return {
        "name": name,
        "type": type,
        "required": required,
        "allowed": allowed,
        "minimum": minimum,
        "maximum": maximum,
    }


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def python_value(value: Any) -> Any:
    """A numpy scalar as the plain Python value; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _categorical_feature(name: str, categories: Sequence[Any], imputed: bool) -> dict[str, Any]:
    values = [python_value(v) for v in categories]
    present = [v for v in values if not _is_missing(v)]
    required = not imputed and len(present) == len(values)
    if all(isinstance(v, str) for v in present):
        kind = "string"
    elif all(isinstance(v, bool) for v in present):
        kind = "boolean"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        kind = "integer"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        kind = "number"
    else:
        kind, present = "string", [str(v) for v in present]
    return feature(name, kind, required=required, allowed=present)


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
    if isinstance(columns, (list, tuple, np.ndarray)) and all(isinstance(c, str) for c in columns):
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


def _column_facts(estimator: Any) -> dict[str, dict[str, Any]]:
    """Per input column: categories from an encoder, and whether missing values are imputed."""
    first = estimator
    while hasattr(first, "steps"):
        first = first.steps[0][1]
    facts: dict[str, dict[str, Any]] = {}
    if "ColumnTransformer" in _class_names(first) and hasattr(first, "transformers_"):
        for index, (_, transformer, columns) in enumerate(first.transformers_):
            if isinstance(transformer, str):
                continue
            names = _input_names(first, columns, index)
            encoder, imputed = _encoder_in(transformer)
            categories = getattr(encoder, "categories_", None) if encoder is not None else None
            for position, name in enumerate(names):
                fact: dict[str, Any] = {"imputed": imputed}
                if categories is not None and position < len(categories):
                    fact["categories"] = list(categories[position])
                facts[name] = fact
    else:
        encoder, imputed = _encoder_in(first)
        names = [str(n) for n in getattr(first, "feature_names_in_", [])]
        categories = getattr(encoder, "categories_", None) if encoder is not None else None
        for position, name in enumerate(names):
            fact = {"imputed": imputed}
            if categories is not None and position < len(categories):
                fact["categories"] = list(categories[position])
            facts[name] = fact
    return facts


def infer_feature_schema(estimator: Any) -> list[dict[str, Any]]:
    """The features of a fitted estimator, from `feature_names_in_` and its encoders.

    A column encoded by a OneHotEncoder/OrdinalEncoder (inside a ColumnTransformer) is a
    feature with `allowed` = the fitted categories; other columns are `number`. A column that
    an imputer fills in is not required. Raises InvalidArtifact without `feature_names_in_`.
    """
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise InvalidArtifact(
            "The feature schema cannot be inferred: the model was fitted without feature names "
            "(no feature_names_in_). Fit it on a pandas DataFrame, or give 'features' in the "
            "upload metadata."
        )
    facts = _column_facts(estimator)
    schema = []
    for raw in names:
        name = str(raw)
        fact = facts.get(name, {})
        if "categories" in fact:
            schema.append(_categorical_feature(name, fact["categories"], fact["imputed"]))
        else:
            schema.append(feature(name, "number", required=not fact.get("imputed", False)))
    return schema


def check_declared_schema(features: Sequence[Mapping[str, Any]], estimator: Any) -> list[dict[str, Any]]:
    """The declared schema in full, after checking it fits the estimator; raises InvalidArtifact."""
    declared = [feature(**dict(f)) for f in features]
    names = [f["name"] for f in declared]
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
