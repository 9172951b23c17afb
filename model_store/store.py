"""Artifact bytes on disk, addressed by their sha256, written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from model_store.errors import ArtifactTooLarge, ArtifactUnavailable, StoreClaimed, StoreWriteFailed

if TYPE_CHECKING:
    from typing_extensions import Buffer

CHUNK_BYTES = 1 << 20
UPLOAD_PREFIX = "upload-"
UPLOAD_SUFFIX = ".part"
# At the store's root: the id of the registry whose versions this store's artifacts are (one line).
CLAIM_FILE = "registry-id"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    created: bool  # False when identical bytes were already stored
    # The mtime put() left on the file: whoever finds it later than this has touched it since
    # (another put() of the same bytes), which is what a failed upload's cleanup must respect.
    mtime: float


@dataclass(frozen=True)
class StoredFile(StoredArtifact):
    """What the directory store's put() stored: with the file's path."""

    path: Path


@dataclass(frozen=True)
class StoreFile:
    """A file found in the store: an artifact (`sha256` set) or an upload's temp file (None).

    `name` is its place in the store (`objects/ab/ab12...`, `tmp/upload-x.part`), as gc prints it;
    `upload_id` is set for an unfinished multipart upload of object storage.
    """

    name: str
    sha256: str | None
    size_bytes: int
    mtime: float
    upload_id: str | None = None


def object_name(sha256: str) -> str:
    """Where an artifact lives in any store, relative to its root: `objects/<2 hex>/<sha256>`."""
    if not _is_sha256(sha256):
        raise ArtifactUnavailable("Invalid artifact digest.")
    return f"objects/{sha256[:2]}/{sha256}"


class ModelStore(Protocol):
    """What the server asks of a model store: the directory (ArtifactStore) or object storage
    (model_store.s3.S3Store). Both address artifacts by sha256 and verify them when opened."""

    @property
    def location(self) -> str: ...

    def init(self) -> None: ...

    def spool(self) -> Spool: ...

    def put(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredArtifact: ...

    def opened(self, sha256: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def exists(self, sha256: str) -> bool: ...

    def artifacts(self) -> Iterator[StoreFile]: ...

    def partial_uploads(self) -> Iterator[StoreFile]: ...

    def remove_stale(self, file: StoreFile, cutoff: float) -> int | None: ...

    def owner(self) -> str | None: ...

    def claim(self, registry_id: str) -> bool: ...

    def check(self) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stat_file(path: Path, name: str, sha256: str | None) -> StoreFile | None:
    try:
        st = path.lstat()
    except FileNotFoundError:  # removed since it was listed
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return StoreFile(name, sha256, st.st_size, st.st_mtime)


def _check_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ArtifactTooLarge(f"The artifact is larger than the limit of {max_bytes} bytes.")


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def open_checked(path: Path, sha256: str) -> BinaryIO:
    """The artifact opened, after its bytes were hashed and found to be `sha256` (rewound);
    raises ArtifactUnavailable when it is missing, unreadable or damaged."""
    f: BinaryIO | None = None
    try:
        f = path.open("rb")
        digest = hashlib.sha256()
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    except OSError as exc:
        if f is not None:
            f.close()
        if isinstance(exc, FileNotFoundError):
            raise ArtifactUnavailable(f"The artifact {sha256} is missing from the model store.") from None
        raise ArtifactUnavailable(
            f"The artifact {sha256} cannot be read from the model store ({exc.strerror})."
        ) from None
    if digest.hexdigest() != sha256:
        f.close()
        raise ArtifactUnavailable(f"The artifact {sha256} is damaged: its bytes no longer match its sha256.")
    f.seek(0)
    return f


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """OSError of the store's file system as StoreWriteFailed: a full disk or an I/O error is
    the store's state, answered as such (503), not a fault of the server's code."""
    try:
        yield
    except OSError as exc:
        raise StoreWriteFailed(
            f"The model store cannot take the artifact ({exc.strerror or type(exc).__name__})."
        ) from exc


class Spool(io.BufferedRandom):
    """An upload's bytes on their way in (ArtifactStore.spool): a file in the store's tmp/
    whose name goes when it is closed.

    Writes that the file system refuses raise StoreWriteFailed, whoever writes (werkzeug's
    form parser spools the upload through write, flush and seek).
    """

    def __init__(self, fd: int, path: Path) -> None:
        super().__init__(io.FileIO(fd, "r+b"))
        self.path = path
        # The sha256 of the bytes as they arrive, while they are written in order from the start
        # (as werkzeug's parser writes them): put() then need not read them again to hash them.
        self._digest: hashlib._Hash | None = hashlib.sha256()
        self._hashed = 0

    def write(self, data: Buffer) -> int:
        with writing():
            at = self.tell()
            written = super().write(data)
        if self._digest is not None:
            if at == self._hashed:
                self._digest.update(memoryview(data).cast("B")[:written])
                self._hashed += written
            elif at < self._hashed:  # rewritten: hashed by reading, as any stream
                self._digest = None
        return written

    def arrived_sha256(self) -> str | None:
        """The sha256 of the whole file when every byte of it was hashed as it was written, else None."""
        if self._digest is None:
            return None
        self.flush()
        if os.fstat(self.fileno()).st_size != self._hashed:
            return None
        return self._digest.hexdigest()

    def flush(self) -> None:
        with writing():
            super().flush()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        with writing():
            return super().seek(offset, whence)

    def close(self) -> None:
        if self.closed:
            return
        try:
            # What was not written yet belongs to an upload that is being given up: a write
            # error now would only hide the answer the upload already got.
            with contextlib.suppress(OSError, StoreWriteFailed):
                super().close()
        finally:
            try:
                self.path.unlink(missing_ok=True)  # `maas store gc` may have taken it already
            except OSError as exc:  # left for `maas store gc`
                log.warning("could not remove the upload spool %s: %s", self.path, exc.strerror)


def new_spool(tmp: Path, make_dirs: Callable[[], None]) -> Spool:
    """A Spool in `tmp`, named as partial uploads are. Raises StoreWriteFailed."""
    with writing():
        try:
            fd, name = tempfile.mkstemp(dir=tmp, prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX)
        except FileNotFoundError:
            # tmp/ was removed under the running server (a clean-up by hand): made again
            # here rather than checked before every upload.
            make_dirs()
            fd, name = tempfile.mkstemp(dir=tmp, prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX)
    return Spool(fd, Path(name))


def spooled_uploads(tmp: Path) -> Iterator[StoreFile]:
    """The upload temp files in `tmp` (named `tmp/...`)."""
    if not tmp.is_dir():
        return
    for path in sorted(tmp.glob(f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}")):
        found = _stat_file(path, f"tmp/{path.name}", None)
        if found is not None:
            yield found


def remove_spooled(tmp: Path, file: StoreFile, cutoff: float) -> int | None:
    """Remove an upload temp file listed by spooled_uploads(tmp) unless modified after `cutoff`."""
    folder, _, base = file.name.partition("/")
    if folder != "tmp" or "/" in base or not Path(base).match(f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}"):
        raise ValueError(f"{file.name} is not an upload temp file")
    return _unlink_unless_newer(tmp / base, file.name, None, cutoff)


def _unlink_unless_newer(path: Path, name: str, sha256: str | None, cutoff: float) -> int | None:
    current = _stat_file(path, name, sha256)
    if current is None or current.mtime > cutoff:
        return None
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return current.size_bytes


class ArtifactStore:
    """Files under `root/objects/<2 hex>/<sha256>`; uploads are staged in `root/tmp`.

    A file is only ever put in place complete and fsynced, so a crash leaves at most a stray
    temp file, never a half-written artifact under a sha256 name. OSError of the file system
    while storing is raised as StoreWriteFailed.
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
        return self.root / object_name(sha256)

    @property
    def location(self) -> str:
        return str(self.root)

    def spool(self) -> Spool:
        """A temp file in the store for upload bytes on their way in; its name goes when closed.

        Named like the store's own partial uploads, so that what a crash leaves behind is
        `maas store gc`'s to remove, and on the store's file system, so that put() can take it
        by a hard link instead of copying it. Raises StoreWriteFailed.
        """
        return new_spool(self.tmp, self.init)

    def put(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredFile:
        """Store the bytes of `stream` under their sha256; never holds them in memory.

        A spool() file of this store is hashed and linked into place; any other stream is
        copied in chunks, hashed as it goes. Raises ArtifactTooLarge past `max_bytes` (nothing
        is left behind), StoreWriteFailed when the file system refuses.
        """
        with writing():
            self.init()
            if isinstance(stream, Spool) and stream.path.parent.resolve() == self.tmp.resolve():
                return self._adopt(stream, max_bytes)
            return self._copy_in(stream, max_bytes)

    def _copy_in(self, stream: BinaryIO, max_bytes: int | None) -> StoredFile:
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
                mtime = os.fstat(out.fileno()).st_mtime
            sha256 = digest.hexdigest()
            found = self._found(sha256, size)
            if found is not None:
                tmp_path.unlink()
                return found
            final = self.path_for(sha256)
            self._make_shard(final.parent)
            os.replace(tmp_path, final)
            self._sync_placed(final)
            return StoredFile(sha256, size, created=True, mtime=mtime, path=final)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise

    def _adopt(self, spool: Spool, max_bytes: int | None) -> StoredFile:
        spool.flush()
        _check_size(os.fstat(spool.fileno()).st_size, max_bytes)
        sha256 = spool.arrived_sha256()
        if sha256 is None:
            digest = hashlib.sha256()
            spool.seek(0)
            while chunk := spool.read(CHUNK_BYTES):
                digest.update(chunk)
            sha256 = digest.hexdigest()
        os.fsync(spool.fileno())
        # Taken before the link: once linked, another put() of the same bytes may touch it.
        st = os.fstat(spool.fileno())
        found = self._found(sha256, st.st_size)
        if found is not None:
            return found
        final = self.path_for(sha256)
        self._make_shard(final.parent)
        try:
            os.link(spool.path, final)
        except OSError as exc:
            # An upload of the same bytes placed them first: theirs are kept.
            if isinstance(exc, FileExistsError) and (found := self._found(sha256, st.st_size)):
                return found
            # Else copied, as any other stream: that upload failed and removed them since;
            # or the spool's name is gone (`maas store gc` took it: the upload stalled past
            # the grace period) while its bytes are still in the open file; or the file
            # system has no hard links (SMB/CIFS, many FUSE).
            spool.seek(0)
            return self._copy_in(spool, max_bytes)
        self._sync_placed(final)
        return StoredFile(sha256, st.st_size, created=True, mtime=st.st_mtime, path=final)

    def _found(self, sha256: str, size: int) -> StoredFile | None:
        """The stored file of these bytes, touched, or None when there is none."""
        final = self.path_for(sha256)
        # Identical bytes are already here, perhaps as an orphan that `maas store gc` is about
        # to collect, or as the file of a failed upload about to remove it again. Touching
        # the file restarts its grace period and moves its mtime past the one the failed
        # upload left (both remove only what was not modified since), so the file stays
        # while this upload goes on to record a version of it; if it was removed before the
        # touch, utime fails and the bytes are stored anew. (gc also re-checks the
        # references under a lock, and the upload checks the file is still there once its
        # version row is written.) The time is set explicitly: the kernel's own "now" for
        # utime is coarse (a clock tick) and could equal the mtime of the last write.
        now = time.time_ns()
        try:
            os.utime(final, ns=(now, now))
        except FileNotFoundError:
            return None
        return StoredFile(sha256, size, created=False, mtime=now / 1e9, path=final)

    def _make_shard(self, shard: Path) -> None:
        with contextlib.suppress(FileExistsError):
            shard.mkdir()

    def _sync_placed(self, final: Path) -> None:
        """Make a file just put in place survive a power loss: its name in the shard, and the
        shard's name in objects/. objects/ is synced every time, not only by whoever created
        the shard: that one may not have synced it yet when this version is committed."""
        _fsync_dir(final.parent)
        _fsync_dir(self.objects)

    @contextlib.contextmanager
    def opened(self, sha256: str) -> Iterator[BinaryIO]:
        """The artifact's bytes as an open file, checked to still hash to `sha256`, for the `with`
        block. A runner is handed this very file (its descriptor): a file renamed over the
        artifact after the check is never the one loaded, and runners need no access to the store.
        Raises ArtifactUnavailable when it is missing or damaged.
        """
        with open_checked(self.path_for(sha256), sha256) as f:
            f.seek(0)
            yield f

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

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
                    found = _stat_file(path, object_name(path.name), path.name)
                    if found is not None:
                        yield found

    def partial_uploads(self) -> Iterator[StoreFile]:
        """The temp files of uploads: in progress, or left behind by a process that died."""
        return spooled_uploads(self.tmp)

    def remove_stale(self, file: StoreFile, cutoff: float) -> int | None:
        """Remove an artifact or upload temp file listed by this store unless it was modified
        after `cutoff` (a time.time() value).

        Returns the bytes removed, or None when the file is newer (a put() of the same bytes
        touched it since it was listed) or already gone. A put() that touches it between the
        check and the unlink is caught by the upload itself: it checks the file is still there
        after writing its version row. Empty shard directories are kept: put() creates them
        without a lock and would race with their removal.
        """
        if file.sha256 is None:
            return remove_spooled(self.tmp, file, cutoff)
        return _unlink_unless_newer(self.path_for(file.sha256), file.name, file.sha256, cutoff)

    def owner(self) -> str | None:
        """The id of the registry this store belongs to, or None when no registry claimed it."""
        try:
            return (self.root / CLAIM_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None

    def claim(self, registry_id: str) -> bool:
        """Record `registry_id` as this store's owner unless a registry already is; True when the
        store had no owner before this call.

        Raises StoreClaimed when another registry owns the store (a claim file written by hand
        that is empty counts as another owner: never guessed). The file is written complete and
        fsynced under a temp name, then linked into place, so two registries claiming an empty
        store at once cannot both win: the link fails for the second, which then reads the
        first one's claim.
        """
        owner = self.owner()
        if owner is None:
            self.init()
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="claim-", suffix=".tmp")
            tmp_path = Path(tmp_name)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(registry_id + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(tmp_path, self.root / CLAIM_FILE)
                except FileExistsError:
                    pass  # claimed meanwhile: read below
                except OSError:
                    # No hard links on this file system (SMB/CIFS, many FUSE): a rename, which
                    # could replace a claim made in the instant since owner() was read.
                    os.replace(tmp_path, self.root / CLAIM_FILE)
                else:
                    _fsync_dir(self.root)
                    return True
            finally:
                tmp_path.unlink(missing_ok=True)
            owner = self.owner()
            if owner == registry_id:
                _fsync_dir(self.root)
                return True
        if owner != registry_id:
            raise StoreClaimed(str(self.root), owner or "(an empty registry-id file)", registry_id)
        return False

    def check(self) -> None:
        """Raise OSError unless the store can be written to (readiness)."""
        self.init()
        with tempfile.TemporaryFile(dir=self.tmp):
            pass
