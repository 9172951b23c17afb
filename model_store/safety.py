"""Static safety gate for pickle and joblib artifacts: decide, without unpickling, whether a file may be loaded.

Pickles run code when loaded, so every artifact is scanned first: the opcode stream is walked with a
small symbolic evaluator (stack + memo of string/literal values) and every global it would import is
checked against an allow-list. Only when every name has passed are the named modules imported (the
load would import them anyway) to check what the names are: a global the pickle *calls* must be a
class whose constructor is compiled code, or one of the reconstructors the picklers of numpy, scipy
and scikit-learn emit. Trusted packages hold plain functions that import or exec what their arguments
name (scipy's uarray unpickle_function, numpy's add_newdoc...): those may be stored in a model, never
called while it loads. Nothing named by the file is called by the scan.

What callers must know:
- `scan_artifact` raises `UnsafeArtifact` (with `offending` naming every refused global) or
  `InvalidArtifact` (not a readable pickle/joblib file); it returns a `ScanReport` otherwise.
- The scan emulates joblib.load (pure-Python unpickler + joblib's raw array blocks), so a file whose
  report says format "joblib" must be loaded with `joblib.load`; a "pickle" file may be loaded with
  `joblib.load` or `RestrictedUnpickler` (which refuses joblib's array wrapper on purpose).
- The allow-list trusts whole packages (sklearn, numpy, scipy) minus a deny-list of dangerous names,
  classes whose construction or unpickling runs code (_DENIED_BASES) and calls of anything but the
  known reconstructors. That stops "call os.system" payloads and the gadgets found in these packages,
  not every conceivable chain of trusted code; load artifacts from untrusted uploaders in a process
  that holds no secrets.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import codecs
import enum
import functools
import io
import lzma
import os
import pickle
import pickletools
import re
import struct
import sys
import types
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from model_store.errors import InvalidArtifact, UnsafeArtifact

__all__ = [
    "DEFAULT_TRUSTED_MODULES",
    "TRUSTED_GLOBALS",
    "RestrictedUnpickler",
    "ScanReport",
    "is_trusted_global",
    "refused_globals",
    "scan_artifact",
]

# ---------------------------------------------------------------------------------------------
# Allow-list
# ---------------------------------------------------------------------------------------------

# Packages whose globals a scikit-learn model legitimately references. joblib is NOT a prefix here:
# the only joblib name a model file needs is the array wrapper (TRUSTED_GLOBALS); the rest of joblib
# loads files (joblib.load is a pickle.load), spawns processes (Parallel) or writes caches (Memory).
DEFAULT_TRUSTED_MODULES: frozenset[str] = frozenset({"sklearn", "numpy", "scipy"})

JOBLIB_ARRAY_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"

# Exact "module.qualname" names trusted outside the prefixes: constructors of plain data and the
# copyreg helpers the pickle protocol itself emits.
TRUSTED_GLOBALS: frozenset[str] = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "list", "dict", "set", "frozenset", "tuple", "bytearray", "bytes", "int", "float",
                "complex", "bool", "str", "slice", "range", "object", "Ellipsis", "NotImplemented",
            )
        ),
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "copyreg._reconstructor",  # protocol 0/1 objects: base.__new__(cls) + optional base.__init__
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "datetime.date",
        "datetime.time",
        "datetime.datetime",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        # joblib replaces every ndarray by this inert record and writes the raw bytes after it.
        # NOT trusted: joblib.numpy_pickle.NDArrayWrapper / ZNDArrayWrapper (joblib < 0.10): they
        # make joblib open *other* files by a name taken from the pickle, with np.load(allow_pickle).
        JOBLIB_ARRAY_WRAPPER,
    }
)

# Globals trusted only with specific literal arguments (checked by the scan, enforced by shims in
# RestrictedUnpickler). Both are emitted by the standard pickler: type(None) for NoneType, and
# _codecs.encode(text, "latin1") for every bytes object in protocols 0-2 (so every numpy array).
_ARGUMENT_CHECKED_GLOBALS = frozenset({"builtins.type", "_codecs.encode"})

# ---------------------------------------------------------------------------------------------
# Deny-list: applies on top of the prefixes (default and extra); a deny always wins.
# ---------------------------------------------------------------------------------------------

# Dotted prefixes of "module.qualname" (after numpy.core -> numpy._core). Each entry reads or writes
# files, runs processes/code, imports names chosen by the data, or touches memory/process state.
_DENIED_PREFIXES: frozenset[str] = frozenset(
    {
        # Never trusted even if an operator lists them in MAAS_TRUSTED_MODULES.
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "builtins", "importlib",
        "runpy", "pickle", "_pickle", "cPickle", "pickletools", "marshal", "shutil", "socket",
        "ctypes", "_ctypes", "functools", "operator", "_operator", "codecs", "_codecs", "io", "_io",
        "code", "codeop", "pty", "platform", "tempfile", "pathlib", "glob", "inspect", "types",
        "threading", "_thread", "multiprocessing", "concurrent", "asyncio", "signal", "gc",
        "webbrowser", "urllib", "http", "ftplib", "smtplib", "ssl", "select", "selectors",
        "zipimport", "pkgutil", "site", "sysconfig", "shelve", "dbm", "copy", "weakref", "atexit",
        "faulthandler", "resource", "fcntl", "mmap", "tarfile", "zipfile", "logging", "dill",
        "cloudpickle", "joblib", "skops", "pandas.io", "pandas.read_pickle",
        # numpy: file I/O, pickle-enabled loaders, memory views on arbitrary buffers, build/test tools.
        "numpy.load", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
        "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.fromregex", "numpy.memmap",
        "numpy.DataSource", "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.lib.format",
        "numpy.lib._format_impl", "numpy.lib._datasource", "numpy.lib._iotools", "numpy.lib.utils",
        "numpy.lib._utils_impl", "numpy.lib.stride_tricks", "numpy.lib._stride_tricks_impl",
        "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "numpy.testing", "numpy._pytesttester",
        "numpy.compat", "numpy._utils", "numpy.__config__", "numpy._core.memmap",
        "numpy._core._dtype_ctypes", "numpy.rec.fromfile", "numpy._core.records.fromfile",
        "numpy.ma.core.dump", "numpy.ma.core.load", "numpy.random.seed", "numpy.random.set_state",
        "numpy.random.mtrand.seed", "numpy.random.mtrand.set_state", "numpy.lookfor", "numpy.info",
        "numpy.show_config", "numpy.show_runtime", "numpy.test", "numpy._core.overrides",
        # scipy: file formats, downloads, raw C callbacks, source-generating decorators.
        "scipy.io", "scipy.datasets", "scipy.misc", "scipy.weave", "scipy.LowLevelCallable",
        "scipy._lib._ccallback", "scipy._lib._testutils", "scipy._lib.decorator",
        "scipy._lib._pep440", "scipy.sparse.load_npz", "scipy.sparse.save_npz",
        "scipy.sparse._matrix_io",
        # sklearn: downloads/file readers, test helpers, joblib re-exports, process pools, global config.
        "sklearn.datasets", "sklearn.utils._testing", "sklearn.utils.estimator_checks",
        "sklearn.utils._joblib", "sklearn.utils.parallel", "sklearn.utils.discovery",
        "sklearn.utils._show_versions", "sklearn._config", "sklearn.set_config",
        "sklearn.config_context", "sklearn.externals", "sklearn.utils.fixes.threadpool_limits",
        "sklearn.utils._array_api.get_namespace", "sklearn.utils.validation.check_memory",
        # Gadgets found in the trusted packages: each imports, execs, spawns or listens on what its
        # arguments or state name (tests/malicious.py proves each one live).
        "scipy._lib._uarray",  # unpickle_function(module, qualname) imports anything
        "scipy._lib.array_api_compat._internal",  # clone_module(name) imports anything
        "scipy._lib.deprecation", "scipy._lib._tmpdirs", "scipy._lib.pyprima.common.message",
        "scipy._lib._util.MapWrapper",  # MapWrapper(n) starts a process pool
        "scipy.optimize._nonlin._nonlin_wrapper",  # formats its name argument into exec'd source
        "scipy.optimize._shgo.SHGO", "scipy.optimize._differentialevolution.DifferentialEvolutionSolver",
        "scipy.stats._distn_infrastructure",  # rv_generic.__setstate__ execs _parse_arg_template
        "numpy._core.function_base.add_newdoc", "numpy.lib.add_newdoc",  # __import__(place)
        "numpy.ma.mrecords.fromtextfile",
        "sklearn.callback",  # ScoringMonitor.__setstate__ opens a socket listener and a thread
    }
)

# Classes that no model holds and whose construction or unpickling runs code named by the data:
# a class of the trusted packages (or of MAAS_TRUSTED_MODULES) deriving from one is refused.
_DENIED_BASES: frozenset[str] = frozenset(
    {
        "scipy.stats._distn_infrastructure.rv_generic",  # __setstate__ execs a string of its state
        "threading.Thread", "multiprocessing.process.BaseProcess", "subprocess.Popen",
        "socket.socket", "_io._IOBase", "io.IOBase", "os.PathLike", "pathlib.PurePath",
    }
)

# Functions a pickle may call while it loads: the reconstructors the standard, numpy, scipy and
# scikit-learn picklers emit. Compared by identity after import, so every spelling of a name
# (numpy.core vs numpy._core) is the same entry. Anything else called must be a class (see
# _may_be_called); plain functions of the trusted packages may only be stored.
_RECONSTRUCTORS: tuple[str, ...] = (
    "copyreg._reconstructor",
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    "numpy.ma.core._mareconstruct",
    "numpy.ma.mrecords._mrreconstruct",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__randomstate_ctor",
    "sklearn.metrics._dist_metrics.newObj",  # newObj(cls) is cls.__new__(cls)
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
)

# Reconstructors that call what they are given (bit_generator_ctor(name), bit_generator_class()):
# globals among their arguments are called too.
_CALLING_RECONSTRUCTORS = frozenset(
    {
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
    }
)

# Tokens of module components denied below the default packages (test suites, file I/O, ctypes).
_DENIED_MODULE_TOKENS = frozenset(
    {
        "test", "tests", "testing", "testutils", "conftest", "pytesttester", "f2py", "distutils",
        "ctypes", "ctype", "ctypeslib", "npyio", "iotools", "datasource", "datasets", "io",
        "joblib", "parallel", "stride",
    }
)

# Tokens of qualname components (split on "_" and camelCase) denied in every prefix-trusted name:
# the verbs of file/process/code/import access. Cheap insurance against re-exports such as
# sklearn.utils.validation.joblib or a future numpy.foo.load_something.
_DENIED_NAME_TOKENS = frozenset(
    {
        "load", "loads", "loadtxt", "loadmat", "save", "savez", "savetxt", "savemat", "dump",
        "dumps", "open", "popen", "fopen", "system", "spawn", "spawnv", "exec", "execfile",
        "execv", "eval", "compile", "import", "fetch", "download", "fromfile", "tofile",
        "fromregex", "genfromtxt", "memmap", "getattr", "setattr", "delattr", "globals", "locals",
        "builtins", "subprocess", "os", "sys", "ctypes", "ctype", "ctypeslib", "dlopen", "library",
        "marshal", "shell", "socket", "url", "urlopen", "urlretrieve", "request", "requests",
        "tempfile", "mkstemp", "mkdtemp", "remove", "unlink", "rmtree", "rename", "chmod", "chown",
        "makedirs", "mkdir", "write", "read", "parallel", "delayed", "memory", "config", "seterr",
        "seterrcall", "setbufsize", "printoptions", "strided", "namespace", "callable", "exit",
        "abort", "kill", "fork", "joblib", "pickle", "unpickler", "pickler", "breakpoint",
    }
)

# Exact qualname components denied anywhere in a prefix-trusted name.
_DENIED_NAME_COMPONENTS = frozenset(
    {
        "_ufunc_reconstruct",  # numpy.core._ufunc_reconstruct(module, name): __import__ + getattr
        "DataSource", "NpzFile", "LowLevelCallable", "as_strided", "lookfor", "safe_eval", "who",
        "info", "source", "test", "PytestTester", "seed", "set_state", "np", "sp", "pd", "numpy",
        "scipy", "sklearn", "pandas",
    }
)

# String literals that only serve to inject protocol attributes into instances (e.g. a dict state
# giving an object an __array_interface__ pointing at arbitrary memory). No model needs them.
_INJECTION_STRINGS = frozenset(
    {
        "__class__", "__dict__", "__getattr__", "__getattribute__", "__setattr__", "__delattr__",
        "__reduce__", "__reduce_ex__", "__setstate__", "__getstate__", "__init__", "__new__",
        "__call__", "__del__", "__globals__", "__builtins__", "__code__", "__import__",
        "__subclasses__", "__bases__", "__mro__", "__loader__", "__spec__", "__dlpack__",
        "__buffer__", "__fspath__", "__get__", "__set__", "__set_name__", "__init_subclass__",
    }
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_TOKENS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _under(name: str, prefix: str) -> bool:
    """True when `name` is `prefix` or lies below it on a dotted boundary ("foo" -> "foo.x", not "foobar")."""
    return name == prefix or name.startswith(prefix + ".")


def _normalize(name: str) -> str:
    # numpy 2 renamed numpy.core to numpy._core and keeps numpy.core as an alias: deny both spellings.
    if _under(name, "numpy.core"):
        return "numpy._core" + name[len("numpy.core") :]
    return name


def _tokens(component: str) -> list[str]:
    return [t.lower() for t in _TOKENS.findall(component)]


def _is_dunder(component: str) -> bool:
    return len(component) > 4 and component.startswith("__") and component.endswith("__")


def _parse_prefixes(extra_trusted_modules: Iterable[str]) -> frozenset[str]:
    if isinstance(extra_trusted_modules, str):  # a lone "foo" would otherwise iterate as "f", "o", "o"
        extra_trusted_modules = [extra_trusted_modules]
    prefixes = set()
    for prefix in extra_trusted_modules:
        prefix = prefix.strip()
        if not prefix:
            continue
        if not _DOTTED.match(prefix):
            raise ValueError(f"Not a module name: {prefix!r}")
        prefixes.add(prefix)
    return frozenset(prefixes)


def is_trusted_global(module: str, name: str, extra_trusted_modules: Iterable[str] = ()) -> bool:
    """True when the global `module`.`name` may be imported by an unpickler.

    Pass names as the unpickler resolves them (after Python 2 name mapping). `extra_trusted_modules`
    adds module prefixes ("foo" trusts "foo" and "foo.*", never "foobar"); the deny-list still wins.
    Globals trusted only with specific arguments (builtins.type, _codecs.encode) answer False here.
    """
    return _is_trusted(module, name, _parse_prefixes(extra_trusted_modules))


@functools.lru_cache(maxsize=4096)
def _is_trusted(module: str, name: str, extra: frozenset[str]) -> bool:
    if not (_DOTTED.match(module) and _DOTTED.match(name)):
        return False
    full = f"{module}.{name}"
    if full in TRUSTED_GLOBALS:
        return True
    normalized = _normalize(full)
    if not any(_under(normalized, p) or _under(full, p) for p in DEFAULT_TRUSTED_MODULES | extra):
        return False
    if any(_under(normalized, p) for p in _DENIED_PREFIXES):
        return False
    if module.split(".")[0] in DEFAULT_TRUSTED_MODULES:
        for component in _normalize(module).split("."):
            if _DENIED_MODULE_TOKENS.intersection(_tokens(component)):
                return False
    parts = name.split(".")
    for index, component in enumerate(parts):
        if _is_dunder(component) or component in _DENIED_NAME_COMPONENTS:
            return False
        if _DENIED_NAME_TOKENS.intersection(_tokens(component)):
            return False
        # Protocol 4 resolves dotted qualnames attribute by attribute, which can walk from a trusted
        # module into anything it imported (sklearn.os.system). Only walk through class-like names.
        if index < len(parts) - 1 and not component.lstrip("_")[:1].isupper():
            return False
    return True


def _compat_name(module: str, name: str) -> tuple[str, str]:
    """The names Python 3 resolves for a Python 2 name (what pickle's fix_imports does for protocol < 3)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def _label(module: str, name: str) -> str:
    full = f"{module}.{name}"
    if _DOTTED.match(module) and _DOTTED.match(name) and len(full) <= 200:
        return full
    return f"<invalid global name {full[:80]!r}>"


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanReport:
    """What a successful scan found; format "joblib" must be loaded with joblib.load."""

    format: str  # "joblib" or "pickle"
    compression: str | None  # "zlib", "gzip", "bz2", "lzma", "xz", "lz4" or None
    globals: frozenset[str]  # every "module.name" referenced, nested pickles included
    protocol: int = 0  # highest pickle protocol declared by the stream(s)
    arrays: int = 0  # joblib array blocks skipped (raw bytes or nested pickles)


# ---------------------------------------------------------------------------------------------
# Byte sources: the (decompressed) stream joblib.load would read
# ---------------------------------------------------------------------------------------------

_CHUNK = 1 << 20
_MAX_FRAME = 16 << 20  # pickler frames target 64 KiB; big payloads are written outside frames
_MAX_KEPT = 1024  # longer str/bytes values are skipped: a module name or dtype code is short
_MAX_NUMBER_LINE = 8192  # int() refuses > 4300 digits anyway
_MAX_NAME_LINE = 1024
_MAX_MEMO = 4_000_000
_MAX_STACK = 4_000_000
_MAX_MARKS = 100_000
_MAX_ITEMS = 4096  # literal tuples/dicts kept only up to this size (enough for dtype/array records)
_MAX_DEPTH = 32


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


# ---------------------------------------------------------------------------------------------
# Symbolic values
# ---------------------------------------------------------------------------------------------


class _Opaque:
    """A value the scan does not track (result of a call, array, list, set...)."""

    __slots__ = ()


OPAQUE = _Opaque()


class _LongStr:
    """A str too long to keep; its content is unknown."""

    __slots__ = ()


LONG_STR = _LongStr()


class _Global:
    """The object a GLOBAL/STACK_GLOBAL resolves to, by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Dict:
    """A dict built by the pickle; items kept while small and keyed by str."""

    __slots__ = ("dunder_key", "items")

    def __init__(self) -> None:
        self.items: dict[str, Any] | None = {}
        self.dunder_key = False

    def set(self, key: Any, value: Any) -> None:
        if isinstance(key, str) and _is_dunder(key):
            self.dunder_key = True
        if self.items is not None:
            if isinstance(key, str) and len(self.items) < _MAX_ITEMS:
                self.items[key] = value
            else:
                self.items = None


class _Dtype:
    """numpy.dtype(*args) followed by BUILD states: enough to compute the itemsize joblib will use."""

    __slots__ = ("args", "states")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.states: list[Any] = []


class _Wrapper:
    """A joblib NumpyArrayWrapper instance; its BUILD makes joblib read the array that follows."""

    __slots__ = ("built",)

    def __init__(self) -> None:
        self.built = False


class _Unknown(Exception):
    """A symbolic value cannot be turned into a Python literal."""


_DTYPE_CODE = re.compile(r"[<>=|]?[A-Za-z?][0-9]*\Z")
_DTYPE_GLOBALS = frozenset({"numpy.dtype", "numpy._core.multiarray.dtype", "numpy.core.multiarray.dtype"})


def _literal(value: Any, depth: int = 0) -> Any:
    """The Python value a literal symbolic value stands for (dtypes are built, never looked up)."""
    if depth > _MAX_DEPTH:
        raise _Unknown
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if type(value) is tuple:
        return tuple(_literal(v, depth + 1) for v in value)
    if isinstance(value, _Dict) and value.items is not None:
        return {k: _literal(v, depth + 1) for k, v in value.items.items()}
    if isinstance(value, _Dtype):
        return _real_dtype(value, depth + 1)
    raise _Unknown


def _real_dtype(value: _Dtype, depth: int) -> Any:
    import numpy as np

    args = _literal(value.args, depth)
    if not (len(args) == 3 and isinstance(args[0], str) and _DTYPE_CODE.match(args[0])):
        raise _Unknown
    if not isinstance(args[1], (bool, int)):
        raise _Unknown
    states = [_literal(state, depth) for state in value.states]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # copy=True always: __setstate__ must never touch numpy's shared builtin dtypes.
            dtype = np.dtype(args[0], bool(args[1]), True)
            for state in states:
                dtype.__setstate__(state)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - numpy raises many kinds for a bad dtype state
            raise _Unknown from None
    return dtype


# ---------------------------------------------------------------------------------------------
# The scanner
# ---------------------------------------------------------------------------------------------


class _Findings:
    """What all pickles of one file (outer and nested) referenced."""

    def __init__(self, extra: frozenset[str]) -> None:
        self.extra = extra
        self.globals: set[str] = set()
        self.offending: set[str] = set()
        self.protocol = 0
        self.arrays = 0
        self.wrapper_seen = False
        self.names: dict[str, tuple[str, str]] = {}  # trusted label -> (module, name) to import
        self.called: set[str] = set()  # labels the load calls (their constructor or body runs)
        self.passed: set[str] = set()  # labels handed to a call as arguments


class _Refused(Exception):
    """The stream uses joblib's array wrapper in a way joblib never writes: refuse outright."""


_OPS: dict[bytes, pickletools.OpcodeInfo] = {op.code.encode("latin-1"): op for op in pickletools.opcodes}


class _Scanner:
    """Symbolic evaluation of one pickle stream, as joblib's NumpyUnpickler would run it."""

    def __init__(self, source: _Source, findings: _Findings, nested: bool) -> None:
        self.source = source
        self.frames = _Frames(source)
        self.findings = findings
        self.nested = nested  # a nested pickle (object array) is read by a plain pickle.Unpickler
        self.proto = 0
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.depth = 0  # items held by stack + metastack
        self.memo: dict[int, Any] = {}
        self.globals: dict[str, _Global] = {}
        self.handlers: dict[bytes, Callable[[pickletools.OpcodeInfo], None]] = {}
        for code, op in _OPS.items():
            handler = getattr(self, "op_" + op.name, None)
            if handler is not None:
                self.handlers[code] = handler

    # -- running --------------------------------------------------------------------------------
    def run(self) -> None:
        """Walk opcodes until STOP; unknown opcodes are malformed, never skipped."""
        while True:
            code = self.frames.read(1)
            if code == b".":  # STOP
                self.use(self.pop())
                return
            handler = self.handlers.get(code)
            if handler is None:
                raise _Malformed(f"unknown pickle opcode {code!r}")
            handler(_OPS[code])

    # -- stack helpers --------------------------------------------------------------------------
    def push(self, value: Any) -> None:
        self.depth += 1
        if self.depth > _MAX_STACK:
            raise _Malformed("the pickle stack grows implausibly large")
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack:
            raise _Malformed("the pickle pops from an empty stack")
        self.depth -= 1
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise _Malformed("the pickle reads from an empty stack")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise _Malformed("the pickle closes a MARK it never opened")
        items = self.stack
        self.stack = self.metastack.pop()
        self.depth -= len(items)
        return items

    def memo_put(self, index: int) -> None:
        if index < 0:
            raise _Malformed("negative memo index")
        if len(self.memo) >= _MAX_MEMO and index not in self.memo:
            raise _Malformed("the pickle memo grows implausibly large")
        self.memo[index] = self.top()

    def memo_get(self, index: int) -> None:
        if index not in self.memo:
            raise _Malformed("the pickle reads a memo entry it never stored")
        self.push(self.memo[index])

    # -- value checks ---------------------------------------------------------------------------
    def use(self, value: Any) -> None:
        """A value is consumed by an operation: argument-checked globals and joblib wrappers may not be."""
        if isinstance(value, _Global):
            if value.name in _ARGUMENT_CHECKED_GLOBALS:
                self.findings.offending.add(value.name)
            elif value.name == JOBLIB_ARRAY_WRAPPER:
                raise _Refused
        elif isinstance(value, _Wrapper) or (type(value) is tuple and any(map(_is_wrapper_class, value))):
            raise _Refused

    def use_all(self, values: Iterable[Any]) -> None:
        for value in values:
            self.use(value)

    def literal_str(self, value: str) -> None:
        # Strings that name instance protocol attributes only serve attribute injection.
        if value in _INJECTION_STRINGS or value.startswith("__array"):
            self.findings.offending.add(f"<attribute name {value[:60]!r}>")

    def mutate(self, target: Any) -> None:
        """APPEND/SETITEM/ADDITEMS/BUILD change `target` in place: never a module-level object."""
        if isinstance(target, _Global):
            self.findings.offending.add(f"<in-place change of {target.name}>")
        else:
            self.use(target)

    def on_global(self, module: str, name: str) -> _Global:
        if self.proto < 3:  # pickle's fix_imports: the Python 2 names a protocol 0-2 stream may use
            module, name = _compat_name(module, name)
        label = _label(module, name)
        self.findings.globals.add(label)
        if label in (JOBLIB_ARRAY_WRAPPER, "joblib.numpy_pickle.NDArrayWrapper"):
            self.findings.wrapper_seen = True
            if self.nested:
                raise _Refused
        if label not in _ARGUMENT_CHECKED_GLOBALS:
            if _is_trusted(module, name, self.findings.extra):
                self.findings.names[label] = (module, name)
            else:
                self.findings.offending.add(label)
        ref = self.globals.get(label)
        if ref is None:
            ref = self.globals[label] = _Global(label)
        return ref

    # -- argument readers (pickle.py semantics; pickletools for fixed-size binary arguments) -------
    def arg(self, op: pickletools.OpcodeInfo) -> Any:
        assert op.arg is not None
        return op.arg.reader(self.frames)  # type: ignore[arg-type]  # duck-typed read(n)

    def number_line(self) -> bytes:
        line = self.frames.readline(_MAX_NUMBER_LINE)
        if line is None:
            raise _Malformed("a number in the pickle is implausibly long")
        return line

    def name_line(self, encoding: str) -> str:
        line = self.frames.readline(_MAX_NAME_LINE)
        if line is None:
            raise _Malformed("a global name in the pickle is implausibly long")
        return line[:-1].decode(encoding)

    def push_str(self, data: bytes | None, decode: Callable[[bytes], str]) -> None:
        if data is None:
            self.push(LONG_STR)
            return
        value = decode(data)
        self.literal_str(value)
        self.push(value)

    def push_bytes(self, data: bytes | None) -> None:
        if data is None:
            self.push(OPAQUE)
            return
        self.literal_str(data.decode("latin-1"))
        self.push(data)

    def length(self, fmt: str) -> int:
        (n,) = struct.unpack(fmt, self.frames.read(struct.calcsize(fmt)))
        if n < 0 or n > sys.maxsize:
            raise _Malformed("negative or huge length in the pickle")
        return int(n)

    # -- opcodes: protocol, framing, stack -----------------------------------------------------
    def op_PROTO(self, op: pickletools.OpcodeInfo) -> None:
        proto = self.arg(op)
        if not 0 <= proto <= pickle.HIGHEST_PROTOCOL:
            raise _Malformed(f"unsupported pickle protocol {proto}")
        self.proto = proto
        self.findings.protocol = max(self.findings.protocol, proto)

    def op_FRAME(self, op: pickletools.OpcodeInfo) -> None:
        self.frames.load_frame(self.arg(op))

    def op_MARK(self, op: pickletools.OpcodeInfo) -> None:
        if len(self.metastack) >= _MAX_MARKS:
            raise _Malformed("the pickle nests implausibly deep")
        self.metastack.append(self.stack)
        self.stack = []

    def op_POP(self, op: pickletools.OpcodeInfo) -> None:
        if self.stack:
            self.pop()
        else:
            self.pop_mark()

    def op_POP_MARK(self, op: pickletools.OpcodeInfo) -> None:
        self.pop_mark()

    def op_DUP(self, op: pickletools.OpcodeInfo) -> None:
        self.push(self.top())

    # -- opcodes: literals ---------------------------------------------------------------------
    def op_NONE(self, op: pickletools.OpcodeInfo) -> None:
        self.push(None)

    def op_NEWTRUE(self, op: pickletools.OpcodeInfo) -> None:
        self.push(True)

    def op_NEWFALSE(self, op: pickletools.OpcodeInfo) -> None:
        self.push(False)

    def op_INT(self, op: pickletools.OpcodeInfo) -> None:
        line = self.number_line()
        self.push(False if line == b"00\n" else True if line == b"01\n" else int(line, 0))

    def op_LONG(self, op: pickletools.OpcodeInfo) -> None:
        line = self.number_line()[:-1]
        self.push(int(line[:-1] if line.endswith(b"L") else line, 0))

    def op_FLOAT(self, op: pickletools.OpcodeInfo) -> None:
        self.push(float(self.number_line()[:-1]))

    def op_BININT(self, op: pickletools.OpcodeInfo) -> None:
        self.push(self.arg(op))

    op_BININT1 = op_BININT2 = op_LONG1 = op_BINFLOAT = op_BININT

    def op_LONG4(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<i")
        data = self.frames.read_or_skip(n)
        self.push(OPAQUE if data is None else int.from_bytes(data, "little", signed=True))

    def op_STRING(self, op: pickletools.OpcodeInfo) -> None:
        data = self.frames.readline(_MAX_KEPT + 3)
        if data is not None:
            data = data[:-1]
            if not (len(data) >= 2 and data[0] == data[-1] and data[:1] in (b'"', b"'")):
                raise _Malformed("a STRING argument is not quoted")
            data = _escape_decode(data[1:-1])
        self.push_str(data, lambda b: b.decode("ascii"))

    def op_BINSTRING(self, op: pickletools.OpcodeInfo) -> None:
        self.push_str(self.frames.read_or_skip(self.length("<i")), lambda b: b.decode("ascii"))

    def op_SHORT_BINSTRING(self, op: pickletools.OpcodeInfo) -> None:
        self.push_str(self.frames.read_or_skip(self.length("<B")), lambda b: b.decode("ascii"))

    def op_UNICODE(self, op: pickletools.OpcodeInfo) -> None:
        line = self.frames.readline(_MAX_KEPT + 1)
        self.push_str(None if line is None else line[:-1], lambda b: str(b, "raw-unicode-escape"))

    def op_SHORT_BINUNICODE(self, op: pickletools.OpcodeInfo) -> None:
        self.push_str(self.frames.read_or_skip(self.length("<B")), _utf8)

    def op_BINUNICODE(self, op: pickletools.OpcodeInfo) -> None:
        self.push_str(self.frames.read_or_skip(self.length("<I")), _utf8)

    def op_BINUNICODE8(self, op: pickletools.OpcodeInfo) -> None:
        self.push_str(self.frames.read_or_skip(self.length("<Q")), _utf8)

    def op_SHORT_BINBYTES(self, op: pickletools.OpcodeInfo) -> None:
        self.push_bytes(self.frames.read_or_skip(self.length("<B")))

    def op_BINBYTES(self, op: pickletools.OpcodeInfo) -> None:
        self.push_bytes(self.frames.read_or_skip(self.length("<I")))

    def op_BINBYTES8(self, op: pickletools.OpcodeInfo) -> None:
        self.push_bytes(self.frames.read_or_skip(self.length("<Q")))

    def op_BYTEARRAY8(self, op: pickletools.OpcodeInfo) -> None:
        self.frames.read_or_skip(self.length("<Q"))
        self.push(OPAQUE)

    def op_NEXT_BUFFER(self, op: pickletools.OpcodeInfo) -> None:
        raise _Malformed("the pickle needs out-of-band buffers, which are not supported")

    def op_READONLY_BUFFER(self, op: pickletools.OpcodeInfo) -> None:
        self.use(self.top())

    # -- opcodes: containers -------------------------------------------------------------------
    def op_EMPTY_TUPLE(self, op: pickletools.OpcodeInfo) -> None:
        self.push(())

    def make_tuple(self, items: list[Any]) -> None:
        # joblib's protocol 0/1 wrapper is built as _reconstructor((NumpyArrayWrapper, object, None)):
        # the wrapper class may sit in a small tuple; use() refuses that tuple anywhere else.
        for item in items:
            if not (_is_wrapper_class(item) and len(items) <= 3):
                self.use(item)
        self.push(tuple(items) if len(items) <= _MAX_ITEMS else OPAQUE)

    def op_TUPLE(self, op: pickletools.OpcodeInfo) -> None:
        self.make_tuple(self.pop_mark())

    def op_TUPLE1(self, op: pickletools.OpcodeInfo) -> None:
        self.make_tuple([self.pop()])

    def op_TUPLE2(self, op: pickletools.OpcodeInfo) -> None:
        b, a = self.pop(), self.pop()
        self.make_tuple([a, b])

    def op_TUPLE3(self, op: pickletools.OpcodeInfo) -> None:
        c, b, a = self.pop(), self.pop(), self.pop()
        self.make_tuple([a, b, c])

    def op_EMPTY_LIST(self, op: pickletools.OpcodeInfo) -> None:
        self.push(OPAQUE)

    op_EMPTY_SET = op_EMPTY_LIST

    def op_EMPTY_DICT(self, op: pickletools.OpcodeInfo) -> None:
        self.push(_Dict())

    def op_LIST(self, op: pickletools.OpcodeInfo) -> None:
        self.use_all(self.pop_mark())
        self.push(OPAQUE)

    op_FROZENSET = op_LIST

    def op_DICT(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise _Malformed("a DICT has a key without a value")
        self.use_all(items)
        value = _Dict()
        for i in range(0, len(items), 2):
            value.set(items[i], items[i + 1])
        self.push(value)

    def op_APPEND(self, op: pickletools.OpcodeInfo) -> None:
        self.use(self.pop())
        self.mutate(self.top())

    def op_APPENDS(self, op: pickletools.OpcodeInfo) -> None:
        self.use_all(self.pop_mark())
        self.mutate(self.top())

    op_ADDITEMS = op_APPENDS

    def setitems(self, items: list[Any]) -> None:
        self.use_all(items)
        target = self.top()
        self.mutate(target)
        for i in range(0, len(items), 2):
            key = items[i]
            if isinstance(target, _Dict):
                target.set(key, items[i + 1])
            elif isinstance(key, str) and _is_dunder(key):
                # dict subclasses with attribute access (Bunch, OptimizeResult) turn keys into attributes
                self.findings.offending.add(f"<attribute name {key[:60]!r}>")

    def op_SETITEM(self, op: pickletools.OpcodeInfo) -> None:
        value, key = self.pop(), self.pop()
        self.setitems([key, value])

    def op_SETITEMS(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise _Malformed("SETITEMS has a key without a value")
        self.setitems(items)

    # -- opcodes: memo -------------------------------------------------------------------------
    def op_PUT(self, op: pickletools.OpcodeInfo) -> None:
        self.memo_put(int(self.number_line()[:-1]))

    def op_BINPUT(self, op: pickletools.OpcodeInfo) -> None:
        self.memo_put(self.arg(op))

    op_LONG_BINPUT = op_BINPUT

    def op_MEMOIZE(self, op: pickletools.OpcodeInfo) -> None:
        self.memo_put(len(self.memo))

    def op_GET(self, op: pickletools.OpcodeInfo) -> None:
        self.memo_get(int(self.number_line()[:-1]))

    def op_BINGET(self, op: pickletools.OpcodeInfo) -> None:
        self.memo_get(self.arg(op))

    op_LONG_BINGET = op_BINGET

    # -- opcodes: globals and external references ----------------------------------------------
    def op_GLOBAL(self, op: pickletools.OpcodeInfo) -> None:
        module = self.name_line("utf-8")
        self.push(self.on_global(module, self.name_line("utf-8")))

    def op_STACK_GLOBAL(self, op: pickletools.OpcodeInfo) -> None:
        name, module = self.pop(), self.pop()
        if type(module) is str and type(name) is str:
            self.push(self.on_global(module, name))
        else:
            self.use_all((module, name))
            self.findings.offending.add("<dynamic STACK_GLOBAL>")
            self.push(OPAQUE)

    def op_EXT1(self, op: pickletools.OpcodeInfo) -> None:
        # The copyreg extension registry maps codes to globals at load time: unknowable statically.
        self.findings.offending.add(f"<copyreg extension code {self.arg(op)}>")
        self.push(OPAQUE)

    op_EXT2 = op_EXT4 = op_EXT1

    def op_PERSID(self, op: pickletools.OpcodeInfo) -> None:
        if self.frames.readline(_MAX_NAME_LINE) is None:
            raise _Malformed("a persistent id is implausibly long")
        self.findings.offending.add("<persistent id>")
        self.push(OPAQUE)

    def op_BINPERSID(self, op: pickletools.OpcodeInfo) -> None:
        self.use(self.pop())
        self.findings.offending.add("<persistent id>")
        self.push(OPAQUE)

    # -- opcodes: calls and object construction ------------------------------------------------
    def op_REDUCE(self, op: pickletools.OpcodeInfo) -> None:
        args = self.pop()
        func = self.pop()
        self.push(self.reduce(func, args))

    def reduce(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Global):
            # Legitimate pickles only call globals; a computed callable (a bound method, a
            # vectorize object...) would run code the scan never saw named.
            self.findings.offending.add("<call of a computed value>")
            self.use(args)
            return OPAQUE
        name = func.name
        self.findings.called.add(name)
        self.record_arguments(name, args)
        if name in _DTYPE_GLOBALS and type(args) is tuple:
            self.use(args)
            return _Dtype(args)
        if name == "copyreg._reconstructor" and type(args) is tuple and any(map(_is_wrapper_class, args)):
            if len(args) == 3 and isinstance(args[1], _Global) and args[1].name == "builtins.object" and args[2] is None:
                return self.new_wrapper()
            raise _Refused
        if name in _ARGUMENT_CHECKED_GLOBALS and _arguments_ok(name, args):
            self.use(args)
            if name == "_codecs.encode" and type(args[0]) is str:
                # protocols 0-2 spell bytes this way, e.g. b"ns" in a datetime64 dtype's state
                try:
                    return args[0].encode("latin1")
                except UnicodeEncodeError:
                    return OPAQUE
            return OPAQUE
        if name == "builtins.bytes" and args == ():  # protocols 0-2 spell b"" this way
            return b""
        self.use(func)
        self.use(args)
        return OPAQUE

    def record_arguments(self, func: str, args: Any, depth: int = 0) -> None:
        """Globals handed to a call: checked after the scan (functions may not be passed around)."""
        if type(args) is not tuple or depth > _MAX_DEPTH:
            return
        for index, value in enumerate(args):
            if isinstance(value, _Global):
                self.findings.passed.add(value.name)
                # _reconstructor(cls, base, state) runs base.__init__; numpy's random ctors call theirs.
                if func in _CALLING_RECONSTRUCTORS or (func == "copyreg._reconstructor" and index == 1):
                    self.findings.called.add(value.name)
            elif type(value) is tuple:
                self.record_arguments(func, value, depth + 1)

    def new_wrapper(self) -> _Wrapper:
        if self.nested:
            raise _Refused
        return _Wrapper()

    def op_NEWOBJ(self, op: pickletools.OpcodeInfo) -> None:
        args, cls = self.pop(), self.pop()
        self.use(args)
        self.record_arguments("<new>", args)
        if _is_wrapper_class(cls):
            self.push(self.new_wrapper())
            return
        self.use(cls)
        self.push(OPAQUE)

    def op_NEWOBJ_EX(self, op: pickletools.OpcodeInfo) -> None:
        kwargs, args, cls = self.pop(), self.pop(), self.pop()
        self.use_all((cls, args, kwargs))
        self.record_arguments("<new>", args)
        self.push(OPAQUE)

    def op_INST(self, op: pickletools.OpcodeInfo) -> None:
        module = self.name_line("ascii")
        cls = self.on_global(module, self.name_line("ascii"))
        self.use(cls)
        args = self.pop_mark()
        self.use_all(args)
        self.findings.called.add(cls.name)  # INST calls cls(*args)
        self.record_arguments(cls.name, tuple(args))
        self.push(OPAQUE)

    def op_OBJ(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        if not items:
            raise _Malformed("OBJ without a class")
        self.use_all(items)
        cls, args = items[0], tuple(items[1:])
        if isinstance(cls, _Global):  # OBJ calls cls(*args)
            self.findings.called.add(cls.name)
            self.record_arguments(cls.name, args)
        else:
            self.findings.offending.add("<call of a computed value>")
        self.push(OPAQUE)

    def op_BUILD(self, op: pickletools.OpcodeInfo) -> None:
        state = self.pop()
        inst = self.top()
        self.use(state)
        if isinstance(inst, _Wrapper):
            self.build_wrapper(inst, state)
            return
        if isinstance(inst, _Dtype):
            inst.states.append(state)
            return
        self.mutate(inst)
        dicts = state if type(state) is tuple and len(state) == 2 else (state,)
        if any(isinstance(d, _Dict) and d.dunder_key for d in dicts):
            self.findings.offending.add("<dunder attribute in object state>")

    # -- joblib arrays -------------------------------------------------------------------------
    def build_wrapper(self, wrapper: _Wrapper, state: Any) -> None:
        """joblib's NumpyUnpickler.load_build: the array's bytes (or a nested pickle) follow here."""
        if wrapper.built or not isinstance(state, _Dict) or state.items is None or state.dunder_key:
            raise _Refused
        wrapper.built = True
        attrs = state.items
        dtype_value, shape = attrs.get("dtype"), attrs.get("shape")
        alignment = attrs.get("numpy_array_alignment_bytes")
        if not isinstance(dtype_value, _Dtype):
            raise _Malformed("a joblib array has no readable dtype")
        try:
            dtype = _real_dtype(dtype_value, 0)
        except _Unknown:
            raise _Malformed("a joblib array has a dtype this scanner cannot evaluate") from None
        if type(shape) is not tuple or not all(type(d) is int and 0 <= d < 1 << 63 for d in shape):
            raise _Malformed("a joblib array has an invalid shape")
        # Only None-ness matters to joblib, so the value must be a known literal.
        if not (alignment is None or type(alignment) is int):
            raise _Malformed("a joblib array has an invalid alignment")
        self.findings.arrays += 1
        self.stack[-1] = OPAQUE  # joblib replaces the wrapper by the array on the stack
        if dtype.hasobject:
            # Object arrays are written as a nested pickle read by a fresh pickle.Unpickler.
            _Scanner(self.source, self.findings, nested=True).run()
            return
        count = 1
        for dim in shape:
            count *= dim
        if count >= 1 << 63 or dtype.itemsize <= 0:
            raise _Malformed("a joblib array has an invalid size")
        if alignment is not None:
            self.source.skip_exact(self.source.read_exact(1)[0])
        self.source.skip_exact(count * dtype.itemsize)


def _utf8(data: bytes) -> str:
    return str(data, "utf-8", "surrogatepass")


def _escape_decode(data: bytes) -> bytes:
    return codecs.escape_decode(data)[0]  # type: ignore[attr-defined, no-any-return]


def _is_wrapper_class(value: Any) -> bool:
    return isinstance(value, _Global) and value.name == JOBLIB_ARRAY_WRAPPER


def _arguments_ok(name: str, args: Any) -> bool:
    """The only argument shapes the standard pickler gives the argument-checked globals."""
    if type(args) is not tuple:
        return False
    if name == "builtins.type":  # type(None), type(Ellipsis), type(NotImplemented)
        return len(args) == 1 and (
            args[0] is None
            or (isinstance(args[0], _Global) and args[0].name in ("builtins.Ellipsis", "builtins.NotImplemented"))
        )
    if name == "_codecs.encode":  # bytes in protocols 0-2: codecs.encode(text, "latin1")
        return len(args) == 2 and (type(args[0]) is str or args[0] is LONG_STR) and args[1] == "latin1"
    return False


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

_READ_ERRORS = (
    _Malformed, _Unknown, ValueError, struct.error, EOFError, UnicodeError, OverflowError,
    IndexError, KeyError, TypeError, zlib.error, lzma.LZMAError, OSError, RecursionError, MemoryError,
)


def _scan(raw: IO[bytes], size: int | None, extra_trusted_modules: Iterable[str]) -> ScanReport:
    findings = _Findings(_parse_prefixes(extra_trusted_modules))
    compression: str | None = None
    try:
        source, compression = _open_source(raw, size)
        scanner = _Scanner(source, findings, nested=False)
        scanner.run()
        if not (scanner.frames.frame_is_empty() and source.at_end()):
            raise _Malformed("there is data after the end of the pickle")
    except _Refused:
        raise UnsafeArtifact(
            [JOBLIB_ARRAY_WRAPPER, *findings.offending],
            "Artifact refused: it uses joblib's array wrapper in a way joblib never writes "
            "(an attempt to hide data from the safety scan?)",
        ) from None
    except _READ_ERRORS as exc:
        if findings.offending:
            raise UnsafeArtifact(sorted(findings.offending)) from None
        raise InvalidArtifact(f"The artifact is not a readable pickle or joblib file: {_reason(exc)}.") from None
    if findings.offending:
        raise UnsafeArtifact(sorted(findings.offending))
    _check_what_names_are(findings)
    return ScanReport(
        format="joblib" if compression or findings.wrapper_seen else "pickle",
        compression=compression,
        globals=frozenset(findings.globals),
        protocol=findings.protocol,
        arrays=findings.arrays,
    )


def refused_globals(
    names: Iterable[str], extra_trusted_modules: Iterable[str] = (), called: Iterable[str] = ()
) -> list[str]:
    """The "module.name" labels among `names` a loader other than pickle (skops) must refuse.

    Refused: outside the allow-list, a class deriving from a denied base, and, among `called`
    (names the loader will call with arguments from the file), anything _may_be_called refuses.
    The modules of names that pass the allow-list are imported (as loading would); raises
    InvalidArtifact when one of them does not exist here.
    """
    extra = _parse_prefixes(extra_trusted_modules)
    calls = set(called)
    refused = []
    for label in names:
        module, _, name = label.rpartition(".")
        if not module or not _is_trusted(module, name, extra):
            refused.append(label)
            continue
        module, obj = _resolve_label(label)
        denied = isinstance(obj, type) and _denied_base(obj)
        if denied or (label in calls and not _may_be_called(obj, module, label, extra)):
            refused.append(label)
    return refused


def _check_what_names_are(findings: _Findings) -> None:
    """Import the trusted names and refuse denied classes, and calls of anything but classes and reconstructors."""
    offending: set[str] = set()
    for label, (module, name) in sorted(findings.names.items()):
        obj = _resolve(module, name)
        if isinstance(obj, type) and _denied_base(obj):
            offending.add(label)
        elif label in findings.called:
            if not _may_be_called(obj, module, label, findings.extra):
                offending.add(label)
        elif (
            label in findings.passed
            and not isinstance(obj, type)
            and not _is_reconstructor(obj)
            and not _from_extra_module(module, findings.extra)
        ):
            # A function handed to a call is called by it (numpy's random ctors call theirs).
            offending.add(label)
    if offending:
        raise UnsafeArtifact(sorted(offending))


def _resolve(module: str, name: str) -> Any:
    """The object an unpickler resolves for a trusted name; InvalidArtifact when it does not exist here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. numpy.core's DeprecationWarning; the load reports them
            __import__(module)
            obj: Any = sys.modules[module]
            for part in name.split("."):
                obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - importing a module can raise anything
        raise InvalidArtifact(
            f"The artifact needs {module}.{name}, which the libraries installed here do not provide."
        ) from None
    return obj


def _resolve_label(label: str) -> tuple[str, Any]:
    """(module, object) for a dotted label whose module/qualname split is unknown (skops' names)."""
    parts = label.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                __import__(module)
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - importing a module can raise anything
            break
        return module, _resolve(module, ".".join(parts[cut:]))
    raise InvalidArtifact(f"The artifact needs {label}, which the libraries installed here do not provide.")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _denied_base(cls: type) -> bool:
    return any(_qualified(base) in _DENIED_BASES for base in cls.__mro__)


@functools.lru_cache(maxsize=1)
def _reconstructor_ids() -> frozenset[int]:
    ids = set()
    for full in _RECONSTRUCTORS:
        module, _, name = full.rpartition(".")
        try:
            ids.add(id(_resolve(module, name)))
        except InvalidArtifact:  # e.g. another numpy's layout: that spelling cannot appear here
            continue
    return frozenset(ids)


def _is_reconstructor(obj: Any) -> bool:
    if id(obj) in _reconstructor_ids():
        return True
    # Cython's generated __pyx_unpickle_<Class>(type, checksum, state): cls.__new__ plus cdef fields.
    name = getattr(obj, "__name__", "")
    return isinstance(name, str) and name.startswith("__pyx_unpickle_") and not isinstance(obj, types.FunctionType)


def _from_extra_module(module: str, extra: frozenset[str]) -> bool:
    """Trusted through MAAS_TRUSTED_MODULES only: the operator vouches for that code, calls included."""
    normalized = _normalize(module)
    if any(_under(normalized, p) for p in DEFAULT_TRUSTED_MODULES):
        return False
    return any(_under(module, p) for p in extra)


def _may_be_called(obj: Any, module: str, label: str, extra: frozenset[str]) -> bool:
    if label in TRUSTED_GLOBALS or _from_extra_module(module, extra):
        return True
    if not isinstance(obj, type):
        return _is_reconstructor(obj)
    if issubclass(obj, enum.Enum):  # Enum(value) looks a member up
        return True
    return _constructor_is_compiled(obj)


def _constructor_is_compiled(cls: type) -> bool:
    """True when calling `cls` runs no Python code of its package (C or Cython __new__/__init__).

    Calling a class with Python __init__ runs that code with the pickle's arguments (scipy's
    MapWrapper(n) starts n processes); the standard pickler never calls such a class.
    """
    if _python_function(type(cls), "__call__"):
        return False
    return not (_python_function(cls, "__new__") or _python_function(cls, "__init__"))


def _python_function(cls: type, attr: str) -> bool:
    for klass in cls.__mro__:
        if attr in vars(klass):
            value = vars(klass)[attr]
            value = getattr(value, "__func__", value)  # staticmethod / classmethod
            return isinstance(value, types.FunctionType)
    return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Malformed):
        return str(exc)
    if isinstance(exc, (EOFError, struct.error)):
        return "the file is truncated"
    if isinstance(exc, (zlib.error, lzma.LZMAError, OSError)):
        return "the compressed data is corrupt"
    if isinstance(exc, (RecursionError, MemoryError)):
        return "the pickle is too deeply nested or too large"
    return "the pickle data is corrupt"


def scan_artifact(path: str | os.PathLike[str], extra_trusted_modules: Iterable[str] = ()) -> ScanReport:
    """Scan the pickle/joblib file at `path` without unpickling it.

    Raises UnsafeArtifact (offending names every refused global) or InvalidArtifact (unreadable,
    truncated, unknown opcode, lz4 missing...). Memory stays bounded whatever the file size.
    OSError from opening the file propagates unchanged.
    """
    with open(path, "rb", buffering=0) as raw:
        return _scan(raw, os.fstat(raw.fileno()).st_size, extra_trusted_modules)


# ---------------------------------------------------------------------------------------------
# Loading plain pickles
# ---------------------------------------------------------------------------------------------


def _singleton_type(value: object) -> type:
    if value is None or value is Ellipsis or value is NotImplemented:
        return type(value)
    raise pickle.UnpicklingError("builtins.type is only allowed for None, Ellipsis and NotImplemented")


def _latin1_encode(text: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed as the pickler uses it (text, 'latin1')")
    return text.encode("latin1", errors)


_SHIMS: dict[str, Callable[..., Any]] = {"builtins.type": _singleton_type, "_codecs.encode": _latin1_encode}


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler whose find_class only resolves trusted globals (defense in depth after a scan).

    Refuses joblib's array wrapper: a file with format "joblib" must be loaded with joblib.load,
    which reads the raw array bytes that follow each wrapper.
    """

    def __init__(self, file: IO[bytes], extra_trusted_modules: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._extra = _parse_prefixes(extra_trusted_modules)

    def find_class(self, module: str, name: str) -> Any:
        # The C unpickler only maps Python 2 names inside its own find_class; map here, then resolve
        # the mapped name ourselves so what is checked is exactly what is imported.
        module, name = _compat_name(module, name)
        label = _label(module, name)
        if label in _SHIMS:
            return _SHIMS[label]
        if label == JOBLIB_ARRAY_WRAPPER or not _is_trusted(module, name, self._extra):
            raise UnsafeArtifact([label])
        obj = _resolve(module, name)
        if isinstance(obj, type) and _denied_base(obj):
            raise UnsafeArtifact([label])
        return obj
