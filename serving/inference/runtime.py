"""What one worker holds: settings, database, model store, and the versions it serves."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cachetools import LRUCache, TTLCache
from sqlalchemy import event

from model_store.errors import ArtifactUnavailable, InvalidArtifact, PredictionFailed, RunnerFailed, RunnerTimedOut
from model_store.features import FeatureSpec
from registry import service
from registry.db import Database, is_disconnect
from registry.errors import NotFound
from registry.names import parse_selector
from registry.service import VersionRef
from serving.config import Settings
from serving.inference.errors import InvalidRequest
from serving.inference.inputs import InputSchema
from serving.inference.resolver import ResolvedVersions
from serving.runners.pool import Runner, RunnerLimits, RunnerPool
from serving.telemetry import metrics

log = logging.getLogger(__name__)

INPUT_SCHEMAS_KEPT = 4096
# Artifacts found damaged or missing, remembered for MAAS_ARTIFACT_RETRY seconds each.
UNAVAILABLE_ARTIFACTS_KEPT = 4096
FRESH_RESOLUTIONS_KEPT = 4096


def _json_values(values: Any) -> list[Any]:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinities as null. A list comes from a
    runner already as checked JSON values (serving.runners.protocol)."""
    if isinstance(values, list):
        return values
    array = np.asarray(values)
    if array.dtype.kind in "biuU" or (array.dtype.kind == "f" and np.isfinite(array).all()):
        return array.tolist()
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
    version: int | None  # None: an upload's trial, before the version is recorded
    predictions: list[Any]
    probabilities: list[dict[str, float | None]] | None = None
    engine: str = "sklearn"  # the engine that answered

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "engine": self.engine,
            "predictions": self.predictions,
        }
        if self.probabilities is not None:
            body["probabilities"] = self.probabilities
        return body


VersionKey = tuple[str, int, str]


def version_key(model: str, version: int, sha256: str) -> VersionKey:
    """What the caches of a worker key a version by. A model's version numbers are never reused,
    even after a delete (unlike row ids, which SQLite reuses), and the sha256 pins the bytes."""
    return (model, version, sha256)


class Runtime:
    """The per-worker services behind the blueprints; built by create_app, found via `runtime()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.store = settings.open_store()
        self.runners = RunnerPool(
            RunnerLimits(
                memory_bytes=settings.runner_memory,
                timeout=settings.predict_timeout,
                max_model_bytes=settings.model_bytes_limit,
                trusted_modules=settings.trusted_modules,
                sandbox=settings.sandbox,
            ),
            settings.cache_models,
        )
        self._inputs: LRUCache[VersionKey, InputSchema] = LRUCache(INPUT_SCHEMAS_KEPT)
        self._inputs_lock = threading.Lock()
        # sha256 -> why its file cannot be served: a damaged or missing artifact is answered from
        # here for a short while instead of being opened and hashed again by every request (and a
        # runner started for it); once the entry expires, a repaired file serves with no restart.
        self._unavailable: TTLCache[str, str] | None = (
            TTLCache(UNAVAILABLE_ARTIFACTS_KEPT, settings.artifact_retry_seconds)
            if settings.artifact_retry_seconds > 0
            else None
        )
        self._unavailable_lock = threading.Lock()
        self.resolved = ResolvedVersions()
        # (model, selector) -> version, fresh for MAAS_ALIAS_TTL: most predictions never ask the
        # database (versions are immutable; an alias move or a delete elsewhere is seen within the
        # TTL, one made through this worker at once: forget_model).
        # Each entry holds the time its database read began: it is fresh for the TTL from then,
        # not from when the answer arrived (on a loaded machine that can be much later), so a change
        # committed after the read is followed within the TTL of the commit, however slow the read.
        self._fresh: TTLCache[tuple[str, int | str], tuple[VersionRef, float]] | None = (
            TTLCache(FRESH_RESOLUTIONS_KEPT, settings.alias_ttl_seconds) if settings.alias_ttl_seconds > 0 else None
        )
        self._fresh_lock = threading.Lock()
        # Fired after the pool's pre-ping succeeded: the first request (or readiness probe) that
        # reaches the database again ends the outage for predictions too.
        event.listen(self.db.engine, "checkout", lambda *_: self.resolved.database_answers())

    def close(self) -> None:
        """Stop this worker's runners and close its database connections."""
        self.runners.close()
        self.db.dispose()

    # -- a version, served -------------------------------------------------------------------
    def runner(self, ref: VersionRef) -> Runner:
        """The runner serving `ref`, started and loaded when this worker has none (or it died).
        Raises ArtifactUnavailable (503) when the artifact is missing, damaged or does not load."""
        label = f"Version {ref.version} of '{ref.model}'"
        known_unavailable = self._known_unavailable(ref.sha256)
        if known_unavailable is not None:
            raise ArtifactUnavailable(f"{label} cannot be served: {known_unavailable}")

        loaded = False

        def load(runner: Runner) -> None:
            nonlocal loaded
            loaded = True
            outcome = "failed"
            started = time.perf_counter()
            try:
                with self.store.opened(ref.sha256) as file, contextlib.ExitStack() as stack:
                    graph = self._graph(stack, ref, label)
                    names = self._feature_names(ref, label) if graph is not None else None
                    if names is None:
                        graph = None
                    runner.load(file, ref.format, graph=graph, graph_features=names or ())
                if graph is not None and "onnx" not in runner.facts["engines"]:
                    log.warning("%s serves without its ONNX engine: its runner could not open the graph", label)
                outcome = "ok"
            except ArtifactUnavailable as exc:  # the file: missing, unreadable or damaged
                self._remember_unavailable(ref.sha256, exc.message)
                raise ArtifactUnavailable(f"{label} cannot be served: {exc.message}") from None
            except InvalidArtifact as exc:
                raise ArtifactUnavailable(f"{label} cannot be served: {exc.message}") from None
            finally:
                metrics.MODEL_LOADS.labels(outcome).inc()
                metrics.MODEL_LOAD_SECONDS.observe(time.perf_counter() - started)

        try:
            return self.runners.get(version_key(ref.model, ref.version, ref.sha256), label, load)
        finally:
            if loaded:
                metrics.CACHE_MISSES.inc()
            else:
                metrics.CACHE_HITS.inc()

    def _graph(self, stack: contextlib.ExitStack, ref: VersionRef, label: str) -> Any:
        """The version's ONNX file, opened and verified, when it has one; a graph that cannot be
        read costs the version its ONNX engine (logged), not its service."""
        if ref.onnx_sha256 is None:
            return None
        try:
            return stack.enter_context(self.store.opened(ref.onnx_sha256))
        except ArtifactUnavailable as exc:
            log.warning("%s serves without its ONNX engine: %s", label, exc.message)
            return None

    def _feature_names(self, ref: VersionRef, label: str) -> list[str] | None:
        """The names of a version's features in order (the inputs of its ONNX graph): from the
        worker's compiled schema when it has one, else the database; None while the database is
        unreachable (the version then serves with scikit-learn: an outage costs it no more)."""
        with self._inputs_lock:
            known = self._inputs.get(version_key(ref.model, ref.version, ref.sha256))
        if known is not None:
            return [f.name for f in known.features]
        try:
            with self.db.read() as session:
                return [f.name for f in service.get_features(session, ref.id)]
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            log.warning("%s serves without its ONNX engine for now: the database is unreachable", label)
            return None

    def _known_unavailable(self, sha256: str) -> str | None:
        if self._unavailable is None:
            return None
        with self._unavailable_lock:
            return self._unavailable.get(sha256)

    def _remember_unavailable(self, sha256: str, reason: str) -> None:
        if self._unavailable is not None:
            with self._unavailable_lock:
                self._unavailable[sha256] = reason

    def input_schema(self, ref: VersionRef, facts: dict[str, Any]) -> InputSchema:
        """The compiled feature schema of a version (read from the database once per worker)."""
        key = version_key(ref.model, ref.version, ref.sha256)
        with self._inputs_lock:
            schema = self._inputs.get(key)
            if schema is not None:
                return schema
        with self.db.read() as session:
            features = service.get_features(session, ref.id)
        schema = self.compile_inputs(ref.model, ref.version, features, facts)
        with self._inputs_lock:
            self._inputs[key] = schema
        return schema

    def compile_inputs(
        self, model: str, version: int | None, features: Sequence[FeatureSpec], facts: dict[str, Any]
    ) -> InputSchema:
        return InputSchema(model, version, features, facts.get("feature_names"), self.settings.max_batch_rows)

    # -- resolving ---------------------------------------------------------------------------
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
        fresh = self._fresh
        if fresh is not None:
            with self._fresh_lock:
                cached = fresh.get(key)
            if cached is not None and time.monotonic() - cached[1] < self.settings.alias_ttl_seconds:
                return cached[0]
        if self.resolved.in_outage:
            # No request waits for a database that is gone: a probe in the background finds
            # it back, and its connection ends the outage ("checkout" listener above).
            self.db.probe()
            return self.resolved.recall(key)
        read_started = time.monotonic()
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
        if fresh is not None:
            with self._fresh_lock:
                fresh[key] = (ref, read_started)
        return ref

    def forget_model(self, name: str) -> None:
        """This worker changed `name` (an upload, an alias move, a delete): resolve it from the
        database again at once."""
        if self._fresh is not None:
            with self._fresh_lock:
                for key in [k for k in self._fresh if k[0] == name]:
                    # pop, not del: an entry that expires after the listing makes TTLCache's
                    # __delitem__ raise KeyError (an upload answered 500 in CI).
                    self._fresh.pop(key, None)

    def predict(
        self, name: str, selector: object, data: Any, with_probabilities: bool, engine: str = "auto"
    ) -> Prediction:
        """Resolve, check, predict in the version's runner: the hot path of every prediction route."""
        return self.predict_version(self.resolve(name, selector), data, with_probabilities, engine)

    def predict_version(self, ref: VersionRef, data: Any, with_probabilities: bool, engine: str = "auto") -> Prediction:
        """Check, predict in the runner of a version already resolved."""
        runner = self.runner(ref)
        inputs = self.input_schema(ref, runner.facts)
        columns, rows = inputs.check(data)
        return run_model(runner, ref.model, ref.version, inputs, columns, rows, with_probabilities, engine)


def run_model(
    runner: Runner,
    model: str,
    version: int | None,
    inputs: InputSchema,
    columns: dict[str, np.ndarray],
    rows: int,
    with_probabilities: bool,
    engine: str = "auto",
) -> Prediction:
    """Ask the runner; the model's own failures are PredictionFailed (422), never a 500.
    A recorded version's calls are counted and timed (an upload's trial, version None, is not).
    Raises InvalidRequest (422) when `engine` names one the version does not have."""
    if with_probabilities and not runner.facts.get("has_predict_proba"):
        raise PredictionFailed(f"Model {inputs.label} has no predict_proba: it cannot return probabilities.")
    if engine != "auto" and engine not in runner.facts.get("engines", ("sklearn",)):
        raise InvalidRequest(
            f"Model {inputs.label} has no {engine} engine (its version's engine_detail says why): "
            "ask for engine 'auto' or 'sklearn'.",
            {"engine": [f"Must be one of: {', '.join(['auto', *runner.facts.get('engines', ('sklearn',))])}."]},
        )
    if version is None:
        predictions, keys, proba, answered = runner.predict(
            columns, rows, inputs.column_names, with_probabilities, engine
        )
    else:
        labels = (model, str(version))
        started = time.perf_counter()
        try:
            predictions, keys, proba, answered = runner.predict(
                columns, rows, inputs.column_names, with_probabilities, engine
            )
        except (PredictionFailed, RunnerTimedOut, RunnerFailed) as exc:
            kind = next(k for cls, k in _FAILURE_KINDS if isinstance(exc, cls))
            metrics.PREDICTION_FAILURES.labels(*labels, kind).inc()
            raise
        metrics.PREDICTION_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        metrics.PREDICTION_ROWS.labels(*labels).inc(rows)
    probabilities = None
    if proba is not None and keys is not None:
        probabilities = [dict(zip(keys, _json_values(row), strict=True)) for row in proba]
    return Prediction(model, version, _json_values(predictions), probabilities, answered)


_FAILURE_KINDS = ((PredictionFailed, "model_error"), (RunnerTimedOut, "timeout"), (RunnerFailed, "runner_died"))
