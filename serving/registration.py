"""Registering an uploaded artifact: store, check, load, infer, try the example, record."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, BinaryIO

from model_store.errors import InvalidArtifact, PredictionFailed
from model_store.loader import load_artifact
from model_store.schema import check_declared_schema, infer_feature_schema
from model_store.store import StoredArtifact, StoreFile
from registry import service
from registry.errors import Conflict, InvalidInput
from registry.models import ModelVersion
from registry.names import is_model_name
from registry.service import ArtifactFacts
from serving.errors import RequestError
from serving.runtime import Runtime, run_model

log = logging.getLogger(__name__)


def register_upload(
    rt: Runtime, name: str, upload: BinaryIO, metadata: Mapping[str, Any]
) -> ModelVersion:
    """Record a new version of `name` from an uploaded artifact; all or nothing.

    The artifact is stored (fsynced, in place under its sha256) before the database commit, so a version never
    exists without its file; on any failure, a file this upload created is removed again.
    Raises InvalidInput, InvalidArtifact/UnsafeArtifact (nothing unpickled), PredictionFailed,
    ArtifactTooLarge, StoreWriteFailed, Conflict (`maas store gc` took the file meanwhile).
    """
    if not is_model_name(name):
        raise InvalidInput(
            f"Invalid model name {name!r}: it must match ^[a-z0-9][a-z0-9._-]{{0,63}}$."
        )
    stored = rt.store.put(upload, rt.settings.max_upload_bytes)
    try:
        loaded = load_artifact(stored.path, rt.settings.trusted_modules)
        if metadata.get("features"):
            features = check_declared_schema(metadata["features"], loaded.estimator)
        else:
            features = infer_feature_schema(loaded.estimator)
        if "example" in metadata:
            _try_example(rt, name, features, loaded.estimator, metadata["example"])
        facts = ArtifactFacts(
            format=loaded.format,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            estimator=loaded.estimator_name,
            has_predict_proba=loaded.has_predict_proba,
            classes=loaded.classes,
            library_versions=loaded.library_versions,
        )
        with rt.db.write() as session:
            version = service.register_version(
                session,
                name,
                facts,
                features,
                description=metadata.get("description"),
                tags=metadata.get("tags"),
                aliases=metadata.get("aliases", ()),
            )
            # Checked after the row is written, not before: whoever removes an unreferenced
            # artifact (a failed upload of the same bytes, `maas store gc`) does so holding
            # off version writers (hold_writers=True), which waits for this transaction. So
            # either it sees this version and keeps the file, or it removed the file first
            # and this check sees that: never a version without its file. The artifact is
            # fine: only the timing was wrong, hence a conflict to retry, not a 422.
            if not rt.store.exists(stored.sha256):
                raise Conflict(
                    "The artifact was removed from the model store while this version was being"
                    " recorded (`maas store gc` found it unreferenced); upload it again."
                )
    except BaseException:
        if stored.created:
            _forget_artifact(rt, stored)
        raise
    rt.estimators.put(stored.sha256, loaded.estimator)
    log.info("registered %s version %s (sha256 %s)", name, version.version, stored.sha256)
    return version


def _try_example(
    rt: Runtime, name: str, features: list[dict[str, Any]], estimator: Any, example: Any
) -> None:
    inputs = rt.compile_inputs(name, 0, features, estimator)
    try:
        model_input, _ = inputs.to_model_input(example)
        run_model(name, 0, estimator, model_input, with_probabilities=False)
    except RequestError as exc:
        raise InvalidArtifact(f"The example does not fit the feature schema: {exc.message}") from None
    except PredictionFailed as exc:
        raise InvalidArtifact(f"The example failed: {exc.message}") from None


def _forget_artifact(rt: Runtime, stored: StoredArtifact) -> None:
    """Remove the file this failed upload created, by the rule `maas store gc` follows: while
    no version can be added, only if no version references it, and only if it was not touched
    since this upload left it (a concurrent upload of the same bytes found it and is about to
    record a version of it: put() touched it)."""
    try:
        with rt.db.write() as session:
            if not service.sha256_in_use(session, stored.sha256, hold_writers=True):
                file = StoreFile(stored.path, stored.sha256, stored.size_bytes, stored.mtime)
                rt.store.remove_stale(file, cutoff=stored.mtime)
    except Exception:  # cleanup must not hide the original error; `maas store gc` mops up
        log.exception("could not remove artifact %s after a failed upload", stored.sha256)
