"""What one worker holds: settings, database, model store, and the versions it serves."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from cachetools import LRUCache
from flask import Flask, current_app
from sklearn.pipeline import Pipeline
from sqlalchemy import event

from model_store.cache import EstimatorCache
from model_store.errors import ArtifactUnavailable, PredictionFailed
from model_store.schema import feature
from model_store.store import ArtifactStore
from registry import service
from registry.db import Database, is_disconnect
from registry.errors import DatabaseUnavailable, NotFound
from registry.names import parse_selector
from registry.service import VersionRef
from serving.config import Settings
from serving.inputs import InputSchema

log = logging.getLogger(__name__)

INPUT_SCHEMAS_KEPT = 4096
RESOLUTIONS_KEPT = 4096


def _json_values(values: Any) -> list[Any]:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinities as null."""
    array = np.asarray(values)
    if array.dtype.kind in "biuU" or (array.dtype.kind == "f" and np.isfinite(array).all()):
        return array.tolist()  # type: ignore[no-any-return]
    return [_json_scalar(v) for v in array.tolist()]


def _json_scalar(value: Any) -> Any:
    if isinstance(value, list):
        return [_json_scalar(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Prediction:
    model: str
    version: int
    predictions: list[Any]
    probabilities: list[dict[str, float | None]] | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "predictions": self.predictions,
        }
        if self.probabilities is not None:
            body["probabilities"] = self.probabilities
        return body


class ResolvedVersions:
    """What each (model, selector) last resolved to in this worker, to serve from while the
    database cannot be reached. Only a fallback: while the database answers, it is always
    asked, so alias moves and deletes take effect at once. In an outage it answers with what
    this worker last saw, which may predate a delete or an alias move made elsewhere."""

    def __init__(self, maxsize: int = RESOLUTIONS_KEPT) -> None:
        self._refs: LRUCache[tuple[str, int | str], VersionRef] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self.in_outage = False

    def remember(self, key: tuple[str, int | str], ref: VersionRef) -> None:
        with self._lock:
            self._refs[key] = ref

    def forget(self, key: tuple[str, int | str]) -> None:
        with self._lock:
            self._refs.pop(key, None)

    def outage(self, key: tuple[str, int | str], error: BaseException) -> VersionRef:
        """Note that the database cannot be reached; the remembered version, or DatabaseUnavailable."""
        if not self.in_outage:
            self.in_outage = True
            log.warning("registry database unreachable (%s): predictions resolve from memory", type(error).__name__)
        return self.recall(key)

    def database_answers(self) -> None:
        """End the outage: the database handed out a live connection (a probe's or a request's)."""
        if self.in_outage:
            self.in_outage = False
            log.warning("registry database answers again: predictions resolve from it")

    def recall(self, key: tuple[str, int | str]) -> VersionRef:
        with self._lock:
            ref = self._refs.get(key)
        if ref is None:
            name, selector = key
            raise DatabaseUnavailable(
                f"The registry database is unavailable and this server has not served "
                f"'{name}' version {selector!r} since it started; try again shortly."
            )
        return ref


class Runtime:
    """The per-worker services behind the blueprints; built by create_app, found via `runtime()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.store = ArtifactStore(settings.store_dir)
        self.estimators = EstimatorCache(self.store, settings.cache_models, settings.trusted_modules)
        self._inputs: LRUCache[int, InputSchema] = LRUCache(INPUT_SCHEMAS_KEPT)
        self._inputs_lock = threading.Lock()
        self.resolved = ResolvedVersions()
        # Fired after the pool's pre-ping succeeded: the first request (or readiness probe) that
        # reaches the database again ends the outage for predictions too.
        event.listen(self.db.engine, "checkout", lambda *_: self.resolved.database_answers())

    def init_app(self, app: Flask) -> None:
        self.store.init()
        app.extensions["maas"] = self

    def input_schema(self, ref: VersionRef, estimator: Any) -> InputSchema:
        """The compiled feature schema of a version (read from the database once per worker)."""
        with self._inputs_lock:
            schema = self._inputs.get(ref.id)
            if schema is not None:
                return schema
        with self.db.read() as session:
            features = [
                feature(f.name, f.type, required=f.required, allowed=f.allowed, minimum=f.minimum, maximum=f.maximum)
                for f in service.get_features(session, ref.id)
            ]
        schema = self.compile_inputs(ref.model, ref.version, features, estimator)
        with self._inputs_lock:
            self._inputs[ref.id] = schema
        return schema

    def compile_inputs(
        self, model: str, version: int, features: list[dict[str, Any]], estimator: Any
    ) -> InputSchema:
        names = getattr(estimator, "feature_names_in_", None)
        return InputSchema(
            model,
            version,
            features,
            [str(n) for n in names] if names is not None else None,
            self.settings.max_batch_rows,
        )

    def resolve(self, name: str, selector: object) -> VersionRef:
        """The version a prediction's (model, selector) names now; raises NotFound.

        From the database; while it is unreachable, from what this worker resolved last
        (DatabaseUnavailable, a 503, when it never resolved this pair).
        """
        parsed = parse_selector(selector)
        if parsed is None:  # can never resolve: let the registry say why
            with self.db.read() as session:
                return service.resolve_version_ref(session, name, selector)
        key = (name, parsed)
        if self.resolved.in_outage:
            # No request waits for a database that is gone: a probe in the background finds
            # it back, and its connection ends the outage ("checkout" listener above).
            self.db.probe()
            return self.resolved.recall(key)
        try:
            with self.db.read() as session:
                ref = service.resolve_version_ref(session, name, selector)
        except NotFound:
            self.resolved.forget(key)
            raise
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            return self.resolved.outage(key, exc)
        self.resolved.remember(key, ref)
        return ref

    def predict(self, name: str, selector: object, data: Any, with_probabilities: bool) -> Prediction:
        """Resolve, check, predict: the hot path of every prediction route."""
        ref = self.resolve(name, selector)
        try:
            estimator = self.estimators.get(ref.sha256, ref.format)
        except ArtifactUnavailable as exc:
            raise ArtifactUnavailable(
                f"Version {ref.version} of '{ref.model}' cannot be served: {exc.message}"
            ) from None
        model_input, _ = self.input_schema(ref, estimator).to_model_input(data)
        return run_model(ref.model, ref.version, estimator, model_input, with_probabilities)


def run_model(
    model: str, version: int, estimator: Any, model_input: Any, with_probabilities: bool
) -> Prediction:
    """Call the estimator; its own failures become PredictionFailed (422), never a 500."""
    label = f"'{model}' version {version}"
    if with_probabilities and not callable(getattr(estimator, "predict_proba", None)):
        raise PredictionFailed(f"Model {label} has no predict_proba: it cannot return probabilities.")
    try:
        probabilities = None
        if with_probabilities:
            final, final_input = _final_step(estimator, model_input)
            predictions = _json_values(final.predict(final_input))
            proba = np.asarray(final.predict_proba(final_input), dtype=np.float64)
            keys = [str(c) for c in np.asarray(final.classes_).tolist()]
            probabilities = [dict(zip(keys, _json_values(row))) for row in proba]
        else:
            predictions = _json_values(estimator.predict(model_input))
    except Exception as exc:  # noqa: BLE001 - the model's code, not ours: report it narrowly
        raise PredictionFailed(
            f"Model {label} failed to predict on this input ({type(exc).__name__})."
        ) from None
    return Prediction(model, version, predictions, probabilities)


def _final_step(estimator: Any, model_input: Any) -> tuple[Any, Any]:
    """A pipeline's last step and the input transformed by the steps before it, as its predict and
    predict_proba would each do: asked for both, the transforms then run once, not twice."""
    while isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        model_input = estimator[:-1].transform(model_input)
        estimator = estimator[-1]
    return estimator, model_input


def runtime() -> Runtime:
    return current_app.extensions["maas"]  # type: ignore[no-any-return]
