"""The post-load check: walk a loaded model and refuse anything callable or type-like it should not hold.

The scan judges what a pickle calls and names while it loads; the model's code later calls what the
model STORES (a FunctionTransformer's func, a scorer's metric, an estimator's attribute). This
walker visits the loaded object graph (instance __dict__s and __slots__, containers, object
arrays, Cython objects' pickled state, pandas objects' values) and judges each value with the same
policy: functions must be on the safe list, classes must be value types, modules are refused,
instances must be of classes the policy trusts (an operator.attrgetter or functools.partial
instance is not). It is bounded and cycle-safe, and fails closed when the graph is too large to walk.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Iterator
from typing import Any

from model_store.errors import UnsafeArtifact
from model_store.safety.policy import _extra_home, _parse_prefixes, canonical_home, is_function_like, loaded_refusal

_MAX_VISITS = 20_000_000
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray, type(Ellipsis), type(NotImplemented))
_CONTAINERS = (list, tuple, set, frozenset)


def check_loaded(obj: Any, extra_trusted_modules: Iterable[str] = ()) -> None:
    """Raise UnsafeArtifact naming every value in `obj`'s object graph the policy does not allow."""
    extra = _parse_prefixes(extra_trusted_modules)
    offending: dict[str, str] = {}
    seen: set[int] = set()
    judged_types: dict[type, str | None] = {}
    pending: list[tuple[Any, str]] = [(obj, "model")]
    visits = 0
    np = sys.modules.get("numpy")
    while pending:
        value, path = pending.pop()
        if type(value) in _SCALARS:
            continue
        key = id(value)
        if key in seen:
            continue
        seen.add(key)
        visits += 1
        if visits > _MAX_VISITS:
            raise UnsafeArtifact(["<object graph too large to check>"])
        cls = type(value)
        # Plain instances of one class are judged once; types, functions and modules each time.
        if cls in judged_types:
            reason = judged_types[cls]
        else:
            reason = loaded_refusal(value, extra)
            if reason is None and _judged_by_class(value):
                judged_types[cls] = None
        if reason is not None:
            offending.setdefault(_describe(value), f"{reason}, at {path}")
            continue
        handles = bool(extra) and _holds_native_handles(value, extra)
        for child, where in _members(value, path, np):
            if type(child) not in _SCALARS and not (handles and _is_native_handle(child)):
                pending.append((child, where))
    if offending:
        details = [f"{name} ({why})" for name, why in sorted(offending.items())]
        raise UnsafeArtifact(sorted(offending), "Artifact refused: the loaded model holds " + "; ".join(details))


def _holds_native_handles(value: Any, extra: frozenset[str]) -> bool:
    """An instance of a class from a MAAS_TRUSTED_MODULES package (xgboost's Booster): its own
    code may hold pointers into its native library (see _is_native_handle)."""
    if isinstance(value, (type, types.ModuleType)) or is_function_like(value):
        return False
    return _extra_home(canonical_home(type(value)), extra)


def _is_native_handle(value: Any) -> bool:
    """An opaque ctypes pointer (exactly c_void_p), as a trusted library's __setstate__ creates for
    the object its native code built from the file (xgboost's Booster.handle). The scan refuses
    every ctypes name, so the file itself cannot have made it: the trusted class's code did."""
    ctypes = sys.modules.get("ctypes")
    return ctypes is not None and type(value) is ctypes.c_void_p


def _judged_by_class(value: Any) -> bool:
    """Instances judged only by their class (not functions, modules or classes themselves)."""
    return not (isinstance(value, (type, types.ModuleType)) or is_function_like(value))


def _describe(value: Any) -> str:
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    module = getattr(value, "__module__", None)
    if isinstance(value, type) or (isinstance(name, str) and callable(value)):
        return f"{module}.{name}" if isinstance(module, str) else str(name)
    if type(value).__name__ == "module":
        return f"<module {getattr(value, '__name__', '?')}>"
    return f"<{type(value).__module__}.{type(value).__qualname__} instance>"


def _members(value: Any, path: str, np: Any) -> Iterator[tuple[Any, str]]:
    """What `value` holds, with a path for the message."""
    if isinstance(value, dict):
        for k, v in list(value.items()):
            yield k, f"{path} key"
            yield v, f"{path}[{k!r}]" if type(k) in (str, int) else f"{path}[...]"
        # dict subclasses (Bunch, OrderedDict, defaultdict) also have attributes
    elif isinstance(value, _CONTAINERS):
        for index, item in enumerate(value):
            yield item, f"{path}[{index}]"
    if np is not None and isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            for index, item in enumerate(value.ravel(order="K").tolist() if value.ndim else [value.item()]):
                yield item, f"{path}.flat[{index}]"
        # masked arrays keep their mask, fill value and base class in __dict__
    elif np is not None and isinstance(value, (np.generic, np.dtype)):
        return
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, (pandas.Series, pandas.DataFrame, pandas.Index)):
        yield value.to_numpy(dtype=object), f"{path}.values"
        yield getattr(value, "index", None), f"{path}.index"
        yield getattr(value, "columns", None), f"{path}.columns"
        return
    if isinstance(value, (type, types.ModuleType)) or is_function_like(value):
        return  # allowed functions and value classes: their code is trusted, not walked
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        for name, item in list(attributes.items()):
            yield item, f"{path}.{name}"
    for slot in _slots(type(value)):
        try:
            yield getattr(value, slot), f"{path}.{slot}"
        except AttributeError:
            continue
    if (
        attributes is None
        and not isinstance(value, (dict, *_CONTAINERS))
        and not (np is not None and isinstance(value, np.ndarray))
    ):
        yield from _compiled_state(value, path)


def _slots(cls: type) -> Iterator[str]:
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for slot in slots:
            if slot not in ("__dict__", "__weakref__"):
                yield slot


def _compiled_state(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    """A C/Cython object's state as its own pickling reports it (a BallTree's dist_metric...)."""
    try:
        reduced = value.__reduce_ex__(4)
    except Exception:  # noqa: BLE001 - not picklable: nothing more to see
        return
    if not isinstance(reduced, tuple):
        return
    for index, part in enumerate(reduced[1:], start=1):
        if index == 1 and isinstance(part, tuple):
            # __pyx_unpickle_<Class>(cls, checksum, state), newObj(cls): the object's own class
            part = tuple(item for item in part if not (isinstance(item, type) and isinstance(value, item)))
        yield part, f"{path}<state {index}>"
