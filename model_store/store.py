"""Artifact bytes on disk, addressed by their sha256, written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from model_store.errors import ArtifactTooLarge, ArtifactUnavailable

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    path: Path
    created: bool  # False when identical bytes were already stored


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class ArtifactStore:
    """Files under `root/objects/<2 hex>/<sha256>`; uploads are staged in `root/tmp`.

    A file is only ever renamed into place complete and fsynced, so a crash leaves at most
    a stray temp file, never a half-written artifact under a sha256 name.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"

    def init(self) -> None:
        """Create the store's directories (idempotent)."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not _is_sha256(sha256):
            raise ArtifactUnavailable("Invalid artifact digest.")
        return self.objects / sha256[:2] / sha256

    def put(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredArtifact:
        """Copy `stream` into the store in chunks, hashing as it goes; never holds it in memory.

        Raises ArtifactTooLarge past `max_bytes` (nothing is left behind).
        """
        self.init()
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="upload-", suffix=".part")
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ArtifactTooLarge(
                            f"The artifact is larger than the limit of {max_bytes} bytes."
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            final = self.path_for(sha256)
            if final.exists():
                tmp_path.unlink()
                return StoredArtifact(sha256, size, final, created=False)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp_path, final)
            _fsync_dir(final.parent)
            return StoredArtifact(sha256, size, final, created=True)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise

    def verified_path(self, sha256: str) -> Path:
        """The artifact's path after checking its bytes still hash to `sha256`.

        Raises ArtifactUnavailable when it is missing or damaged.
        """
        path = self.path_for(sha256)
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
        except FileNotFoundError:
            raise ArtifactUnavailable(f"The artifact {sha256} is missing from the model store.") from None
        except OSError as exc:
            raise ArtifactUnavailable(
                f"The artifact {sha256} cannot be read from the model store ({exc.strerror})."
            ) from None
        if digest.hexdigest() != sha256:
            raise ArtifactUnavailable(
                f"The artifact {sha256} is damaged: its bytes no longer match its sha256."
            )
        return path

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def delete(self, sha256: str) -> None:
        """Remove an artifact (a missing one is fine)."""
        self.path_for(sha256).unlink(missing_ok=True)

    def check(self) -> None:
        """Raise OSError unless the store can be written to (readiness)."""
        self.init()
        with tempfile.TemporaryFile(dir=self.tmp):
            pass
