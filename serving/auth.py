"""Bearer tokens: the admin token for /api/admin, the optional API token for reads."""

from __future__ import annotations

import hmac

from flask import request

from serving.errors import RequestError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="maas"'}


def _presented_token() -> bytes | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    # Headers arrive as latin-1 text; compare bytes so any byte sequence is just "wrong".
    return token.encode("latin-1", errors="replace")


def token_matches(expected: str | None) -> bool:
    """Whether the request carries `expected` as its bearer token (constant-time compare)."""
    presented = _presented_token()
    if expected is None or presented is None:
        return False
    return hmac.compare_digest(presented, expected.encode("utf-8"))


def require_token(*accepted: str | None, what: str) -> None:
    """Raise 401 (with a Bearer challenge) unless one of the `accepted` tokens was sent."""
    if not any(token_matches(token) for token in accepted if token):
        raise RequestError(
            401,
            f"{what} needs a valid 'Authorization: Bearer <token>' header.",
            headers=_CHALLENGE,
        )
