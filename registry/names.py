"""What a model name, an alias and a version selector may be (the contract's Names section),
and what text the registry can store."""

from __future__ import annotations

import re

MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
LATEST = "latest"
# Versions live in a 32-bit column; anything larger cannot exist, so it is a plain 404
# rather than an overflow in the database driver.
MAX_VERSION = 2**31 - 1


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as text in the registry, or None when it can.

    PostgreSQL's text types hold no NUL character (SQLite's do: refused on both, so both
    databases keep the same data), and a lone surrogate (JSON's "\ud800") is no character at
    all: it has no UTF-8 encoding, so neither database can store it.
    """
    if "\x00" in text:
        return "NUL characters are not allowed."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Not valid Unicode text: lone surrogates are not allowed."
    return None


def is_model_name(name: object) -> bool:
    return isinstance(name, str) and MODEL_NAME_RE.fullmatch(name) is not None


def is_alias_name(name: object) -> bool:
    return isinstance(name, str) and ALIAS_RE.fullmatch(name) is not None


def parse_selector(selector: object) -> int | str | None:
    """Turn a version selector into a version number, an alias name or LATEST.

    Returns None for anything that can never resolve (bool, float, negative, huge, bad alias).
    """
    if selector is None:
        return LATEST
    if isinstance(selector, bool):
        return None
    if isinstance(selector, int):
        return selector if 1 <= selector <= MAX_VERSION else None
    if not isinstance(selector, str):
        return None
    if selector.isascii() and selector.isdigit():
        # Bound the length first: int() of a huge digit string is itself a denial of service.
        if len(selector) > 10:
            return None
        number = int(selector)
        return number if 1 <= number <= MAX_VERSION else None
    if selector == LATEST or is_alias_name(selector):
        return selector
    return None
