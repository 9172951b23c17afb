"""Loading with the policy enforced on the REAL objects (defense in depth after a scan).

The scan judges names and what the stream does with them; these unpicklers judge, at load time,
each object find_class returns and each call, instantiation and state the load performs, with the
same policy (policy.refusal): a callable must be allowed for the role it is used in, a class to
instantiate must be one find_class returned (not computed), numpy's array reconstructors only get
the (0,) shape, integer arguments are bounded and bytes/bytearray never get a size.

Both are the pure-Python unpickler (its dispatch table is where REDUCE/NEWOBJ/BUILD can be
intercepted): `RestrictedUnpickler` for plain pickles (it refuses joblib's array wrapper), and
`restricted_joblib_load` for joblib files (joblib's NumpyUnpickler with the same checks).
"""

from __future__ import annotations

import copyreg
import pickle
from collections.abc import Callable, Iterable
from typing import IO, Any

from model_store.errors import InvalidArtifact, UnsafeArtifact
from model_store.safety.policy import (
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
    is_function_like,
    loaded_refusal,
    refusal,
)

# Without a max_model_bytes, the largest integer a call may receive (as scanner._MAX_SIZE_ARGUMENT).
_MAX_SIZE_ARGUMENT = 1 << 31
_SIZE_WALK = 10_000


def _singleton_type(value: object) -> type:
    if value is None or value is Ellipsis or value is NotImplemented:
        return type(value)
    raise pickle.UnpicklingError("builtins.type is only allowed for None, Ellipsis and NotImplemented")


def _latin1_encode(text: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed as the pickler uses it (text, 'latin1')")
    return text.encode("latin1", errors)


_SHIMS: dict[str, Callable[..., Any]] = {"builtins.type": _singleton_type, "_codecs.encode": _latin1_encode}


def _plain(value: Any) -> bool:
    return value is None or type(value) in (bool, int, float, complex, str, bytes, tuple, list, dict)


class _Checks:
    """The runtime checks, mixed into a pure-Python unpickler (pickle._Unpickler or joblib's)."""

    _extra: frozenset[str]
    _found: dict[int, tuple[str, Any]]  # id -> (label, object) of what find_class returned
    _max_int: int
    stack: list[Any]

    def _setup(self, extra_trusted_modules: Iterable[str], max_model_bytes: int | None) -> None:
        self._extra = _parse_prefixes(extra_trusted_modules)
        self._found = {}
        self._max_int = _MAX_SIZE_ARGUMENT if max_model_bytes is None else max_model_bytes

    def _wrapper_allowed(self) -> bool:
        return False

    @staticmethod
    def _refuse(label: str, why: str) -> UnsafeArtifact:
        return UnsafeArtifact([label], f"Artifact refused while loading: {label} ({why})")

    def _name(self, obj: Any) -> str:
        entry = self._found.get(id(obj))
        return entry[0] if entry is not None and entry[1] is obj else f"<{type(obj).__name__} object>"

    def _judge(self, obj: Any, *roles: str) -> None:
        reason = refusal(obj, self._extra, roles)
        if reason is not None:
            raise self._refuse(self._name(obj), reason)

    def _global_class(self, cls: Any, role: str) -> None:
        entry = self._found.get(id(cls))
        if entry is None or entry[1] is not cls:
            raise self._refuse("<instantiation of a computed class>", "instantiates a class the pickle did not name")
        self._judge(cls, role)

    def _sizes(self, label: str, args: Any, skip: int = -1) -> None:
        if type(args) is not tuple:
            return
        pending = [value for index, value in enumerate(args) if index != skip]
        budget = _SIZE_WALK
        while pending and budget > 0:
            value = pending.pop()
            budget -= 1
            if type(value) is int and abs(value) > self._max_int:
                raise self._refuse(f"<size argument {value} of {label}>", "an allocation size above the limit")
            if type(value) is tuple:
                pending.extend(value)

    def find_class(self, module: str, name: str) -> Any:
        # Map Python 2 names here and resolve ourselves: what is checked is exactly what is imported.
        module, name = _compat_name(module, name)
        label = _label(module, name)
        if label in _SHIMS:
            return _SHIMS[label]
        if label == JOBLIB_ARRAY_WRAPPER:
            if not self._wrapper_allowed():
                raise UnsafeArtifact([label])
        elif not _is_trusted(module, name, self._extra):
            raise UnsafeArtifact([label])
        obj = _resolve(module, name)
        self._found[id(obj)] = (label, obj)
        self._judge(obj)
        return obj

    def _check_call(self, func: Any, args: Any) -> None:
        if any(func is shim for shim in _SHIMS.values()):
            return
        label = self._name(func)
        self._judge(func, CALLED)
        if type(args) is not tuple:
            raise self._refuse(label, "called with computed arguments")
        self._sizes(label, args, 1 if label.rpartition(".")[2].startswith("__pyx_unpickle_") else -1)
        if (func is bytes or func is bytearray) and args and type(args[0]) is int:
            raise self._refuse(f"<size argument of {label}>", "bytes/bytearray of a size allocate that many zero bytes")
        arrays = array_reconstructor(func)
        if arrays is not None:
            class_positions, shape_position = arrays
            shape = args[shape_position] if len(args) > shape_position else None
            if not (type(shape) is tuple and len(shape) == 1 and type(shape[0]) is int and shape[0] == 0):
                raise self._refuse(label, "builds an array with a shape other than (0,): uninitialised memory")
            for position in class_positions:
                if position < len(args):
                    self._global_class(args[position], ARRAY_BUILT)
            return
        if instantiates(func):
            if not args:
                raise self._refuse("<instantiation of a computed class>", "instantiates nothing it names")
            self._global_class(args[0], INSTANTIATED)
            if func is copyreg._reconstructor and len(args) > 1:  # type: ignore[attr-defined]  # base.__init__(obj, state) runs
                self._judge(args[1], CALLED)
            return
        calling = calls_its_arguments(func)
        for value in args:
            if id(value) in self._found or isinstance(value, type) or is_function_like(value):
                self._judge(value, CALLED if calling else STORED)

    def _check_state(self, state: Any) -> None:
        parts = state if type(state) is tuple and len(state) == 2 else (state,)
        for part in parts:
            if not isinstance(part, dict):
                continue
            for key, value in part.items():
                if isinstance(key, str) and _is_dunder(key):
                    raise self._refuse(f"<attribute name {key[:60]!r}>", "sets a protocol attribute")
                if not _plain(value):
                    reason = loaded_refusal(value, self._extra)
                    if reason is not None:
                        raise self._refuse(self._name(value), reason)

    # -- opcode handlers: the checks, then pickle._Unpickler's own handler -----------------------
    def load_reduce(self) -> None:
        self._check_call(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_reduce(self)  # type: ignore[attr-defined]

    def load_newobj(self) -> None:
        cls, args = self.stack[-2], self.stack[-1]
        self._global_class(cls, INSTANTIATED)
        self._sizes(self._name(cls), args)
        pickle._Unpickler.load_newobj(self)  # type: ignore[attr-defined]

    def load_newobj_ex(self) -> None:
        cls, args = self.stack[-3], self.stack[-2]
        self._global_class(cls, INSTANTIATED)
        self._sizes(self._name(cls), args)
        pickle._Unpickler.load_newobj_ex(self)  # type: ignore[attr-defined]

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ: klass(*args)
        self._check_call(klass, tuple(args))
        pickle._Unpickler._instantiate(self, klass, args)  # type: ignore[attr-defined]


def _dispatch_with_checks(base: Any, load_build: Callable[[Any], None]) -> dict[int, Callable[[Any], None]]:
    table = dict(base.dispatch)
    table[pickle.REDUCE[0]] = _Checks.load_reduce
    table[pickle.NEWOBJ[0]] = _Checks.load_newobj
    table[pickle.NEWOBJ_EX[0]] = _Checks.load_newobj_ex
    table[pickle.BUILD[0]] = load_build
    return table


class RestrictedUnpickler(_Checks, pickle._Unpickler):
    """An unpickler whose find_class only resolves trusted globals and whose calls, instantiations
    and states are judged on the real objects (defense in depth after a scan).

    Refuses joblib's array wrapper: a file with format "joblib" must be loaded with joblib (see
    restricted_joblib_load), which reads the raw array bytes that follow each wrapper.
    """

    def __init__(
        self,
        file: IO[bytes],
        extra_trusted_modules: Iterable[str] = (),
        max_model_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        pickle._Unpickler.__init__(self, file, **kwargs)
        self._setup(extra_trusted_modules, max_model_bytes)

    def load_build(self) -> None:
        self._check_state(self.stack[-1])
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch = _dispatch_with_checks(pickle._Unpickler, load_build)


def restricted_joblib_load(
    fileobj: IO[bytes], extra_trusted_modules: Iterable[str] = (), max_model_bytes: int | None = None
) -> Any:
    """joblib.load of an open binary file (compressed or not) with the runtime checks above.

    Reads joblib's current format only (NumpyArrayWrapper followed by the array's bytes); the file
    is not closed. Scan it first: this is the second layer, not the first.
    """
    from joblib import numpy_pickle
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    class _JoblibUnpickler(_Checks, numpy_pickle.NumpyUnpickler):
        def _wrapper_allowed(self) -> bool:
            return True

        def load_build(self) -> None:
            if not isinstance(self.stack[-2], numpy_pickle.NumpyArrayWrapper):
                self._check_state(self.stack[-1])
            numpy_pickle.NumpyUnpickler.load_build(self)

        dispatch = _dispatch_with_checks(numpy_pickle.NumpyUnpickler, load_build)

    with _validate_fileobject_and_memmap(fileobj, "<upload>", None) as (stream, _):
        if isinstance(stream, str):
            raise InvalidArtifact("Files written by joblib older than 0.10 are not supported.")
        unpickler = _JoblibUnpickler("<upload>", stream, ensure_native_byte_order=True)
        unpickler._setup(extra_trusted_modules, max_model_bytes)
        return unpickler.load()
