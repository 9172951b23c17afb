"""Bearer tokens: the admin tokens (each with its label) for /api/admin, the optional API token for reads."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable

from flask import request

from serving.api.errors import RequestError

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


@functools.lru_cache(maxsize=8)
def _configured_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _digests_match(presented: bytes, expected: str) -> bool:
    """Constant time: fixed-length digests of both are compared with hmac.compare_digest, so
    neither the token's bytes nor its length show in how long the comparison takes."""
    return hmac.compare_digest(hashlib.sha256(presented).digest(), _configured_digest(expected))


def require_token(*accepted: str | None, what: str) -> None:
    """Raise 401 (with a Bearer challenge) unless one of the `accepted` tokens was sent.

    Every accepted token is compared (no early exit), so the time taken does not tell which
    one came close.
    """
    presented = _presented_token()
    # Summed, not any(): any() would stop at the first match.
    if presented is None or not sum(_digests_match(presented, t) for t in accepted if t):
        raise RequestError(
            401,
            f"{what} needs a valid 'Authorization: Bearer <token>' header.",
            headers=_CHALLENGE,
        )


def require_labelled_token(credentials: Iterable[tuple[str, str]], *, what: str) -> str:
    """The label of the (label, token) pair whose token was sent; raise 401 (with a Bearer
    challenge) when none was.

    Every token is compared (no early exit), as in require_token; labels are unique and so are
    tokens (serving.config checks both), so at most one matches.
    """
    presented = _presented_token()
    found: str | None = None
    if presented is not None:
        for label, token in credentials:
            if _digests_match(presented, token):
                found = label
    if found is None:
        raise RequestError(
            401,
            f"{what} needs a valid 'Authorization: Bearer <token>' header.",
            headers=_CHALLENGE,
        )
    return found
