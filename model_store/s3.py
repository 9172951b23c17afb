"""Artifacts in S3-compatible object storage (MAAS_STORE_URL=s3://bucket/prefix), through boto3.

The same contract as the directory store (model_store/store.py):
- keys are content addresses, `<prefix>objects/<2 hex>/<sha256>`; an object only ever appears
  complete (S3 shows a multipart upload under its key once CompleteMultipartUpload succeeds), so a
  crash leaves at most an unfinished multipart upload, which `maas store gc` aborts;
- an upload is spooled to local disk as it arrives (never held in memory), hashed there, then sent
  in multipart parts of `part_bytes` (boto3's transfer manager reads one part at a time per
  thread); identical bytes already stored are not sent again, only touched;
- each process keeps a bounded local cache of the objects it opened, keyed by sha256 and hashed
  again whenever opened: a runner is handed an open file of that cache, as it is of the directory
  store, and a damaged copy (on disk or in the bucket) is never loaded;
- "modified" is when the bytes were last stored or touched, kept in the object's metadata to the
  nanosecond (S3's LastModified has whole seconds), which is what gc and a failed upload's
  cleanup compare against.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from model_store.errors import ArtifactTooLarge, ArtifactUnavailable, StoreClaimed, StoreWriteFailed
from model_store.store import (
    CHUNK_BYTES,
    CLAIM_FILE,
    Spool,
    StoredArtifact,
    StoreFile,
    new_spool,
    object_name,
    open_checked,
    remove_spooled,
    spooled_uploads,
    writing,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

# The metadata key of the time the bytes were stored or last touched (time.time_ns()).
STORED_NS = "maas-stored-ns"
MIN_PART_BYTES = 5 << 20  # S3's own minimum for every part but the last
DEFAULT_PART_BYTES = 8 << 20
EVICT_LOCK = "evict.lock"
# A download or cache temp file this old belongs to a process that died: removed on the next eviction.
STALE_TEMP_SECONDS = 3600


class StoreUnreachable(OSError):
    """The object store did not answer, or refused a request (readiness: not ready)."""


def parse_store_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in "/" or "") of `s3://bucket[/prefix]`; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


def _missing(exc: Exception) -> bool:
    return _code(exc) in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


def _reason(exc: Exception) -> str:
    code = _code(exc)
    return f"S3 {code}" if code else f"S3: {type(exc).__name__}: {str(exc)[:200]}"


class S3Store:
    """Artifacts under `s3://bucket/prefix`, with a local cache of the ones opened here."""

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | os.PathLike[str],
        cache_bytes: int,
        endpoint_url: str | None = None,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> None:
        self.bucket, self.prefix = parse_store_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.part_bytes = max(part_bytes, MIN_PART_BYTES)
        self.cache = Path(cache_dir)
        self.cached = self.cache / "objects"
        self.tmp = self.cache / "tmp"
        self.cache_bytes = cache_bytes
        self._client_of: tuple[int, BaseClient] | None = None
        self._client_lock = threading.Lock()
        self._evict_lock = threading.Lock()

    # -- the client --------------------------------------------------------------------------
    @property
    def client(self) -> BaseClient:
        """This process's client (boto3 clients are thread-safe, not fork-safe: a forked worker
        makes its own)."""
        pid = os.getpid()
        with self._client_lock:
            if self._client_of is None or self._client_of[0] != pid:
                import boto3
                from botocore.config import Config

                # A session of this process's own: a forked worker shares nothing with its parent's
                # (the default session's credentials and their refresher's connections).
                client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    config=Config(
                        connect_timeout=5,
                        read_timeout=60,
                        retries={"max_attempts": 3, "mode": "standard"},
                        max_pool_connections=32,
                        # Every download is hashed against its sha256 here: botocore's own check of
                        # the endpoint's CRC is only asked for where S3 requires it. (moto, after
                        # a copy onto itself of a multipart object, sends a CRC that does not match.)
                        response_checksum_validation="when_required",
                    ),
                )
                self._client_of = (pid, client)
            return self._client_of[1]

    def _key(self, name: str) -> str:
        return self.prefix + name

    @property
    def location(self) -> str:
        return self.url

    # -- writing -----------------------------------------------------------------------------
    def init(self) -> None:
        """Create the local cache's directories (the bucket is the operator's to create)."""
        self.cached.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def spool(self) -> Spool:
        """A local temp file for upload bytes on their way in (see ArtifactStore.spool)."""
        return new_spool(self.tmp, self.init)

    def put(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredArtifact:
        """Store the bytes of `stream` under their sha256; never holds them in memory (a part at
        a time). Raises ArtifactTooLarge past `max_bytes`, StoreWriteFailed when the local disk
        or the object store refuses."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        with writing():
            self.init()
        try:
            with self._local_copy(stream, max_bytes) as (local, sha256, size):
                found = self._found(sha256, size)
                if found is not None:
                    return found
                stored_ns = time.time_ns()
                self._upload(local, sha256, stored_ns)
                self._keep_in_cache(local, sha256)
                return StoredArtifact(sha256, size, created=True, mtime=stored_ns / 1e9)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            # boto3's transfer wraps the endpoint's refusal (S3UploadFailedError): its cause has the code.
            cause = exc.__context__ if isinstance(exc, Boto3Error) and exc.__context__ is not None else exc
            raise StoreWriteFailed(f"The model store cannot take the artifact ({_reason(cause)}).") from exc

    @contextlib.contextmanager
    def _local_copy(self, stream: BinaryIO, max_bytes: int | None) -> Iterator[tuple[BinaryIO, str, int]]:
        """`stream` as a local file, its sha256 and size: a spool of this store as it is (hashed
        in one read), any other stream copied to a temp file and hashed on the way."""
        digest = hashlib.sha256()
        size = 0
        if isinstance(stream, Spool) and stream.path.parent.resolve() == self.tmp.resolve():
            with writing():
                stream.flush()
                size = os.fstat(stream.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ArtifactTooLarge(f"The artifact is larger than the limit of {max_bytes} bytes.")
                arrived = stream.arrived_sha256()
                if arrived is not None:  # hashed as it arrived
                    stream.seek(0)
                    yield stream, arrived, size
                    return
                size = 0
                stream.seek(0)
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ArtifactTooLarge(f"The artifact is larger than the limit of {max_bytes} bytes.")
                    digest.update(chunk)
                stream.seek(0)
            yield stream, digest.hexdigest(), size
            return
        with writing(), tempfile.TemporaryFile(dir=self.tmp) as local:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ArtifactTooLarge(f"The artifact is larger than the limit of {max_bytes} bytes.")
                digest.update(chunk)
                local.write(chunk)
            local.flush()
            local.seek(0)
            yield local, digest.hexdigest(), size

    def _upload(self, local: BinaryIO, sha256: str, stored_ns: int) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.part_bytes,
            multipart_chunksize=self.part_bytes,
            max_concurrency=2,  # two parts in memory at most: a 200 MB upload costs ~16 MB
            use_threads=True,
        )
        # By file name, not as a file object: boto3 reads each part of a named file when it sends
        # it (a file object's parts are read into memory as they are queued: the whole upload).
        # /proc/self/fd names the open file itself, even once its name is gone (gc took the spool).
        local.flush()
        self.client.upload_file(
            f"/proc/self/fd/{local.fileno()}",
            self.bucket,
            self._key(object_name(sha256)),
            ExtraArgs={"Metadata": {STORED_NS: str(stored_ns)}},
            Config=config,
        )
        local.seek(0)

    def _found(self, sha256: str, size: int) -> StoredArtifact | None:
        """The stored object of these bytes, touched (see ArtifactStore._found), or None."""
        now = time.time_ns()
        key = self._key(object_name(sha256))
        try:
            # A copy onto itself with new metadata: S3's way to change an object's time. It fails
            # with NoSuchKey when the object is gone (gc took it), and the bytes are sent again.
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                Metadata={STORED_NS: str(now)},
                MetadataDirective="REPLACE",
            )
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        return StoredArtifact(sha256, size, created=False, mtime=now / 1e9)

    # -- the local cache ---------------------------------------------------------------------
    def _cache_path(self, sha256: str) -> Path:
        return self.cache / object_name(sha256)

    def _keep_in_cache(self, local: BinaryIO, sha256: str) -> None:
        """Keep an upload's bytes in the cache (its first load here needs no download): the spool
        linked in, or a copy; best effort."""
        path = self._cache_path(sha256)
        try:
            if path.exists():
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(local, Spool):
                try:
                    os.link(local.path, path)
                except OSError:
                    pass  # the spool's name is gone (gc), or no hard links: copied below
                else:
                    self._evict(keep=path)
                    return
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="cache-")
            try:
                with os.fdopen(fd, "wb") as out:
                    local.seek(0)
                    while chunk := local.read(CHUNK_BYTES):
                        out.write(chunk)
                os.replace(name, path)
            except OSError:
                os.unlink(name)
                raise
            self._evict(keep=path)
        except OSError:
            pass
        finally:
            local.seek(0)

    def _download(self, sha256: str) -> BinaryIO:
        """The object fetched into a temp file of the cache, hashed on the way, then placed in
        the cache; returned open read-only (a runner is handed it: never a descriptor that could
        change the file other workers serve from). Raises ArtifactUnavailable when it is missing,
        unreadable or damaged, or cannot be written here."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(object_name(sha256))
        name: str | None = None
        downloaded: BinaryIO | None = None
        try:
            self.init()
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="download-")
            with os.fdopen(fd, "wb") as out:
                digest = hashlib.sha256()
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                try:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                finally:
                    body.close()
            if digest.hexdigest() != sha256:
                raise ArtifactUnavailable(f"The artifact {sha256} is damaged: its bytes no longer match its sha256.")
            downloaded = open(name, "rb")  # noqa: SIM115 - returned open, for the caller's `with`
        except (BotoCoreError, ClientError) as exc:
            if _missing(exc):
                raise ArtifactUnavailable(f"The artifact {sha256} is missing from the model store.") from None
            raise ArtifactUnavailable(
                f"The artifact {sha256} cannot be read from the model store ({_reason(exc)})."
            ) from None
        except OSError as exc:  # the cache's disk: full, read-only, out of descriptors
            raise ArtifactUnavailable(
                f"The artifact {sha256} cannot be fetched into this replica's cache ({exc.strerror or exc})."
            ) from None
        finally:
            if name is not None and downloaded is None:  # failed: nothing of it is kept
                with contextlib.suppress(OSError):
                    os.unlink(name)
        assert name is not None
        path = self._cache_path(sha256)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(name, path)
        except OSError:  # served from the open file all the same; not cached
            with contextlib.suppress(OSError):
                os.unlink(name)
        else:
            self._evict(keep=path)
        return downloaded

    def _evict(self, keep: Path) -> None:
        """Remove the least recently opened cached files until the cache is within its bound
        (`keep`, just placed, stays even alone over it). A runner holding a removed file keeps
        its open descriptor: only the name goes."""
        with self._evict_lock, contextlib.suppress(OSError), open(self.cache / EVICT_LOCK, "a") as lock:
            # One process at a time (a replica's workers share the cache): none evicts what another
            # just placed in the middle of its own pass.
            fcntl.flock(lock, fcntl.LOCK_EX)
            files = []
            for path in self.cached.glob("*/*"):
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    files.append((st.st_mtime, st.st_size, path))
            # What a process killed while downloading or caching left behind (spools are gc's).
            stale = time.time() - STALE_TEMP_SECONDS
            for leftover in [*self.tmp.glob("download-*"), *self.tmp.glob("cache-*")]:
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < stale:
                        leftover.unlink()
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files, key=lambda f: f[0]):
                if total <= self.cache_bytes:
                    break
                if path == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                total -= size

    @contextlib.contextmanager
    def opened(self, sha256: str) -> Iterator[BinaryIO]:
        """The artifact's bytes as an open file, hashed and found to be `sha256` (the cached copy,
        or one downloaded now). Raises ArtifactUnavailable when missing or damaged in the bucket."""
        path = self._cache_path(sha256)
        f: BinaryIO | None = None
        try:
            f = open_checked(path, sha256)
            now = time.time()
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))  # recently used: evicted last
        except ArtifactUnavailable as exc:
            if "damaged" in exc.message:
                with contextlib.suppress(OSError):
                    path.unlink()  # fetched again below, and put in its place
            f = self._download(sha256)
        with f:
            yield f

    # -- reading and listing -----------------------------------------------------------------
    def exists(self, sha256: str) -> bool:
        """Whether the bucket holds the artifact; raises StoreWriteFailed when it cannot tell."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(object_name(sha256)))
        except Exception as exc:
            if not _missing(exc):
                raise StoreWriteFailed(f"The model store does not answer ({_reason(exc)}).") from exc
        else:
            return True
        try:  # a HEAD's 404 says nothing of what is missing: the object, or the whole bucket
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StoreWriteFailed(f"The model store does not answer ({_reason(exc)}).") from exc
        return False

    def _stored_time(self, head: dict[str, Any]) -> float:
        ns = (head.get("Metadata") or {}).get(STORED_NS)
        try:
            return int(str(ns)) / 1e9
        except (TypeError, ValueError):  # an object put by hand: S3's own time
            return float(head["LastModified"].timestamp())

    def artifacts(self) -> Iterator[StoreFile]:
        """Every artifact in the bucket under the prefix; keys not named as artifacts are skipped.
        The time listed is S3's LastModified (seconds): remove_stale checks the exact one."""
        paginator = self.client.get_paginator("list_objects_v2")
        start = self._key("objects/")
        for page in self._listed(paginator.paginate(Bucket=self.bucket, Prefix=start)):
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                sha256 = name.rsplit("/", 1)[-1]
                try:
                    if object_name(sha256) != name:
                        continue
                except ArtifactUnavailable:
                    continue
                yield StoreFile(name, sha256, int(item["Size"]), float(item["LastModified"].timestamp()))

    def partial_uploads(self) -> Iterator[StoreFile]:
        """This host's upload spools, and the bucket's unfinished multipart uploads under the prefix."""
        yield from spooled_uploads(self.tmp)
        paginator = self.client.get_paginator("list_multipart_uploads")
        # Only under objects/: the store sends nothing anywhere else (the prefix may be a bucket's root).
        for page in self._listed(paginator.paginate(Bucket=self.bucket, Prefix=self._key("objects/"))):
            for upload in page.get("Uploads", []):
                key, upload_id = upload["Key"], upload["UploadId"]
                size = 0
                with contextlib.suppress(Exception):
                    parts = self.client.get_paginator("list_parts")
                    for listed in parts.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                        size += sum(int(p["Size"]) for p in listed.get("Parts", []))
                yield StoreFile(
                    f"multipart:{key[len(self.prefix) :]}",
                    None,
                    size,
                    float(upload["Initiated"].timestamp()),
                    upload_id=upload_id,
                )

    def _listed(self, pages: Any) -> Iterator[dict[str, Any]]:
        """A paginator's pages; the endpoint's errors as StoreUnreachable (an OSError)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from pages
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnreachable(f"{self.url}: {_reason(exc)}") from exc

    def remove_stale(self, file: StoreFile, cutoff: float) -> int | None:
        """Remove an artifact, unfinished multipart upload or spool listed by this store unless it
        was stored or touched after `cutoff`; the bytes removed, or None (see ArtifactStore)."""
        if file.upload_id is not None:
            key = self._key(file.name.removeprefix("multipart:"))
            if file.mtime > cutoff:
                return None
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=file.upload_id)
            except Exception as exc:
                if _missing(exc):
                    return None
                raise StoreUnreachable(_reason(exc)) from exc
            return file.size_bytes
        if file.sha256 is None:
            return remove_spooled(self.tmp, file, cutoff)
        key = self._key(object_name(file.sha256))
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            if self._stored_time(head) > cutoff:
                return None
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return None
            raise StoreUnreachable(_reason(exc)) from exc
        with contextlib.suppress(OSError):
            self._cache_path(file.sha256).unlink()
        return int(head["ContentLength"])

    # -- the claim and readiness -------------------------------------------------------------
    def owner(self) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(CLAIM_FILE))["Body"]
            return str(body.read().decode("utf-8")).strip()
        except Exception as exc:
            if _missing(exc):
                return None
            raise StoreUnreachable(_reason(exc)) from exc

    def claim(self, registry_id: str) -> bool:
        """As ArtifactStore.claim: written only if no claim exists (a conditional put,
        If-None-Match: *), so two registries claiming an empty store at once cannot both win."""
        owner = self.owner()
        if owner is None:
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(CLAIM_FILE),
                    Body=(registry_id + "\n").encode(),
                    IfNoneMatch="*",
                )
            except Exception as exc:
                if _code(exc) not in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                    raise StoreUnreachable(_reason(exc)) from exc
            else:
                # Read back: an endpoint that ignores If-None-Match shows the last writer here.
                owner = self.owner()
                if owner == registry_id:
                    return True
            owner = self.owner()
        if owner != registry_id:
            raise StoreClaimed(self.url, owner or "(an empty registry-id object)", registry_id)
        return False

    def check(self) -> None:
        """Raise OSError unless the bucket answers and the local cache can be written."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnreachable(f"{self.url}: {_reason(exc)}") from exc
        self.init()
        with tempfile.TemporaryFile(dir=self.tmp):
            pass
