"""Static scan of pickle and joblib artifacts: decide, without unpickling, whether a file may be loaded.

Pickles run code when loaded, so every artifact is scanned first: the opcode stream is walked with a
small symbolic evaluator (stack + memo of literal values and of the containers the load would
build) as joblib's NumpyUnpickler would run it. It records every global the stream names and what
the stream does with it (calls it, instantiates it, builds an array of it, stores it), the size of
every call argument and the object graph. Then, before anything is loaded:

1. every name must pass the name policy (policy.py), and every string must not name a protocol
   attribute (dunder components of dotted paths included);
2. the unfolded size of the object graph and the inflated bytes of joblib's arrays must fit in
   `max_model_bytes` (a tiny pickle can reference one object millions of times through the memo);
3. the named modules are imported (the load would import them anyway) and each OBJECT is judged
   by identity and canonical home for the roles the stream gives it (policy.refusal).

Nothing named by the file is called by the scan.

What callers must know:
- `scan_artifact`/`scan_stream` raise `UnsafeArtifact` (with `offending` naming every refused
  global or construct) or `InvalidArtifact` (not a readable pickle/joblib file); they return a
  `ScanReport` otherwise.
- A file whose report says format "joblib" must be loaded with joblib (the scan emulates it: raw
  array blocks after each NumpyArrayWrapper); a "pickle" file may be loaded with joblib or
  `RestrictedUnpickler`.
- What stays possible: chains of trusted code this policy does not know about. Load artifacts
  from untrusted uploaders in a process that holds no secrets, and run `check_loaded` on the
  result.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import lzma
import os
import pickle
import pickletools
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, cast

from model_store.errors import InvalidArtifact, UnsafeArtifact
from model_store.safety.graph import (
    _Blob,
    _LongStr,
    _Node,
    is_branch,
    leaf_bytes,
    unfolded_size,
)
from model_store.safety.policy import (
    _ARGUMENT_CHECKED_GLOBALS,
    _INJECTION_STRINGS,
    ARRAY_BUILT,
    CALLED,
    INSTANTIATED,
    JOBLIB_ARRAY_WRAPPER,
    STORED,
    _compat_name,
    _is_dunder,
    _is_trusted,
    _label,
    _parse_prefixes,
    _resolve,
    array_reconstructor,
    calls_its_arguments,
    instantiates,
    refusal,
)
from model_store.safety.streams import (
    _MAX_KEPT,
    _Borrowed,
    _Frames,
    _Malformed,
    _open_source,
    _Source,
)

_MAX_NUMBER_LINE = 8192  # int() refuses > 4300 digits anyway
_MAX_NAME_LINE = 1024
_MAX_MEMO = 4_000_000
_MAX_STACK = 4_000_000
_MAX_MARKS = 100_000
_MAX_ITEMS = 4096  # literal tuples/dicts kept only up to this size (enough for dtype/array records)
_MAX_DEPTH = 32
# References the scan records without a max_model_bytes: far beyond any model's, bounding the
# scanner's own memory (each costs the file at least a byte).
_MAX_EDGES = 100_000_000
# Without max_model_bytes, the largest integer a call may receive: sizes above it are allocations
# (bytes(N), numpy.void(N)...), not model parameters.
_MAX_SIZE_ARGUMENT = 1 << 31
_SIZE_WALK = 10_000  # tuple members inspected per call for size arguments


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
    references: int = 0  # unfolded references of the object graph (0 without max_model_bytes)
    inflated_bytes: int = 0  # bytes of the unfolded graph's str/bytes/arrays (idem)


# ---------------------------------------------------------------------------------------------
# Symbolic values
# ---------------------------------------------------------------------------------------------


class _Opaque:
    """A scalar value the scan does not track (a huge int, a persistent id...)."""

    __slots__ = ()


OPAQUE = _Opaque()


class _Global:
    """The object a GLOBAL/STACK_GLOBAL resolves to, by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Dict(_Node):
    """A dict built by the pickle; items kept while small and keyed by str."""

    __slots__ = ("dunder_key", "items")

    def __init__(self) -> None:
        super().__init__()
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


@dataclass
class _Calls:
    """What the calls of one global received, summed over every call of it."""

    positions: dict[int, set[str]] = field(default_factory=dict)  # argument position -> globals (3 = 3+)
    computed_first: bool = False  # a first argument was not a global (or there was none)
    odd_shapes: set[int] = field(default_factory=set)  # positions 1/2 that were not the literal (0,)
    int_first: bool = False  # a first argument was an int: bytes(N) allocates N bytes


class _Findings:
    """What all pickles of one file (outer and nested) referenced, and how."""

    def __init__(self, extra: frozenset[str], max_model_bytes: int | None) -> None:
        self.extra = extra
        self.max_model_bytes = max_model_bytes
        self.max_edges = _MAX_EDGES if max_model_bytes is None else max(1, max_model_bytes // 8)
        self.max_int = _MAX_SIZE_ARGUMENT if max_model_bytes is None else max_model_bytes
        self.globals: set[str] = set()
        self.offending: dict[str, str] = {}  # label -> why
        self.protocol = 0
        self.arrays = 0
        self.array_bytes = 0
        self.edges = 0
        self.wrapper_seen = False
        self.names: dict[str, tuple[str, str]] = {}  # trusted label -> (module, name) to import
        self.roles: dict[str, set[str]] = {}  # label -> what the stream does with it
        self.calls: dict[str, _Calls] = {}  # label -> what its calls received

    def refuse(self, label: str, why: str = "") -> None:
        self.offending.setdefault(label, why)

    def role(self, label: str, role: str) -> None:
        self.roles.setdefault(label, set()).add(role)


class _Refused(Exception):
    """The stream uses joblib's array wrapper in a way joblib never writes: refuse outright."""


class _TooBig(Exception):
    """The object graph or the arrays exceed max_model_bytes: refuse before reading further."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label
        self.message = message


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
        # Tuples holding globals (kept alive so their ids stay theirs): storing one stores those
        # globals, once per tuple however often the memo shares it.
        self.global_tuples: dict[int, tuple[Any, ...]] = {}
        self.stored_tuples: set[int] = set()
        self.handlers: dict[bytes, Callable[[pickletools.OpcodeInfo], None]] = {}
        for code, op in _OPS.items():
            handler = getattr(self, "op_" + op.name, None)
            if handler is not None:
                self.handlers[code] = handler

    # -- running --------------------------------------------------------------------------------
    def run(self) -> Any:
        """Walk opcodes until STOP and return the root value; unknown opcodes are malformed, never skipped."""
        while True:
            code = self.frames.read(1)
            if code == b".":  # STOP
                root = self.pop()
                self.store(root)
                return root
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

    # -- the object graph -----------------------------------------------------------------------
    def count_edges(self, n: int) -> None:
        findings = self.findings
        findings.edges += n
        if findings.edges > findings.max_edges:
            raise _TooBig(
                "<object graph too large>",
                f"Artifact refused: its object graph holds more than {findings.max_edges} references.",
            )

    def link(self, parent: Any, value: Any) -> None:
        """`parent` (a container or built object) holds `value` once more."""
        if not isinstance(parent, _Node):
            return
        self.count_edges(1)
        if is_branch(value):
            parent.children.append(value)
        else:
            parent.leaves += 1
            parent.nbytes += leaf_bytes(value)

    def node_of(self, *members: Any) -> _Node:
        node = _Node()
        for member in members:
            self.link(node, member)
        return node

    # -- value checks ---------------------------------------------------------------------------
    def store(self, value: Any, depth: int = 0) -> None:
        """`value` is kept in the loaded object (a container item, a state, an argument stored by
        the callee, the root): globals in it are stored values; joblib's wrapper may not be."""
        if isinstance(value, _Global):
            if value.name in _ARGUMENT_CHECKED_GLOBALS:
                self.findings.refuse(value.name, "only allowed with the arguments the pickler writes")
            elif value.name == JOBLIB_ARRAY_WRAPPER:
                raise _Refused
            else:
                self.findings.role(value.name, STORED)
        elif isinstance(value, _Wrapper):
            raise _Refused
        elif type(value) is tuple:
            if any(map(_is_wrapper_class, value)):
                raise _Refused
            key = id(value)
            if key in self.global_tuples and key not in self.stored_tuples:
                if depth > _MAX_DEPTH:
                    self.findings.refuse("<globals nested implausibly deep>")
                    return
                self.stored_tuples.add(key)
                for item in value:
                    self.store(item, depth + 1)

    def store_all(self, values: Iterable[Any]) -> None:
        for value in values:
            self.store(value)

    def literal_str(self, value: str) -> None:
        # Strings that name instance protocol attributes only serve attribute injection, alone or
        # as a component of a dotted attribute path ("__class__.__init__.__globals__").
        for component in value.split("."):
            if component in _INJECTION_STRINGS or component.startswith("__array"):
                self.findings.refuse(f"<attribute name {value[:60]!r}>", "names a protocol attribute")
                return

    def mutate(self, target: Any) -> None:
        """APPEND/SETITEM/ADDITEMS/BUILD change `target` in place: never a module-level object."""
        if isinstance(target, _Global):
            self.findings.refuse(f"<in-place change of {target.name}>")
        elif isinstance(target, _Wrapper) or (type(target) is tuple and any(map(_is_wrapper_class, target))):
            raise _Refused

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
                self.findings.refuse(label, "outside the allow-list")
        ref = self.globals.get(label)
        if ref is None:
            ref = self.globals[label] = _Global(label)
        return ref

    def record_call(self, label: str, args: Any) -> None:
        """`label` is called with `args`: note the globals at each position, shapes and sizes."""
        findings = self.findings
        findings.role(label, CALLED)
        calls = findings.calls.get(label)
        if calls is None:
            calls = findings.calls[label] = _Calls()
        if type(args) is not tuple:
            calls.computed_first = True
            self.store(args)
            return
        if not args:
            calls.computed_first = True
        elif type(args[0]) is int:
            calls.int_first = True
        for position, value in enumerate(args):
            if isinstance(value, _Global) and value.name not in _ARGUMENT_CHECKED_GLOBALS:
                if value.name == JOBLIB_ARRAY_WRAPPER:
                    raise _Refused
                calls.positions.setdefault(min(position, 3), set()).add(value.name)
            else:
                if position == 0:
                    calls.computed_first = True
                self.store(value)
            if position in (1, 2) and not _is_zero_shape(value):
                calls.odd_shapes.add(position)
        self.check_sizes(label, args)

    def check_sizes(self, label: str, args: Any) -> None:
        """Integers handed to a call are bounded: above max_model_bytes they are allocation sizes
        (bytes(N), numpy.void(N)...), not model parameters."""
        limit = self.findings.max_int
        # Cython's __pyx_unpickle_<Class>(cls, checksum, state): the checksum is a 28-bit hash.
        skip = 1 if ".__pyx_unpickle_" in label else -1
        pending: list[Any] = [value for index, value in enumerate(args) if index != skip]
        seen: set[int] = set()
        budget = _SIZE_WALK
        while pending and budget > 0:
            value = pending.pop()
            budget -= 1
            if type(value) is int and abs(value) > limit:
                self.findings.refuse(
                    f"<size argument {value} of {label}>", f"an allocation size above the {limit}-byte limit"
                )
            elif type(value) is tuple and id(value) not in seen:
                seen.add(id(value))
                pending.extend(value)

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

    def push_str(self, data: bytes | None, size: int, decode: Callable[[bytes], str]) -> None:
        if data is None:
            self.push(_LongStr(size))
            return
        value = decode(data)
        self.literal_str(value)
        self.push(value)

    def push_bytes(self, data: bytes | None, size: int) -> None:
        if data is None:
            self.push(_Blob(size))
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
        self.push_str(data, _MAX_KEPT, lambda b: b.decode("ascii"))

    def op_BINSTRING(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<i")
        self.push_str(self.frames.read_or_skip(n), n, lambda b: b.decode("ascii"))

    def op_SHORT_BINSTRING(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<B")
        self.push_str(self.frames.read_or_skip(n), n, lambda b: b.decode("ascii"))

    def op_UNICODE(self, op: pickletools.OpcodeInfo) -> None:
        line = self.frames.readline(_MAX_KEPT + 1)
        self.push_str(None if line is None else line[:-1], _MAX_KEPT, lambda b: str(b, "raw-unicode-escape"))

    def op_SHORT_BINUNICODE(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<B")
        self.push_str(self.frames.read_or_skip(n), n, _utf8)

    def op_BINUNICODE(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<I")
        self.push_str(self.frames.read_or_skip(n), n, _utf8)

    def op_BINUNICODE8(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<Q")
        self.push_str(self.frames.read_or_skip(n), n, _utf8)

    def op_SHORT_BINBYTES(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<B")
        self.push_bytes(self.frames.read_or_skip(n), n)

    def op_BINBYTES(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<I")
        self.push_bytes(self.frames.read_or_skip(n), n)

    def op_BINBYTES8(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<Q")
        self.push_bytes(self.frames.read_or_skip(n), n)

    def op_BYTEARRAY8(self, op: pickletools.OpcodeInfo) -> None:
        n = self.length("<Q")
        self.frames.read_or_skip(n)
        self.push(_Blob(n))

    def op_NEXT_BUFFER(self, op: pickletools.OpcodeInfo) -> None:
        raise _Malformed("the pickle needs out-of-band buffers, which are not supported")

    def op_READONLY_BUFFER(self, op: pickletools.OpcodeInfo) -> None:
        self.store(self.top())

    # -- opcodes: containers -------------------------------------------------------------------
    def op_EMPTY_TUPLE(self, op: pickletools.OpcodeInfo) -> None:
        self.push(())

    def make_tuple(self, items: list[Any]) -> None:
        # joblib's protocol 0/1 wrapper is built as _reconstructor((NumpyArrayWrapper, object, None)):
        # the wrapper class may sit in a small tuple; store() refuses that tuple anywhere else.
        for item in items:
            if (_is_wrapper_class(item) and len(items) > 3) or isinstance(item, _Wrapper):
                raise _Refused
        self.count_edges(len(items))
        if len(items) > _MAX_ITEMS:
            node = _Node()
            for item in items:
                self.store(item)
                self.link(node, item)
            self.push(node)
            return
        value = tuple(items)
        if any(isinstance(item, _Global) or id(item) in self.global_tuples for item in items):
            self.global_tuples[id(value)] = value
        self.push(value)

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
        self.push(_Node())

    op_EMPTY_SET = op_EMPTY_LIST

    def op_EMPTY_DICT(self, op: pickletools.OpcodeInfo) -> None:
        self.push(_Dict())

    def op_LIST(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        self.store_all(items)
        self.push(self.node_of(*items))

    op_FROZENSET = op_LIST

    def op_DICT(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise _Malformed("a DICT has a key without a value")
        self.store_all(items)
        value = _Dict()
        for i in range(0, len(items), 2):
            value.set(items[i], items[i + 1])
            self.link(value, items[i])
            self.link(value, items[i + 1])
        self.push(value)

    def op_APPEND(self, op: pickletools.OpcodeInfo) -> None:
        item = self.pop()
        self.store(item)
        target = self.top()
        self.mutate(target)
        self.link(target, item)

    def op_APPENDS(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        self.store_all(items)
        target = self.top()
        self.mutate(target)
        for item in items:
            self.link(target, item)

    op_ADDITEMS = op_APPENDS

    def setitems(self, items: list[Any]) -> None:
        self.store_all(items)
        target = self.top()
        self.mutate(target)
        for i in range(0, len(items), 2):
            key = items[i]
            self.link(target, key)
            self.link(target, items[i + 1])
            if isinstance(target, _Dict):
                target.set(key, items[i + 1])
            elif isinstance(key, str) and _is_dunder(key):
                # dict subclasses with attribute access (Bunch, OptimizeResult) turn keys into attributes
                self.findings.refuse(f"<attribute name {key[:60]!r}>", "names a protocol attribute")

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
            self.store_all((module, name))
            self.findings.refuse("<dynamic STACK_GLOBAL>", "a global whose name is computed")
            self.push(OPAQUE)

    def op_EXT1(self, op: pickletools.OpcodeInfo) -> None:
        # The copyreg extension registry maps codes to globals at load time: unknowable statically.
        self.findings.refuse(f"<copyreg extension code {self.arg(op)}>")
        self.push(OPAQUE)

    op_EXT2 = op_EXT4 = op_EXT1

    def op_PERSID(self, op: pickletools.OpcodeInfo) -> None:
        if self.frames.readline(_MAX_NAME_LINE) is None:
            raise _Malformed("a persistent id is implausibly long")
        self.findings.refuse("<persistent id>")
        self.push(OPAQUE)

    def op_BINPERSID(self, op: pickletools.OpcodeInfo) -> None:
        self.store(self.pop())
        self.findings.refuse("<persistent id>")
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
            self.findings.refuse("<call of a computed value>", "calls something the scan cannot name")
            self.store(args)
            return self.node_of(args)
        name = func.name
        if name == "copyreg._reconstructor" and type(args) is tuple and any(map(_is_wrapper_class, args)):
            if (
                len(args) == 3
                and isinstance(args[1], _Global)
                and args[1].name == "builtins.object"
                and args[2] is None
            ):
                self.findings.role(name, CALLED)
                self.findings.role(JOBLIB_ARRAY_WRAPPER, INSTANTIATED)
                return self.new_wrapper()
            raise _Refused
        self.record_call(name, args)
        if name in _DTYPE_GLOBALS and type(args) is tuple:
            return _Dtype(args)
        if name in _ARGUMENT_CHECKED_GLOBALS:
            if not _arguments_ok(name, args):
                self.findings.refuse(name, "only allowed with the arguments the pickler writes")
                return OPAQUE
            if name == "_codecs.encode":
                # protocols 0-2 spell bytes this way, e.g. b"ns" in a datetime64 dtype's state
                if type(args[0]) is str:
                    try:
                        return args[0].encode("latin1")
                    except UnicodeEncodeError:
                        return OPAQUE
                return _Blob(args[0].size)
            return OPAQUE
        if name == "builtins.bytes" and args == ():  # protocols 0-2 spell b"" this way
            return b""
        return self.node_of(args)

    def new_wrapper(self) -> _Wrapper:
        if self.nested:
            raise _Refused
        return _Wrapper()

    def instantiate(self, cls: Any, *args: Any) -> _Node:
        """NEWOBJ/NEWOBJ_EX: cls.__new__(cls, *args) on a class that must be a named global."""
        self.store_all(args)
        if isinstance(cls, _Global):
            if cls.name in _ARGUMENT_CHECKED_GLOBALS:
                self.findings.refuse(cls.name, "only allowed with the arguments the pickler writes")
            self.findings.role(cls.name, INSTANTIATED)
            label = cls.name
        else:
            # type(...) via an alias, a call's result: a class the scan never saw named
            self.findings.refuse("<instantiation of a computed class>", "instantiates a class the scan cannot name")
            self.store(cls)
            label = "<computed class>"
        if args and type(args[0]) is tuple:
            self.check_sizes(label, args[0])
        return self.node_of(*args)

    def op_NEWOBJ(self, op: pickletools.OpcodeInfo) -> None:
        args, cls = self.pop(), self.pop()
        if _is_wrapper_class(cls):
            self.store(args)
            self.findings.role(cls.name, INSTANTIATED)
            self.push(self.new_wrapper())
            return
        self.push(self.instantiate(cls, args))

    def op_NEWOBJ_EX(self, op: pickletools.OpcodeInfo) -> None:
        kwargs, args, cls = self.pop(), self.pop(), self.pop()
        if _is_wrapper_class(cls):
            raise _Refused
        self.push(self.instantiate(cls, args, kwargs))

    def op_INST(self, op: pickletools.OpcodeInfo) -> None:
        module = self.name_line("ascii")
        cls = self.on_global(module, self.name_line("ascii"))
        args = tuple(self.pop_mark())
        if cls.name in _ARGUMENT_CHECKED_GLOBALS or cls.name == JOBLIB_ARRAY_WRAPPER:
            self.store(cls)
        self.record_call(cls.name, args)  # INST calls cls(*args)
        self.push(self.node_of(args))

    def op_OBJ(self, op: pickletools.OpcodeInfo) -> None:
        items = self.pop_mark()
        if not items:
            raise _Malformed("OBJ without a class")
        cls, args = items[0], tuple(items[1:])
        if isinstance(cls, _Global) and cls.name not in _ARGUMENT_CHECKED_GLOBALS and cls.name != JOBLIB_ARRAY_WRAPPER:
            self.record_call(cls.name, args)  # OBJ calls cls(*args)
        else:
            self.findings.refuse("<call of a computed value>", "calls something the scan cannot name")
            self.store_all(items)
        self.push(self.node_of(args))

    def op_BUILD(self, op: pickletools.OpcodeInfo) -> None:
        state = self.pop()
        inst = self.top()
        self.store(state)
        if isinstance(inst, _Wrapper):
            self.build_wrapper(inst, state)
            return
        if isinstance(inst, _Dtype):
            inst.states.append(state)
            return
        self.mutate(inst)
        self.link(inst, state)
        dicts = state if type(state) is tuple and len(state) == 2 else (state,)
        if any(isinstance(d, _Dict) and d.dunder_key for d in dicts):
            self.findings.refuse("<dunder attribute in object state>", "sets a protocol attribute")

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
        count = 1
        for dim in shape:
            count *= dim
        if count >= 1 << 63 or dtype.itemsize <= 0:
            raise _Malformed("a joblib array has an invalid size")
        if dtype.hasobject:
            # Object arrays are written as a nested pickle read by a fresh pickle.Unpickler.
            root = _Scanner(self.source, self.findings, nested=True).run()
            self.stack[-1] = self.node_of(root)  # joblib replaces the wrapper by the array
            return
        inflated = count * dtype.itemsize
        self.add_array_bytes(inflated)
        self.stack[-1] = _Node(inflated)
        if alignment is not None:
            self.source.skip_exact(self.source.read_exact(1)[0])
        self.source.skip_exact(inflated)

    def add_array_bytes(self, n: int) -> None:
        # Checked before the bytes are read: a 4 MB compressed file inflating to 4 GB is refused
        # without inflating it.
        findings = self.findings
        findings.array_bytes += n
        if findings.max_model_bytes is not None and findings.array_bytes > findings.max_model_bytes:
            raise _TooBig(
                "<joblib arrays too large>",
                f"Artifact refused: its arrays inflate to more than {findings.max_model_bytes} bytes.",
            )


def _utf8(data: bytes) -> str:
    return str(data, "utf-8", "surrogatepass")


def _escape_decode(data: bytes) -> bytes:
    return codecs.escape_decode(data)[0]


def _is_wrapper_class(value: Any) -> bool:
    return isinstance(value, _Global) and value.name == JOBLIB_ARRAY_WRAPPER


def _is_zero_shape(value: Any) -> bool:
    return type(value) is tuple and len(value) == 1 and type(value[0]) is int and value[0] == 0


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
        return len(args) == 2 and (type(args[0]) is str or isinstance(args[0], _LongStr)) and args[1] == "latin1"
    return False


# ---------------------------------------------------------------------------------------------
# Judging what the names are
# ---------------------------------------------------------------------------------------------


def _judge(findings: _Findings) -> dict[str, str]:
    """Import the trusted names and judge each object for the roles the stream gave it."""
    objects = {label: _resolve(module, name) for label, (module, name) in sorted(findings.names.items())}
    roles = {label: set(found) for label, found in findings.roles.items()}
    refused: dict[str, str] = {}

    def give(labels: Iterable[str], role: str) -> None:
        for label in labels:
            roles.setdefault(label, set()).add(role)

    for label, calls in findings.calls.items():
        func = objects.get(label)
        if func is None:
            continue  # refused by name already, or an argument-checked global
        by_position = calls.positions
        assigned: set[int] = set()
        arrays = array_reconstructor(func)
        if arrays is not None:
            class_positions, shape_position = arrays
            if shape_position in calls.odd_shapes:
                refused[label] = "builds an array with a shape other than (0,): uninitialised memory"
            for position in class_positions:
                give(by_position.get(position, ()), ARRAY_BUILT)
                assigned.add(position)
        elif instantiates(func):
            give(by_position.get(0, ()), INSTANTIATED)
            assigned.add(0)
            if func is copyreg._reconstructor:  # type: ignore[attr-defined]  # base.__init__(obj, state) runs
                give(by_position.get(1, ()), CALLED)
                assigned.add(1)
        elif calls_its_arguments(func):
            for position, labels in by_position.items():
                give(labels, CALLED)
                assigned.add(position)
        if (arrays is not None or instantiates(func)) and calls.computed_first:
            refused.setdefault(
                "<instantiation of a computed class>", f"{label} instantiates a class the scan cannot name"
            )
        if (func is bytes or func is bytearray) and calls.int_first:
            refused[f"<size argument of {label}>"] = "bytes/bytearray of a size allocate that many zero bytes"
        for position, labels in by_position.items():
            if position not in assigned:
                give(labels, STORED)
    for label, obj in objects.items():
        reason = refusal(obj, findings.extra, sorted(roles.get(label, ())))
        if reason is not None:
            refused[label] = reason
    return refused


def _judge_if_possible(findings: _Findings) -> dict[str, str]:
    """_judge for a stream refused already: name the objects too (an alias of operator.attrgetter
    says more than "a call of a computed value"), unless a name does not exist here."""
    try:
        return _judge(findings)
    except InvalidArtifact:
        return {}


def _check_size(root: Any, findings: _Findings) -> tuple[int, int]:
    limit = findings.max_model_bytes
    assert limit is not None
    max_refs = max(1, limit // 8)
    references, inflated = unfolded_size(root, max(max_refs, limit) + 1)
    if references > max_refs:
        raise _TooBig(
            "<object graph unfolding to too many references>",
            f"Artifact refused: its object graph unfolds to more than {max_refs} references (memo "
            "references repeat one object many times); the limit is max_model_bytes / 8.",
        )
    if inflated > limit:
        raise _TooBig(
            "<object graph unfolding to too many bytes>",
            f"Artifact refused: its object graph unfolds to more than {limit} bytes of strings and arrays.",
        )
    return references, inflated


def _refuse(offending: dict[str, str]) -> UnsafeArtifact:
    details = [f"{label} ({why})" if why else label for label, why in sorted(offending.items())]
    return UnsafeArtifact(
        sorted(offending),
        "Artifact refused: it references globals or objects outside the trusted allow-list: " + ", ".join(details),
    )


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

_READ_ERRORS = (
    _Malformed,
    _Unknown,
    ValueError,
    struct.error,
    EOFError,
    UnicodeError,
    OverflowError,
    IndexError,
    KeyError,
    TypeError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    RecursionError,
    MemoryError,
)


def _scan(
    raw: IO[bytes], size: int | None, extra_trusted_modules: Iterable[str], max_model_bytes: int | None
) -> ScanReport:
    if max_model_bytes is not None and max_model_bytes <= 0:
        raise ValueError("max_model_bytes must be positive")
    findings = _Findings(_parse_prefixes(extra_trusted_modules), max_model_bytes)
    compression: str | None = None
    try:
        source, compression = _open_source(raw, size)
        scanner = _Scanner(source, findings, nested=False)
        root = scanner.run()
        if not (scanner.frames.frame_is_empty() and source.at_end()):
            raise _Malformed("there is data after the end of the pickle")
    except _Refused:
        raise UnsafeArtifact(
            [JOBLIB_ARRAY_WRAPPER, *findings.offending],
            "Artifact refused: it uses joblib's array wrapper in a way joblib never writes "
            "(an attempt to hide data from the safety scan?)",
        ) from None
    except _TooBig as exc:
        raise UnsafeArtifact([exc.label, *findings.offending], exc.message) from None
    except _READ_ERRORS as exc:
        if findings.offending:
            raise _refuse({**_judge_if_possible(findings), **findings.offending}) from None
        raise InvalidArtifact(f"The artifact is not a readable pickle or joblib file: {_reason(exc)}.") from None
    if findings.offending:
        raise _refuse({**_judge_if_possible(findings), **findings.offending})
    references = inflated = 0
    if max_model_bytes is not None:
        try:
            references, inflated = _check_size(root, findings)
        except _TooBig as exc:
            raise UnsafeArtifact([exc.label], exc.message) from None
    refused = _judge(findings)
    if refused:
        raise _refuse(refused)
    return ScanReport(
        format="joblib" if compression or findings.wrapper_seen else "pickle",
        compression=compression,
        globals=frozenset(findings.globals),
        protocol=findings.protocol,
        arrays=findings.arrays,
        references=references,
        inflated_bytes=inflated,
    )


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


def scan_artifact(
    path: str | os.PathLike[str], extra_trusted_modules: Iterable[str] = (), max_model_bytes: int | None = None
) -> ScanReport:
    """Scan the pickle/joblib file at `path` without unpickling it.

    Raises UnsafeArtifact (offending names every refused global or construct) or InvalidArtifact
    (unreadable, truncated, unknown opcode, lz4 missing...). `max_model_bytes` bounds what the
    load would build: the unfolded object graph (references * 8) and the inflated strings and
    arrays; None leaves only the implausibility limits. Memory stays bounded whatever the file
    size. OSError from opening the file propagates unchanged.
    """
    with open(path, "rb", buffering=0) as raw:
        return _scan(raw, os.fstat(raw.fileno()).st_size, extra_trusted_modules, max_model_bytes)


def scan_stream(
    raw: IO[bytes], size: int | None, extra_trusted_modules: Iterable[str] = (), max_model_bytes: int | None = None
) -> ScanReport:
    """scan_artifact for an open, seekable binary file positioned at 0 (e.g. from a descriptor).

    `size` is the file's size when known (skips then seek instead of reading). The file is left
    open; its position afterwards is unspecified (seek to 0 before loading).
    """
    stream = cast(IO[bytes], _Borrowed(raw)) if isinstance(raw, io.RawIOBase) else raw
    return _scan(stream, size, extra_trusted_modules, max_model_bytes)
