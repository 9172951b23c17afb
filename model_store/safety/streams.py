"""The byte stream joblib.load would unpickle: compression detected by magic bytes, pickle frames.

The scanner must read exactly what the loader reads, in the same order, without holding big
payloads in memory: joblib writes array bytes outside pickle frames and reads them straight from
the (decompressed) file, so a reader that skipped "the rest of the frame" would skip opcodes.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
from typing import IO, Any

_CHUNK = 1 << 20
_MAX_FRAME = 16 << 20  # pickler frames target 64 KiB; big payloads are written outside frames
_MAX_KEPT = 1024  # longer str/bytes values are skipped: a module name or dtype code is short


class _Malformed(Exception):
    """The bytes are not a pickle this module can follow; becomes InvalidArtifact."""


class _Source:
    """A raw byte stream with exact reads, bounded-memory skips and capped line reads."""

    def __init__(self, stream: IO[bytes], size: int | None, trailer: Callable[[], bool] | None = None) -> None:
        self.stream = stream
        self.size = size  # known for plain files: skips seek instead of reading
        self.trailer = trailer  # reports compressed bytes left after the compressed stream

    def read_exact(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise _Malformed("the file is truncated")
        return data

    def skip_exact(self, n: int) -> None:
        if self.size is not None:
            if self.stream.tell() + n > self.size:
                raise _Malformed("the file is truncated")
            self.stream.seek(n, io.SEEK_CUR)
            return
        while n > 0:
            data = self.stream.read(min(n, _CHUNK))
            if not data:
                raise _Malformed("the file is truncated")
            n -= len(data)

    def readline(self, cap: int) -> bytes | None:
        """The next line with its newline, or None when longer than `cap` (then skipped to its end)."""
        line = self.stream.readline(cap + 1)
        if line.endswith(b"\n"):
            return line
        if len(line) <= cap:
            raise _Malformed("the file is truncated")
        while True:  # stream through an over-long line (e.g. protocol 0 array data) in chunks
            part = self.stream.readline(_CHUNK)
            if part.endswith(b"\n"):
                return None
            if not part:
                raise _Malformed("the file is truncated")

    def at_end(self) -> bool:
        return self.stream.read(1) == b"" and not (self.trailer and self.trailer())


class _ZlibReader(io.RawIOBase):
    """Streams one zlib/gzip stream like joblib's BinaryZlibFile (single stream, bounded output)."""

    def __init__(self, fp: IO[bytes], wbits: int) -> None:
        self._fp = fp
        self._decompressor = zlib.decompressobj(wbits)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._decompressor.eof:
            chunk = self._decompressor.unconsumed_tail or self._fp.read(1 << 16)
            if not chunk:
                raise _Malformed("the compressed stream is truncated")
            data = self._decompressor.decompress(chunk, len(view))
            if data:
                view[: len(data)] = data
                return len(data)
        return 0

    def has_trailer(self) -> bool:
        return bool(self._decompressor.unused_data) or bool(self._fp.read(1))


# joblib's magic prefixes (joblib/compressor.py), in the order joblib tests them.
_COMPRESSION_MAGIC: tuple[tuple[str, bytes], ...] = (
    ("zlib", b"\x78"),
    ("gzip", b"\x1f\x8b"),
    ("bz2", b"BZ"),
    ("lzma", b"\x5d\x00"),
    ("xz", b"\xfd\x37\x7a\x58\x5a"),
    ("lz4", b"\x04\x22\x4d\x18"),
)
_JOBLIB_LEGACY_MAGIC = b"ZF"  # joblib < 0.10 "compat" files


def _open_source(raw: IO[bytes], size: int | None) -> tuple[_Source, str | None]:
    """Detect joblib compression by magic bytes and return the stream joblib.load would unpickle."""
    head = raw.read(8)
    raw.seek(0)
    if not head:
        raise _Malformed("the file is empty")
    if head.startswith(_JOBLIB_LEGACY_MAGIC):
        raise _Malformed("files written by joblib older than 0.10 are not supported")
    compression = next((name for name, magic in _COMPRESSION_MAGIC if head.startswith(magic)), None)
    if compression is None:
        return _Source(io.BufferedReader(raw, _CHUNK) if isinstance(raw, io.RawIOBase) else raw, size), None
    trailer: Callable[[], bool] | None = None
    stream: Any
    if compression in ("zlib", "gzip"):
        stream = _ZlibReader(raw, zlib.MAX_WBITS if compression == "zlib" else 31)
        trailer = stream.has_trailer
    elif compression == "bz2":
        stream = bz2.BZ2File(raw, "rb")
    elif compression in ("lzma", "xz"):
        stream = lzma.LZMAFile(raw, "rb")  # noqa: SIM115 - lives as long as the scan
    else:
        try:
            from lz4.frame import LZ4FrameFile
        except ImportError:
            raise _Malformed("the file is lz4-compressed but the lz4 package is not installed") from None
        stream = LZ4FrameFile(raw, "rb")
    return _Source(io.BufferedReader(stream, _CHUNK), None, trailer), compression


class _Frames:
    """pickle._Unframer over a source: frames are buffered, data outside frames is read directly.

    joblib writes array bytes outside frames and reads them straight from the file, so this mirrors
    the pure-Python unpickler byte for byte (a frame left half-read is resumed after the array).
    """

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.frame: bytes | None = None
        self.pos = 0

    def _in_frame(self, n: int) -> bool:
        if self.frame is None:
            return False
        left = len(self.frame) - self.pos
        if left == 0 and n != 0:
            self.frame = None
            return False
        if left < n:
            raise _Malformed("the pickle ends inside a frame")
        return True

    def read(self, n: int) -> bytes:
        if self._in_frame(n):
            assert self.frame is not None
            data = self.frame[self.pos : self.pos + n]
            self.pos += n
            return data
        return self.source.read_exact(n)

    def read_or_skip(self, n: int) -> bytes | None:
        """The next `n` bytes when n <= _MAX_KEPT; otherwise skipped (bounded memory) and None."""
        if n <= _MAX_KEPT:
            return self.read(n)
        if self._in_frame(n):
            self.pos += n
        else:
            self.source.skip_exact(n)
        return None

    def readline(self, cap: int) -> bytes | None:
        if self.frame is not None:
            if self.pos == len(self.frame):
                self.frame = None
            else:
                end = self.frame.find(b"\n", self.pos)
                if end < 0:
                    raise _Malformed("the pickle ends inside a frame")
                line = self.frame[self.pos : end + 1]
                self.pos = end + 1
                return line if len(line) <= cap else None
        return self.source.readline(cap)

    def load_frame(self, size: int) -> None:
        if self.frame is not None and self.pos < len(self.frame):
            raise _Malformed("a frame starts before the previous one ends")
        if size > _MAX_FRAME:
            raise _Malformed("a pickle frame is implausibly large")
        self.frame = self.source.read_exact(size)
        self.pos = 0

    def frame_is_empty(self) -> bool:
        return self.frame is None or self.pos == len(self.frame)


class _Borrowed(io.RawIOBase):
    """A caller's raw file seen through a buffer that must not close it (closing a BufferedReader
    closes its raw file, and scan_stream leaves the caller's file open)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._raw.readinto(buffer)  # type: ignore[attr-defined]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
