"""Rows of text under a header (a CSV body), read field by field as each feature's type.

The HTTP layer parses the CSV (serving.api.csvbody); which type a field is read as depends on
the version that answers, so the reading happens here, where the feature schema is known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model_store.features import FeatureType

if TYPE_CHECKING:
    from serving.inference.inputs import CompiledFeature

# Spreadsheets write "+5", ".5", "5." and "1E3"; Python's own float() would also take "nan",
# "inf" and "1_000", which are no numbers in a CSV of applicants.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_BOOLEANS = {"true": True, "false": False}


class Unreadable:
    """A field that is not a value of its feature's type; `problem` says why."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


@dataclass(frozen=True)
class TextTable:
    """A header of column names and rows of text fields (each row as long as the header)."""

    header: list[str]
    rows: list[list[str]]

    def columns(self, features: Mapping[str, CompiledFeature]) -> dict[str, list[Any]]:
        """Columns of JSON-like values: each field read as its feature's type ("" is a missing
        value, None); a column no feature has stays text (the check calls it unknown); a field
        that does not read is an Unreadable."""
        columns: dict[str, list[Any]] = {}
        for i, name in enumerate(self.header):
            feature = features.get(name)
            fields = [row[i] for row in self.rows]
            columns[name] = fields if feature is None else [_read(feature.type, text) for text in fields]
        return columns


def _read(kind: FeatureType, text: str) -> Any:
    if text == "":
        return None
    if kind is FeatureType.STRING:
        return text
    stripped = text.strip()
    if kind is FeatureType.BOOLEAN:
        value = _BOOLEANS.get(stripped.lower())
        return Unreadable(f"Not a boolean (true or false): {_shown(text)}.") if value is None else value
    if kind is FeatureType.INTEGER:
        if _INTEGER.fullmatch(stripped):
            return int(stripped)
        if _NUMBER.fullmatch(stripped):  # "35.0", as a spreadsheet may write the integer 35
            number = float(stripped)
            if math.isfinite(number) and number.is_integer():
                return int(number)
        return Unreadable(f"Not an integer: {_shown(text)}.")
    if _INTEGER.fullmatch(stripped):
        return int(stripped)
    if _NUMBER.fullmatch(stripped):
        return float(stripped)  # 1e999 reads as inf: the check says "Number out of range."
    return Unreadable(f"Not a number: {_shown(text)}.")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")
