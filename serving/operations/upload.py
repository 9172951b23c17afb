"""Registering an uploaded artifact: store, scan, load and inspect in a runner, try the example, record.

The web worker stores the bytes and scans them (nothing is unpickled here); loading, inferring the
schema and trying the example happen in a fresh confined runner, which, once the version is
recorded, goes on serving it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

from model_store.errors import (
    ArtifactTooLarge,
    InvalidArtifact,
    ModelStoreError,
    PredictionFailed,
    RunnerFailed,
    RunnerTimedOut,
    UnsafeArtifact,
)
from model_store.features import MAX_FEATURES, POSITIONAL, FeatureSpec, FeatureType, typed_by_example
from model_store.loader import check_artifact
from model_store.store import StoredArtifact, StoreFile, object_name
from registry import service
from registry.errors import Conflict, InvalidInput, RegistryError
from registry.models import ModelVersion
from registry.names import is_model_name
from registry.service import ArtifactFacts
from serving.inference.errors import InvalidRows, TooManyRows
from serving.inference.runtime import Runtime, run_model, version_key
from serving.runners.pool import Runner
from serving.telemetry import metrics

log = logging.getLogger(__name__)


def register_upload(
    rt: Runtime, name: str, upload: BinaryIO, metadata: Mapping[str, Any], *, actor: str
) -> ModelVersion:
    """Record a new version of `name` from an uploaded artifact, and its events under `actor`;
    all or nothing (_register); counted."""
    try:
        version = _register(rt, name, upload, metadata, actor=actor)
    except (RegistryError, ModelStoreError) as exc:
        refused = isinstance(exc, (InvalidInput, InvalidArtifact, UnsafeArtifact, ArtifactTooLarge))
        metrics.UPLOADS.labels("refused" if refused else "failed").inc()
        raise
    except BaseException:
        metrics.UPLOADS.labels("failed").inc()
        raise
    metrics.UPLOADS.labels("created").inc()
    metrics.UPLOAD_BYTES.inc(version.size_bytes)
    return version


def _register(rt: Runtime, name: str, upload: BinaryIO, metadata: Mapping[str, Any], *, actor: str) -> ModelVersion:
    """Record a new version of `name` from an uploaded artifact, and its events under `actor`;
    all or nothing.

    The artifact is stored (fsynced, in place under its sha256) before the database commit, so a version never
    exists without its file; on any failure, a file this upload created is removed again.
    Raises InvalidInput, InvalidArtifact/UnsafeArtifact (nothing unpickled), PredictionFailed,
    ArtifactTooLarge, StoreWriteFailed, Conflict (`maas store gc` took the file meanwhile).
    """
    if not is_model_name(name):
        raise InvalidInput(f"Invalid model name {name!r}: it must match ^[a-z0-9][a-z0-9._-]{{0,63}}$.")
    stored = rt.store.put(upload, rt.settings.max_upload_bytes)
    runner: Runner | None = None
    graph_stored: StoredArtifact | None = None
    try:
        with rt.store.opened(stored.sha256) as file:
            # The first gate, here: a static scan (nothing is unpickled) refuses what names code
            # outside the allow-list before any runner sees the bytes.
            fmt = check_artifact(file, rt.settings.trusted_modules, rt.settings.model_bytes_limit)
            runner = rt.runners.start(f"The uploaded model '{name}'")
            declared = metadata.get("features")
            if declared == POSITIONAL:
                reply = runner.load(file, fmt, "positional")
            else:
                reply = runner.load(file, fmt, "declared" if declared else "infer", declared or None)
        facts = runner.facts
        features = _checked_features(reply.get("features"))
        if not isinstance(declared, list):  # inferred: the example shows which columns hold booleans
            features = typed_by_example(features, metadata.get("example"))
        # The example, or one row built from the schema: a version that cannot predict is refused now.
        _try_example(rt, runner, name, features, metadata.get("example"))
        try:
            graph, engine_detail = _compile(rt, runner, name, features, metadata.get("example"), stored.size_bytes)
        except (RunnerTimedOut, RunnerFailed) as exc:
            # Compiling is an extra: a model the converter chokes on still serves, from a fresh runner.
            runner.kill()
            graph, engine_detail = None, f"compiling stopped: {exc.message}"[:1000]
            with rt.store.opened(stored.sha256) as file:
                runner = rt.runners.start(f"The uploaded model '{name}'")
                runner.load(file, fmt, "declared", features)
        if graph is not None:
            # A derived artifact, stored like the pickle: before the commit, under its own sha256.
            graph_stored = rt.store.put(io.BytesIO(graph))
        artifact = ArtifactFacts(
            format=facts["format"],
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            estimator=facts["estimator"],
            has_predict_proba=facts["has_predict_proba"],
            classes=facts["classes"],
            library_versions=facts["library_versions"],
            onnx_sha256=graph_stored.sha256 if graph_stored is not None else None,
            engine_detail=engine_detail,
        )
        with rt.db.write() as session:
            version = service.register_version(
                session,
                name,
                artifact,
                features,
                description=metadata.get("description"),
                tags=metadata.get("tags"),
                aliases=metadata.get("aliases", ()),
                example=metadata.get("example"),
                actor=actor,
            )
            # Checked after the row is written, not before: whoever removes an unreferenced
            # artifact (a failed upload of the same bytes, `maas store gc`) does so holding
            # off version writers (hold_writers=True), which waits for this transaction. So
            # either it sees this version and keeps the file, or it removed the file first
            # and this check sees that: never a version without its file. The artifact is
            # fine: only the timing was wrong, hence a conflict to retry, not a 422.
            if not rt.store.exists(stored.sha256) or (
                graph_stored is not None and not rt.store.exists(graph_stored.sha256)
            ):
                raise Conflict(
                    "The artifact was removed from the model store while this version was being"
                    " recorded (`maas store gc` found it unreferenced); upload it again."
                )
    except BaseException:
        if runner is not None:
            runner.kill()
        if stored.created:
            _forget_artifact(rt, stored)
        if graph_stored is not None and graph_stored.created:
            _forget_artifact(rt, graph_stored)
        raise
    assert runner is not None
    runner.label = f"Version {version.version} of '{name}'"
    rt.runners.adopt(version_key(name, version.version, stored.sha256), runner)
    log.info("registered %s version %s (sha256 %s)", name, version.version, stored.sha256)
    return version


_FEATURE_KEYS = {"name", "type", "required", "allowed", "minimum", "maximum", "accepts_unseen"}
_TYPE_NAMES = frozenset(t.value for t in FeatureType)


def _checked_features(features: Any) -> list[FeatureSpec]:
    """The feature schema a runner inferred or checked: its answer is data from the uploader's
    process, so its shape is checked here before anything records it."""
    if not isinstance(features, list) or not features or len(features) > MAX_FEATURES:
        raise InvalidArtifact("The model's feature schema could not be determined.")
    for f in features:
        if not (
            isinstance(f, dict)
            and set(f) == _FEATURE_KEYS
            and isinstance(f["name"], str)
            and isinstance(f["type"], str)
            and f["type"] in _TYPE_NAMES
            and isinstance(f["required"], bool)
            and isinstance(f["accepts_unseen"], bool)
            and (f["allowed"] is None or isinstance(f["allowed"], list))
            and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                for v in (f["minimum"], f["maximum"])
            )
        ):
            raise InvalidArtifact("The model's feature schema could not be determined (a malformed feature).")
    return [FeatureSpec.from_json(f) for f in features]


def _try_example(rt: Runtime, runner: Runner, name: str, features: Sequence[FeatureSpec], example: Any) -> None:
    """Predict the upload's example, or, without one, one row built from the schema (smoke_row).

    Raises InvalidInput listing each offending feature when the example does not fit the schema,
    InvalidArtifact naming the model's exception when it cannot predict.
    """
    inputs = rt.compile_inputs(name, None, features, runner.facts)
    what = "The example" if example is not None else "A row built from the feature schema"
    try:
        columns, rows = inputs.check(example if example is not None else smoke_row(features))
    except InvalidRows as exc:
        raise InvalidInput(
            f"The example does not fit the feature schema: {exc.message}",
            errors={"form": {"metadata": {"example": exc.errors}}},
        ) from None
    except TooManyRows as exc:
        raise InvalidInput(f"The example does not fit the feature schema: {exc.message}") from None
    try:
        run_model(runner, name, None, inputs, columns, rows, with_probabilities=False)
    except (PredictionFailed, RunnerTimedOut, RunnerFailed) as exc:
        # A model that raises, hangs or dies on its first row will do so for clients too: the
        # upload is what is wrong (422), not the service.
        row = "" if example is not None else f" ({json.dumps(smoke_row(features), default=str)[:500]})"
        raise InvalidArtifact(f"{what}{row} failed: {exc.message}") from None


# Rows drawn from the schema, on top of the example and the smoke row, that a compiled graph must
# answer as the model does; strings tried where a feature takes any (or unseen) values.
VERIFICATION_ROWS = 200
VERIFICATION_STRINGS = ("", "a", "zz-unseen", "0")


def _compile(
    rt: Runtime, runner: Runner, name: str, features: Sequence[FeatureSpec], example: Any, size: int
) -> tuple[bytes | None, str | None]:
    """Compile the upload (`size` bytes) to ONNX in its runner, verified on the example, the smoke
    row and rows drawn from the schema: (the graph, None), or (None, why the version serves with
    scikit-learn only)."""
    compile_limit = rt.settings.compile_max_bytes
    detail: str | None
    if size > compile_limit:
        detail = (
            f"not compiled: the artifact ({size} bytes) is larger than MAAS_COMPILE_MAX_BYTES ({compile_limit} bytes)"
            if compile_limit
            else "not compiled: MAAS_COMPILE_MAX_BYTES is 0"
        )
        log.info("the upload of %s serves with scikit-learn only: %s", name, detail)
        return None, detail
    inputs = rt.compile_inputs(name, None, features, runner.facts)
    batches = [inputs.check(example)] if example is not None else []  # checked by _try_example already
    batches.append(inputs.check(smoke_row(features)))
    samples = verification_rows(features, VERIFICATION_ROWS)
    size = max(1, inputs.max_rows)  # batches no larger than a client may send (MAAS_MAX_BATCH_ROWS)
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        try:
            batches.append(inputs.check(chunk))
        except InvalidRows:  # a drawn row the schema refuses: never sent by a client either
            batches.extend(_checked_rows(inputs, chunk))
    started = time.perf_counter()
    graph: bytes | None
    try:
        graph, detail = runner.compile(features, batches, inputs.column_names)
    except PredictionFailed as exc:  # our converter's code raised in the runner: no graph, say so
        graph, detail = None, f"compiling failed: {exc.message}"[:1000]
    limit = rt.settings.model_bytes_limit
    if graph is not None and len(graph) > limit:  # no runner would open it
        detail = f"the compiled graph ({len(graph)} bytes) is larger than MAAS_MAX_MODEL_BYTES"
        graph = None
    took = (time.perf_counter() - started) * 1e3
    if graph is not None:
        log.info("compiled the upload of %s to ONNX (%d bytes) in %.0f ms", name, len(graph), took)
    else:
        log.info("the upload of %s serves with scikit-learn only (%.0f ms): %s", name, took, detail)
    return graph, detail


def _checked_rows(inputs: Any, records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """The records the schema accepts, as one checked batch (none when it accepts none)."""
    kept = []
    for record in records:
        try:
            inputs.check([record])
        except InvalidRows:
            continue
        kept.append(record)
    return [inputs.check(kept)] if kept else []


def verification_rows(features: Sequence[FeatureSpec], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` records drawn from a schema (the same for the same schema): numbers within their
    bounds (or around them, around 0 without), allowed values, both booleans, a few strings."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        row: dict[str, Any] = {}
        for f in features:
            value: Any
            if f.allowed and not (f.accepts_unseen and rng.random() < 0.2):
                value = rng.choice(f.allowed)
            elif f.type is FeatureType.BOOLEAN:
                value = rng.random() < 0.5
            elif f.type is FeatureType.STRING:
                value = rng.choice(VERIFICATION_STRINGS)
            else:
                low, high = f.minimum, f.maximum
                if low is None and high is None:
                    number = rng.gauss(0.0, 3.0)
                elif low is None or high is None:
                    edge = low if low is not None else high
                    assert edge is not None
                    spread = max(abs(edge), 1.0)
                    number = edge + (1 if low is not None else -1) * abs(rng.gauss(0.0, spread))
                else:
                    number = rng.uniform(low, high)
                if f.type is FeatureType.INTEGER:
                    number = math.floor(number)
                    if f.minimum is not None and number < f.minimum:
                        number = math.ceil(f.minimum)
                value = number
            row[f.name] = value
        rows.append(row)
    return rows


def smoke_row(features: Sequence[FeatureSpec]) -> dict[str, Any]:
    """One record from a schema: a bound's midpoint (or the bound), the first allowed value, false,
    or 0 / "" where the schema says nothing; an integer feature's midpoint is rounded down."""
    row: dict[str, Any] = {}
    for f in features:
        if f.allowed:
            value: Any = f.allowed[0]
        elif f.type is FeatureType.BOOLEAN:
            value = False
        elif f.type is FeatureType.STRING:
            value = ""
        else:
            bounds = [b for b in (f.minimum, f.maximum) if b is not None]
            middle = sum(bounds) / len(bounds) if bounds else 0.0
            value = math.floor(middle) if f.type is FeatureType.INTEGER else middle
            if f.type is FeatureType.INTEGER and f.minimum is not None and value < f.minimum:
                value = math.ceil(f.minimum)
        row[f.name] = value
    return row


def _forget_artifact(rt: Runtime, stored: StoredArtifact) -> None:
    """Remove the file this failed upload created, by the rule `maas store gc` follows: while
    no version can be added, only if no version references it, and only if it was not touched
    since this upload left it (a concurrent upload of the same bytes found it and is about to
    record a version of it: put() touched it)."""
    try:
        with rt.db.write() as session:
            if not service.sha256_in_use(session, stored.sha256, hold_writers=True):
                file = StoreFile(object_name(stored.sha256), stored.sha256, stored.size_bytes, stored.mtime)
                rt.store.remove_stale(file, cutoff=stored.mtime)
    except Exception:  # cleanup must not hide the original error; `maas store gc` mops up
        log.exception("could not remove artifact %s after a failed upload", stored.sha256)
