"""Artifact bytes on disk, addressed by their sha256, written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from model_store.errors import ArtifactTooLarge, ArtifactUnavailable

CHUNK_BYTES = 1 << 20
UPLOAD_PREFIX = "upload-"
UPLOAD_SUFFIX = ".part"


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    path: Path
    created: bool  # False when identical bytes were already stored


@dataclass(frozen=True)
class StoreFile:
    """A file found in the store: an artifact (`sha256` set) or an upload's temp file (None)."""

    path: Path
    sha256: str | None
    size_bytes: int
    mtime: float


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stat_file(path: Path, sha256: str | None) -> StoreFile | None:
    try:
        st = path.lstat()
    except FileNotFoundError:  # removed since it was listed
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return StoreFile(path, sha256, st.st_size, st.st_mtime)


def _check_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ArtifactTooLarge(f"The artifact is larger than the limit of {max_bytes} bytes.")


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

    def spool(self) -> IO[bytes]:
        """A temp file in the store for upload bytes on their way in; its name goes when closed.

        Named like the store's own partial uploads, so that what a crash leaves behind is
        `maas store gc`'s to remove, and on the store's file system, so that put() can take it
        by a hard link instead of copying it.
        """
        return tempfile.NamedTemporaryFile(dir=self.tmp, prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX)

    def put(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredArtifact:
        """Store the bytes of `stream` under their sha256; never holds them in memory.

        A spool() file is hashed and linked into place; any other stream is copied in chunks,
        hashed as it goes. Raises ArtifactTooLarge past `max_bytes` (nothing is left behind).
        """
        self.init()
        spooled = self._spooled_here(stream)
        if spooled is not None:
            return self._adopt(stream, spooled, max_bytes)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX)
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    _check_size(size, max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._place(tmp_path, digest.hexdigest(), size, link=False)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise

    def _spooled_here(self, stream: BinaryIO) -> Path | None:
        name = getattr(stream, "name", None)
        if not isinstance(name, str) or not hasattr(stream, "fileno"):
            return None
        path = Path(name)
        return path if path.parent.resolve() == self.tmp.resolve() else None

    def _adopt(self, spool: BinaryIO, path: Path, max_bytes: int | None) -> StoredArtifact:
        spool.flush()
        size = os.fstat(spool.fileno()).st_size
        _check_size(size, max_bytes)
        digest = hashlib.sha256()
        spool.seek(0)
        while chunk := spool.read(CHUNK_BYTES):
            digest.update(chunk)
        os.fsync(spool.fileno())
        return self._place(path, digest.hexdigest(), size, link=True)

    def _place(self, staged: Path, sha256: str, size: int, *, link: bool) -> StoredArtifact:
        """Put the fsynced file `staged` in place as `sha256`: by a hard link (the spool keeps,
        and later drops, its own name) or by renaming it."""
        final = self.path_for(sha256)
        try:
            # Identical bytes are already here, perhaps as an orphan that `maas store gc`
            # is about to collect. Touching the file restarts its grace period, so gc
            # leaves it alone while this upload goes on to record a version of it; and
            # if gc removed it before the touch, utime fails and the bytes are stored
            # anew below. (gc also re-checks the references under a lock, and the
            # upload checks the file is still there once its version row is written.)
            os.utime(final)
        except FileNotFoundError:
            pass
        else:
            if not link:
                staged.unlink()
            return StoredArtifact(sha256, size, final, created=False)
        final.parent.mkdir(exist_ok=True)
        if link:
            try:
                os.link(staged, final)
            except FileExistsError:  # an upload of the same bytes placed them first
                return StoredArtifact(sha256, size, final, created=False)
        else:
            os.replace(staged, final)
        _fsync_dir(final.parent)
        return StoredArtifact(sha256, size, final, created=True)

    @contextlib.contextmanager
    def verified(self, sha256: str) -> Iterator[Path]:
        """A path to the artifact's bytes, checked to still hash to `sha256`, for the `with` block.

        The path names the very file that was hashed (on Linux /proc/self/fd/<fd> of the open
        file): a file renamed over the artifact after the check is never the one loaded.
        Raises ArtifactUnavailable when it is missing or damaged.
        """
        path = self.path_for(sha256)
        digest = hashlib.sha256()
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise ArtifactUnavailable(f"The artifact {sha256} is missing from the model store.") from None
        except OSError as exc:
            raise ArtifactUnavailable(
                f"The artifact {sha256} cannot be read from the model store ({exc.strerror})."
            ) from None
        with f:
            try:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
            except OSError as exc:
                raise ArtifactUnavailable(
                    f"The artifact {sha256} cannot be read from the model store ({exc.strerror})."
                ) from None
            if digest.hexdigest() != sha256:
                raise ArtifactUnavailable(
                    f"The artifact {sha256} is damaged: its bytes no longer match its sha256."
                )
            held = Path(f"/proc/self/fd/{f.fileno()}")
            yield held if held.exists() else path

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def delete(self, sha256: str) -> None:
        """Remove an artifact (a missing one is fine)."""
        self.path_for(sha256).unlink(missing_ok=True)

    def artifacts(self) -> Iterator[StoreFile]:
        """Every artifact in the store, with its size and mtime (the time it was last stored).

        Files that are not named as the store names artifacts are not listed: not ours.
        """
        if not self.objects.is_dir():
            return
        for shard in sorted(self.objects.iterdir()):
            if not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                if _is_sha256(path.name) and path.name[:2] == shard.name:
                    found = _stat_file(path, path.name)
                    if found is not None:
                        yield found

    def partial_uploads(self) -> Iterator[StoreFile]:
        """The temp files of uploads: in progress, or left behind by a process that died."""
        if not self.tmp.is_dir():
            return
        for path in sorted(self.tmp.glob(f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}")):
            found = _stat_file(path, None)
            if found is not None:
                yield found

    def remove_stale(self, file: StoreFile, cutoff: float) -> int | None:
        """Remove an artifact or upload temp file listed by this store unless it was modified
        after `cutoff` (a time.time() value).

        Returns the bytes removed, or None when the file is newer (a put() of the same bytes
        touched it since it was listed) or already gone. A put() that touches it between the
        check and the unlink is caught by the upload itself: it checks the file is still there
        after writing its version row. Empty shard directories are kept: put() creates them
        without a lock and would race with their removal.
        """
        if file.sha256 is not None:
            path = self.path_for(file.sha256)
        elif file.path.parent == self.tmp and file.path.match(f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}"):
            path = file.path
        else:
            raise ValueError(f"{file.path} is neither an artifact nor an upload of the store at {self.root}")
        current = _stat_file(path, file.sha256)
        if current is None or current.mtime > cutoff:
            return None
        try:
            path.unlink()
        except FileNotFoundError:
            return None
        return current.size_bytes

    def check(self) -> None:
        """Raise OSError unless the store can be written to (readiness)."""
        self.init()
        with tempfile.TemporaryFile(dir=self.tmp):
            pass
