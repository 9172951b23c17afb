"""What a worker remembers of resolved selectors, to go on serving while the database is away."""

from __future__ import annotations

import logging
import threading

from cachetools import LRUCache

from registry.errors import DatabaseUnavailable
from registry.service import VersionRef
from serving.telemetry import metrics

log = logging.getLogger(__name__)

RESOLUTIONS_KEPT = 4096


class ResolvedVersions:
    """What each (model, selector) last resolved to in this worker, to serve from while the
    database cannot be reached. Only a fallback: while the database answers, it is always
    asked, so alias moves and deletes take effect at once. In an outage it answers with what
    this worker last saw, which may predate a delete or an alias move made elsewhere."""

    def __init__(self, maxsize: int = RESOLUTIONS_KEPT) -> None:
        self._refs: LRUCache[tuple[str, int | str], VersionRef] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self.in_outage = False

    def remember(self, key: tuple[str, int | str], ref: VersionRef) -> None:
        with self._lock:
            self._refs[key] = ref

    def forget(self, key: tuple[str, int | str]) -> None:
        with self._lock:
            self._refs.pop(key, None)

    def outage(self, key: tuple[str, int | str], error: BaseException) -> VersionRef:
        """Note that the database cannot be reached; the remembered version, or DatabaseUnavailable."""
        if not self.in_outage:
            self.in_outage = True
            metrics.DATABASE_OUTAGES.inc()
            log.warning("registry database unreachable (%s): predictions resolve from memory", type(error).__name__)
        return self.recall(key)

    def database_answers(self) -> None:
        """End the outage: the database handed out a live connection (a probe's or a request's)."""
        if self.in_outage:
            self.in_outage = False
            log.warning("registry database answers again: predictions resolve from it")

    def recall(self, key: tuple[str, int | str]) -> VersionRef:
        with self._lock:
            ref = self._refs.get(key)
        if ref is None:
            name, selector = key
            raise DatabaseUnavailable(
                f"The registry database is unavailable and this server has not served "
                f"'{name}' version {selector!r} since it started; try again shortly."
            )
        return ref
