"""The object graph a pickle builds, and its unfolded ("tree") size.

The memo lets a pickle of a kilobyte reference one object millions of times (A = [x] * 10,
B = [A] * 10, ...). The unpickler itself stays small, but model code walks such structures as
trees (np.asarray(classes_), iterating estimators_), and a tree of 10**9 references is gigabytes.
So the scanner records which containers hold which (lists, tuples, dicts, sets, built objects and
their BUILD states) and, before anything is loaded, sizes the graph as the tree it unfolds to:
every reference counts once per path from the root (a back edge of a cycle counts 1), and every
str/bytes/array counts its bytes once per path too.
"""

from __future__ import annotations

from typing import Any


class _Node:
    """A container or an object the unpickler builds; `leaves` counts its scalar members."""

    __slots__ = ("children", "leaves", "nbytes")

    def __init__(self, nbytes: int = 0) -> None:
        self.children: list[Any] = []  # _Node or tuple values (each may be shared via the memo)
        self.leaves = 0
        self.nbytes = nbytes  # bytes of its scalar members, or of the array it stands for


class _Sized:
    """A str or bytes value too long to keep: only its length is known."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _LongStr(_Sized):
    """A str too long to keep; its content is unknown."""

    __slots__ = ()


class _Blob(_Sized):
    """A bytes value too long to keep."""

    __slots__ = ()


def is_branch(value: Any) -> bool:
    """True for values whose members the graph follows (containers and built objects)."""
    return isinstance(value, _Node) or (type(value) is tuple and len(value) > 0)


def leaf_bytes(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, _Sized):
        return value.size
    return 0


def _members(value: Any) -> tuple[list[Any], int, int]:
    """(branches, scalar count, scalar bytes) of a branch."""
    if isinstance(value, _Node):
        return value.children, value.leaves, value.nbytes
    branches, leaves, nbytes = [], 0, 0
    for item in value:
        if is_branch(item):
            branches.append(item)
        else:
            leaves += 1
            nbytes += leaf_bytes(item)
    return branches, leaves, nbytes


def unfolded_size(root: Any, cap: int) -> tuple[int, int]:
    """(references, bytes) of the tree `root` unfolds to, each capped at `cap` (memoised DFS)."""
    if not is_branch(root):
        return 1, leaf_bytes(root)
    done: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        value, finished = stack.pop()
        key = id(value)
        if finished:
            branches, refs, nbytes = _members(value)
            refs += 1
            for branch in branches:
                # Not done yet means on the current path: a back edge of a cycle, counted once.
                sub_refs, sub_bytes = done.get(id(branch), (1, 0))
                refs = min(cap, refs + sub_refs)
                nbytes = min(cap, nbytes + sub_bytes)
            done[key] = (refs, nbytes)
            on_path.discard(key)
            continue
        if key in done or key in on_path:
            continue
        on_path.add(key)
        stack.append((value, True))
        for branch in _members(value)[0]:
            if id(branch) not in done and id(branch) not in on_path:
                stack.append((branch, False))
    return done[id(root)]
