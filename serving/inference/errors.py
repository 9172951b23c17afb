"""Errors of a prediction's input that carry the HTTP status they answer (serving/api maps them)."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """An error of the HTTP layer with its status (bad input rows, auth, limits)."""

    def __init__(self, code: int, message: str, errors: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
