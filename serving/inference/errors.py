"""Errors of a prediction's input rows; serving/api decides how each is answered."""

from __future__ import annotations

from typing import Any


class InputError(Exception):
    """Rows a version cannot be asked to predict; `message` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRows(InputError):
    """The data does not fit the shapes or the version's feature schema.

    `errors` is the detail of the `data` value: messages per feature, or per row then feature.
    """

    def __init__(self, message: str, errors: Any) -> None:
        super().__init__(message)
        self.errors = errors


class TooManyRows(InputError):
    """More rows than the configured limit in one request."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"The request has {count} rows, more than the limit of {limit}.")
        self.count = count
        self.limit = limit


class InvalidRequest(InputError):
    """A request's other fields (not its `data`) do not fit the version: what-if's features,
    ranges or target. `errors` is keyed by the request field."""

    def __init__(self, message: str, errors: Any) -> None:
        super().__init__(message)
        self.errors = errors


def json_type(value: Any) -> str:
    """A parsed JSON value's kind, as error messages name it ("a number", "an array", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
