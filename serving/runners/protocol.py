"""The messages between a web worker and a runner: small, versioned, data only.

A message is a JSON header followed by raw numeric buffers. On the wire: the header's length (4
bytes, big-endian), the header (UTF-8 JSON), then each buffer the header's "arrays" list declares
(little-endian dtype and shape), back to back. Never a pickle in either direction: whatever a
runner answers is parsed here with bounds on size, dtypes (no object arrays) and lengths, so a
hostile model can send the web worker nothing but numbers, short strings and small structures.

File descriptors (the artifact to load, a runner's socket) ride on the header's sendmsg as
SCM_RIGHTS ancillary data.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

VERSION = 1
_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 64 << 20
MAX_FDS = 2
# The dtypes a buffer may have: numbers and booleans only, little-endian. Object arrays never cross.
DTYPES = frozenset({"<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1"})
MAX_DIMS = 2
MAX_STRING = 4096  # characters of one string value a runner may answer
MAX_DEPTH = 8  # nesting of JSON structures a runner may answer


class ProtocolError(Exception):
    """A message broke the protocol: too large, malformed, a forbidden dtype or shape."""


class PeerClosed(ProtocolError):
    """The other end closed the connection (a runner that died, a web worker that left)."""


# -- sending ---------------------------------------------------------------------------------------
def send(
    sock: socket.socket, header: dict[str, Any], arrays: Sequence[np.ndarray] = (), fds: Sequence[int] = ()
) -> None:
    """Send one message; `arrays` are described in header["arrays"] and sent after it as raw bytes."""
    buffers = [_wire_array(a) for a in arrays]
    header = dict(header, v=VERSION, arrays=[{"dtype": b.dtype.str, "shape": list(b.shape)} for b in buffers])
    body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {len(body)} bytes is over the limit of {MAX_HEADER_BYTES}")
    head = _LENGTH.pack(len(body)) + body
    # One gathered write for the whole message: the peer wakes once, not once per column.
    parts = [memoryview(head), *(b.data.cast("B") for b in buffers if b.nbytes)]
    if fds:
        sent = socket.send_fds(sock, [head], list(fds))
        parts[0] = parts[0][sent:]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts and sent:
            parts[0] = parts[0][sent:]


def _wire_array(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.str not in DTYPES:
        swapped = array.dtype.newbyteorder("<")
        if swapped.str not in DTYPES:
            raise ProtocolError(f"dtype {array.dtype.str} cannot cross the protocol")
        array = array.astype(swapped)
    if array.ndim > MAX_DIMS:
        raise ProtocolError(f"an array of {array.ndim} dimensions cannot cross the protocol")
    return np.ascontiguousarray(array)


# -- receiving -------------------------------------------------------------------------------------
def recv(
    sock: socket.socket, max_bytes: int, *, with_fds: bool = False, deadline: float | None = None
) -> tuple[dict[str, Any], list[np.ndarray], list[int]]:
    """Receive one message: (header, arrays, fds). Raises PeerClosed on EOF, ProtocolError when the
    message breaks a bound (`max_bytes` caps the header and the buffers together), TimeoutError
    past `deadline` (time.monotonic()), however slowly the bytes trickle in."""
    fds: list[int] = []
    if with_fds:
        data, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, MAX_FDS)
        if not data:
            _close_all(fds)
            raise PeerClosed("the peer closed the connection")
        prefix = data + _read_exact(sock, _LENGTH.size - len(data), deadline)
    else:
        prefix = _read_exact(sock, _LENGTH.size, deadline)
    try:
        (length,) = _LENGTH.unpack(prefix)
        if length > min(MAX_HEADER_BYTES, max_bytes):
            raise ProtocolError(f"message header of {length} bytes is over the limit")
        try:
            header = json.loads(_read_exact(sock, length, deadline), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"the header is not JSON ({type(exc).__name__})") from None
        if not isinstance(header, dict) or header.get("v") != VERSION:
            raise ProtocolError("not a message of this protocol's version")
        specs = header.get("arrays", [])
        if not isinstance(specs, list):
            raise ProtocolError("'arrays' must be a list")
        budget = max_bytes - length
        layout = []
        for spec in specs:
            dtype, shape = _checked_spec(spec)
            nbytes = dtype.itemsize * math.prod(shape)
            budget -= nbytes
            if budget < 0:
                raise ProtocolError(f"message buffers are over the limit of {max_bytes} bytes")
            layout.append((dtype, shape, nbytes))
        # All buffers in one read, then cut: one wake-up however many columns a message has.
        data = _read_exact(sock, sum(n for _, _, n in layout), deadline)
        arrays, offset = [], 0
        for dtype, shape, nbytes in layout:
            arrays.append(np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape))
            offset += nbytes
    except BaseException:
        _close_all(fds)
        raise
    return header, arrays, fds


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON")


def _checked_spec(spec: Any) -> tuple[np.dtype, tuple[int, ...]]:
    if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
        raise ProtocolError("an array of a forbidden dtype")
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)
    ):
        raise ProtocolError("an array of a forbidden shape")
    return np.dtype(spec["dtype"]), tuple(shape)


def _read_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    buffer = bytearray(n)
    view = memoryview(buffer)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the peer did not answer in time")
            sock.settimeout(left)
        count = sock.recv_into(view[got:], n - got)
        if count == 0:
            raise PeerClosed("the peer closed the connection")
        got += count
    return bytes(buffer)


def _close_all(fds: Sequence[int]) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# -- values: a column or a model's answer, as an array reference or a list of JSON scalars ---------
def pack_values(values: Any, arrays: list[np.ndarray]) -> dict[str, Any]:
    """Describe `values` (a 1-D or 2-D array) for a header: numeric ones as a buffer appended to
    `arrays`, others (strings, objects) as a JSON list with None for missing values."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf" and array.ndim <= MAX_DIMS:
        arrays.append(array)
        return {"array": len(arrays) - 1}
    items = array.tolist()
    if set(map(type, items)) <= _PLAIN:  # strings (and None) as they are: no per-value work
        return {"list": items}
    return {"list": [json_scalar(v) for v in items]}


_PLAIN = frozenset({str, bool, type(None)})


def json_scalar(value: Any, depth: int = 0) -> Any:
    if isinstance(value, (list, tuple)) and depth < MAX_DEPTH:
        return [json_scalar(v, depth + 1) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def unpack_values(spec: Any, arrays: Sequence[np.ndarray], rows: int | None = None) -> Any:
    """The values a header describes: an ndarray, or a list of checked JSON scalars.

    `rows`, when given, is the length the values must have. Raises ProtocolError.
    """
    if not isinstance(spec, dict):
        raise ProtocolError("values must be described by an object")
    if "array" in spec:
        index = spec["array"]
        if type(index) is not int or not 0 <= index < len(arrays):
            raise ProtocolError("values refer to a missing array")
        result: Any = arrays[index]
    else:
        result = spec.get("list")
        if not isinstance(result, list):
            raise ProtocolError("values must be an array or a list")
        kinds = set(map(type, result))
        if kinds <= _PLAIN:  # the common answer, strings: their lengths checked in one pass
            if str in kinds and max(len(v) for v in result if type(v) is str) > MAX_STRING:
                raise ProtocolError(f"a string over {MAX_STRING} characters")
        else:
            for value in result:
                check_json_value(value)
    if rows is not None and len(result) != rows:
        raise ProtocolError(f"{len(result)} values where {rows} were expected")
    return result


def check_json_value(value: Any, depth: int = 0) -> None:
    """A value a runner may send inside a header: JSON scalars, short strings, shallow lists."""
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**64:
            raise ProtocolError("an integer out of range")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ProtocolError(f"a string of {len(value)} characters (limit {MAX_STRING})")
        return
    if isinstance(value, list) and depth < MAX_DEPTH:
        for item in value:
            check_json_value(item, depth + 1)
        return
    raise ProtocolError(f"a value of type {type(value).__name__} where JSON scalars were expected")


# -- a batch of rows as columns ---------------------------------------------------------------------
def pack_columns(columns: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, Any]:
    """Describe checked columns for a header: the numeric ones of each dtype stacked into one
    buffer (one column per row of it, so each stays contiguous), the others as JSON lists. A
    message then costs the same few steps however many features a model has."""
    groups: dict[str, list[str]] = {}
    lists: dict[str, Any] = {}
    for name, values in columns.items():
        array = np.asarray(values)
        if array.dtype.kind in "biuf" and array.ndim == 1:
            groups.setdefault(array.dtype.str, []).append(name)
        else:
            lists[name] = pack_values(array, arrays)["list"]
    blocks = []
    for names in groups.values():
        arrays.append(np.vstack([columns[name] for name in names]))
        blocks.append({"names": names, "array": len(arrays) - 1})
    return {"order": list(columns), "blocks": blocks, "lists": lists}


def unpack_columns(spec: Any, arrays: Sequence[np.ndarray], rows: int) -> dict[str, Any]:
    """The columns `pack_columns` described, in their order: arrays, or lists of checked scalars.
    Raises ProtocolError."""
    try:
        found: dict[str, Any] = {}
        for block in spec["blocks"]:
            array = arrays[block["array"]]
            names = block["names"]
            if array.shape != (len(names), rows):
                raise ProtocolError("a block of columns does not match its names and rows")
            for index, name in enumerate(names):
                found[name] = array[index]
        for name, values in spec["lists"].items():
            found[name] = unpack_values({"list": values}, arrays, rows)
        return {name: found[name] for name in spec["order"]}
    except (KeyError, TypeError, IndexError) as exc:
        raise ProtocolError(f"malformed columns ({type(exc).__name__})") from None
