"""`maas store gc`'s work: which artifacts no version references, and removing them safely
while uploads go on (the registry knows the references, the model store the files)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from model_store.store import ModelStore, StoreFile
from registry import service
from registry.db import Database


@dataclass
class Garbage:
    """What `maas store gc` found: the files it may remove, and how many it keeps and why."""

    orphans: list[StoreFile] = field(default_factory=list)
    partial_uploads: list[StoreFile] = field(default_factory=list)
    referenced: int = 0
    recent: int = 0


def find_garbage(database: Database, store: ModelStore, cutoff: float) -> Garbage:
    """Artifacts no version references and upload temp files, both modified before `cutoff`."""
    # The store is listed before the references are read: a version committed in between
    # is then among the references. A file stored after the listing is not a candidate.
    artifacts = list(store.artifacts())
    partial = list(store.partial_uploads())
    with database.read() as session:
        referenced = service.referenced_sha256s(session)
    garbage = Garbage()
    for artifact in artifacts:
        if artifact.sha256 in referenced:
            garbage.referenced += 1
        elif artifact.mtime > cutoff:
            garbage.recent += 1
        else:
            garbage.orphans.append(artifact)
    for upload in partial:
        if upload.mtime > cutoff:
            garbage.recent += 1
        else:
            garbage.partial_uploads.append(upload)
    return garbage


@dataclass(frozen=True)
class Removal:
    """What became of one file remove_garbage tried to remove."""

    file: StoreFile
    removed_bytes: int | None  # None: kept after all, or not removed (`error`)
    error: OSError | None = None


def _remove(store: ModelStore, file: StoreFile, cutoff: float) -> Removal:
    try:
        return Removal(file, store.remove_stale(file, cutoff))
    except OSError as exc:  # this file only: the others are still removed
        return Removal(file, None, exc)


def remove_garbage(database: Database, store: ModelStore, garbage: Garbage, cutoff: float) -> Iterator[Removal]:
    """Remove what find_garbage found, unless it changed since; yields what became of each
    file (removed, kept after all, or an OSError: one file that cannot be removed does not
    stop the others).

    The race to close: an upload of bytes that are already here as an orphan finds the file
    (put() says created=False) and goes on to record a version of it. Three things keep gc
    from removing that file under the new version:
    - put() touches the file, so it is no longer older than the grace period;
    - the references are read again under referenced_sha256s(hold_writers=True), in a write
      transaction, so no version can be added while the files are removed, and one added
      since find_garbage is seen;
    - the mtime is checked again right before each unlink.
    An upload that touched the file after that last check has not written its version row
    yet (it waits for this transaction), and it checks that the file is still there once it
    has: it fails, asking for the upload again, instead of recording a version without a file.
    A failed upload removes the file it created under the same lock (registration.py); when
    it could not (the database was down), the file is an orphan like any other, collected here.
    """
    if garbage.orphans:
        with database.write() as session:
            referenced = service.referenced_sha256s(session, hold_writers=True)
            for artifact in garbage.orphans:
                if artifact.sha256 in referenced:
                    yield Removal(artifact, None)
                else:
                    yield _remove(store, artifact, cutoff)
    # Nothing references a temp file; the grace period protects an upload still writing one.
    for upload in garbage.partial_uploads:
        yield _remove(store, upload, cutoff)
