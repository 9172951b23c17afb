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
