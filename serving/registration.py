"""Registering an uploaded artifact: store, check, load, infer, try the example, record."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, BinaryIO

from model_store.errors import InvalidArtifact, PredictionFailed
from model_store.loader import load_artifact
from model_store.schema import check_declared_schema, infer_feature_schema
from registry import service
from registry.errors import InvalidInput
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

    The artifact is stored (fsynced, renamed) before the database commit, so a version never
    exists without its file; on any failure, a file this upload created is removed again.
    Raises InvalidInput, InvalidArtifact/UnsafeArtifact (nothing unpickled), PredictionFailed.
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
            # artifact (a failed upload of the same bytes, `maas store gc`) does so under
            # referenced_sha256s(hold_writers=True), which waits for this transaction. So
            # either it sees this version and keeps the file, or it removed the file first
            # and this check sees that: never a version without its file.
            if not rt.store.exists(stored.sha256):
                raise InvalidArtifact("The artifact vanished from the store; upload it again.")
    except BaseException:
        if stored.created:
            _forget_artifact(rt, stored.sha256)
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


def _forget_artifact(rt: Runtime, sha256: str) -> None:
    try:
        # As `maas store gc` does: the file goes while no upload of the same bytes can
        # commit, and only if no version references it.
        with rt.db.write() as session:
            if sha256 not in service.referenced_sha256s(session, hold_writers=True):
                rt.store.delete(sha256)
    except Exception:  # cleanup must not hide the original error; `maas store gc` mops up
        log.exception("could not remove artifact %s after a failed upload", sha256)
