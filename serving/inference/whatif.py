"""What-if: how a version's answer moves when one feature of a baseline record moves (API v1.1).

Every swept row is the baseline with one feature replaced. All of them, and the baseline, go
through the same check and the same runner call as a prediction, in one batch, so every number
answered is the one `predict` gives for that row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.errors import PredictionFailed
from model_store.features import FeatureType
from serving.inference.errors import InvalidRequest, TooManyRows
from serving.inference.inputs import INT64_MAX, INT64_MIN, CompiledFeature, InputSchema
from serving.inference.runtime import Prediction, Runtime, run_model

MIN_POINTS, MAX_POINTS, DEFAULT_POINTS = 2, 200, 25
DERIVED_LIMIT = 1e308

DERIVED_RANGE_DOC = (
    "Without `ranges` for a numeric feature, its schema's `minimum`/`maximum` where set; an unset end "
    "lies one span from the baseline value b, the span being max(|b|, 1) (so [0, 2b] for a positive b "
    "without bounds), and the baseline of a missing value counts as 0. The range always holds b."
)


@dataclass(frozen=True)
class WhatIfRequest:
    data: Any
    features: Sequence[str] | None = None
    points: int = DEFAULT_POINTS
    ranges: Mapping[str, Sequence[float]] = field(default_factory=dict)
    target: str | None = None
    engine: str = "auto"


@dataclass
class _Sweep:
    feature: CompiledFeature
    values: list[Any]


def what_if(rt: Runtime, name: str, selector: object, request: WhatIfRequest) -> dict[str, Any]:
    """The contract's what-if answer for `name` at `selector`.

    Raises NotFound, InvalidRows (the baseline), InvalidRequest (features, ranges, target),
    TooManyRows (more swept rows than MAAS_MAX_BATCH_ROWS), PredictionFailed, and the runner's errors.
    """
    ref = rt.resolve(name, selector)
    runner = rt.runner(ref)
    inputs = rt.input_schema(ref, runner.facts)
    baseline = inputs.record(request.data)
    scored = bool(runner.facts.get("has_predict_proba"))
    target = _target(request.target, runner.facts.get("classes"), scored, inputs.label)
    sweeps = _sweeps(inputs, baseline, request)
    swept_rows = sum(len(s.values) for s in sweeps)
    if swept_rows > inputs.max_rows:
        raise TooManyRows(swept_rows, inputs.max_rows)

    # Row 0 is the baseline; then each feature's block of rows, in sweep order.
    columns: dict[str, list[Any]] = {f.name: [baseline[f.name]] * (1 + swept_rows) for f in inputs.features}
    start = 1
    for sweep in sweeps:
        columns[sweep.feature.name][start : start + len(sweep.values)] = sweep.values
        start += len(sweep.values)
    checked, rows = inputs.check(columns)
    answer = run_model(
        runner, ref.model, ref.version, inputs, checked, rows, with_probabilities=scored, engine=request.engine
    )
    scores = _scores(answer, target)
    predictions = answer.predictions

    features: list[dict[str, Any]] = []
    start = 1
    for sweep in sweeps:
        end = start + len(sweep.values)
        features.append(_feature_answer(sweep, baseline, predictions[0], predictions[start:end], scores[start:end]))
        start = end
    # Largest swing first, null swings last; the sort is stable, so ties keep the sweep order.
    features.sort(key=lambda f: (f["swing"] is None, -(f["swing"] or 0.0)))
    return {
        "model": ref.model,
        "version": ref.version,
        "engine": answer.engine,
        "target": target,
        "baseline": {"prediction": predictions[0], "score": scores[0]},
        "features": features,
    }


def _target(target: str | None, classes: Any, scored: bool, label: str) -> str | None:
    """The class whose probability is the score: `str(label)`, by default the last class."""
    if not scored:
        if target is not None:
            raise InvalidRequest(
                f"Model {label} has no predict_proba: it has no class probability to score by.",
                {"target": ["The model has no predict_proba."]},
            )
        return None
    names = [str(c) for c in classes] if isinstance(classes, list) and classes else []
    if target is None:
        if not names:  # predict_proba without classes_: nothing names a column
            raise PredictionFailed(f"Model {label} has predict_proba but no classes: name a 'target'.")
        return names[-1]
    if names and target not in names:
        shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
        raise InvalidRequest(
            f"'target' {target!r} is not a class of {label}.", {"target": [f"Must be one of: {shown}."]}
        )
    return target


def _sweeps(inputs: InputSchema, baseline: Mapping[str, Any], request: WhatIfRequest) -> list[_Sweep]:
    errors: dict[str, dict[str, list[str]]] = {}
    by_name = inputs.by_name
    for name in request.ranges:
        feature = by_name.get(name)
        if feature is None:
            errors.setdefault("ranges", {})[name] = ["Unknown feature."]
        elif not feature.type.is_numeric or feature.allowed_list:
            errors.setdefault("ranges", {})[name] = ["Only a numeric feature without allowed values has a range."]
    if request.features is None:
        chosen = [f for f in inputs.features if _sweepable(f)]
    else:
        chosen = []
        for name in request.features:
            feature = by_name.get(name)
            if feature is None:
                errors.setdefault("features", {})[name] = ["Unknown feature."]
            elif not _sweepable(feature):
                errors.setdefault("features", {})[name] = ["A string feature without allowed values cannot be swept."]
            elif feature in chosen:
                errors.setdefault("features", {})[name] = ["Listed twice."]
            else:
                chosen.append(feature)
    sweeps: list[_Sweep] = []
    for feature in chosen:
        try:
            sweeps.append(_Sweep(feature, _grid(feature, baseline[feature.name], request)))
        except ValueError as exc:
            errors.setdefault("ranges", {})[feature.name] = [str(exc)]
    if errors:
        problems = sum(len(v) for v in errors.values())
        raise InvalidRequest(f"The what-if request is invalid: {problems} problem(s), see errors.", errors)
    if not sweeps:
        raise InvalidRequest(
            f"Model {inputs.label} has no feature that can be swept (numbers, booleans, strings with allowed values).",
            {"features": ["Nothing to sweep."]},
        )
    return sweeps


def _sweepable(feature: CompiledFeature) -> bool:
    return feature.type is not FeatureType.STRING or bool(feature.allowed_list)


def _grid(feature: CompiledFeature, base: Any, request: WhatIfRequest) -> list[Any]:
    """The values one feature takes, in sweep order; ValueError says why a range is refused."""
    if feature.allowed_list:  # the known values, also of a feature that accepts others
        return list(feature.allowed_list)
    if feature.type is FeatureType.BOOLEAN:
        return [False, True]
    low, high = _range(feature, base, request.ranges.get(feature.name))
    if feature.type is FeatureType.INTEGER:
        first, last = max(math.ceil(low), INT64_MIN), min(math.floor(high), INT64_MAX)
        if first > last:
            raise ValueError(f"[{low:g}, {high:g}] holds no integer.")
        grid = np.rint(np.linspace(first, last, request.points))
        return list(dict.fromkeys(min(max(int(v), first), last) for v in grid))
    return list(dict.fromkeys(float(v) for v in np.linspace(low, high, request.points)))  # 1 value if low == high


def _range(feature: CompiledFeature, base: Any, given: Sequence[float] | None) -> tuple[float, float]:
    low_bound, high_bound = feature.minimum, feature.maximum
    if given is not None:
        low, high = float(given[0]), float(given[1])
        if low >= high:
            raise ValueError("The range's low end must be below its high end.")
        if (low_bound is not None and low < low_bound) or (high_bound is not None and high > high_bound):
            raise ValueError(f"Outside the feature's bounds [{_show(low_bound)}, {_show(high_bound)}].")
        return low, high
    b = 0.0 if base is None else float(base)
    span = max(abs(b), 1.0)
    # A derived end stays where the input check accepts a value (float64 overflows past it).
    low = low_bound if low_bound is not None else max(b - span, -DERIVED_LIMIT)
    high = high_bound if high_bound is not None else min(b + span, DERIVED_LIMIT)
    return low, high


def _show(bound: float | None) -> str:
    return "unbounded" if bound is None else f"{bound:g}"


def _scores(answer: Prediction, target: str | None) -> list[float | None]:
    if answer.probabilities is not None and target is not None:
        return [row.get(target) for row in answer.probabilities]
    return [_number(p) for p in answer.predictions]


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _feature_answer(
    sweep: _Sweep, baseline: Mapping[str, Any], base_prediction: Any, predictions: list[Any], scores: list[Any]
) -> dict[str, Any]:
    present = [s for s in scores if s is not None]
    swing = max(present) - min(present) if present else None
    base = baseline[sweep.feature.name]
    # The baseline's own value is no change, whatever the model answers for it: a regressor's
    # answer for the same row can differ in its last bit between two places in one batch (BLAS
    # sums blocks of rows in different orders), which must not read as a flip.
    flips = [i for i, p in enumerate(predictions) if p != base_prediction and sweep.values[i] != base]
    flip = None
    if flips:
        nearest = flips[0]
        if sweep.feature.type.is_numeric and base is not None:
            nearest = min(flips, key=lambda i: abs(sweep.values[i] - base))  # min keeps the first of ties
        flip = {"value": sweep.values[nearest], "prediction": predictions[nearest], "score": scores[nearest]}
    return {
        "name": sweep.feature.name,
        "values": sweep.values,
        "predictions": predictions,
        "scores": scores,
        "swing": swing,
        "flip": flip,
    }
