"""Strict JSON text: no NaN/Infinity, bounded depth. A leaf module: the schemas parse JSON form
fields with it, and the request body parser (serving.api.jsonbody) re-exports it."""

from __future__ import annotations

import json
from typing import Any, NoReturn

MAX_DEPTH = 64


class InvalidJSON(ValueError):
    """Text that is not strict JSON (message safe to show)."""


def _reject_constant(token: str) -> NoReturn:
    raise InvalidJSON(f"not valid JSON: {token} is not a JSON value")


def _check_depth(value: Any) -> None:
    # Iterative, so a deep document cannot exhaust the stack here either.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def loads_strict(raw: str | bytes) -> Any:
    """Parse JSON refusing NaN/Infinity and nesting deeper than MAX_DEPTH; raises InvalidJSON."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except InvalidJSON:
        raise
    except RecursionError:
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise InvalidJSON("not valid JSON: it is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError:  # Python's bound on int(): reading a longer number would be quadratic
        raise InvalidJSON("not accepted: a number has more than 4300 digits") from None
    # No deeper than the number of brackets: most bodies (columns of any length) skip the walk.
    brackets = raw.count("[") + raw.count("{") if isinstance(raw, str) else raw.count(b"[") + raw.count(b"{")
    if brackets > MAX_DEPTH:
        _check_depth(value)
    return value
