"""A bounded LRU of loaded estimators per worker, keyed by sha256 (versions are immutable)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from cachetools import LRUCache

from model_store.errors import ArtifactUnavailable, InvalidArtifact
from model_store.loader import detect_and_load
from model_store.store import ArtifactStore


class EstimatorCache:
    """Loads an artifact once (sha256 verified, safety-checked) and keeps it in memory."""

    def __init__(self, store: ArtifactStore, maxsize: int, trusted_modules: Iterable[str] = ()) -> None:
        self.store = store
        self.trusted_modules = tuple(trusted_modules)
        self._items: LRUCache[str, Any] = LRUCache(max(1, maxsize))
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.hits = 0
        self.loads = 0

    def get(self, sha256: str, fmt: str) -> Any:
        """The estimator stored under `sha256`; raises ArtifactUnavailable if it cannot be had."""
        estimator = self._cached(sha256)
        if estimator is not None:
            return estimator
        with self._lock:
            loading = self._loading.setdefault(sha256, threading.Lock())
        # One thread loads a given artifact; the others wait for it instead of loading it too.
        try:
            with loading:
                estimator = self._cached(sha256)
                if estimator is None:
                    estimator = self._load(sha256, fmt)
        finally:
            with self._lock:
                self._loading.pop(sha256, None)
        return estimator

    def _cached(self, sha256: str) -> Any:
        with self._lock:
            estimator = self._items.get(sha256)
            if estimator is not None:
                self.hits += 1
            return estimator

    def _load(self, sha256: str, fmt: str) -> Any:
        try:
            with self.store.verified(sha256) as path:
                estimator, _, _ = detect_and_load(path, self.trusted_modules, fmt)
        except InvalidArtifact as exc:
            raise ArtifactUnavailable(f"The artifact {sha256} cannot be loaded: {exc.message}") from None
        self.put(sha256, estimator)
        with self._lock:
            self.loads += 1
        return estimator

    def put(self, sha256: str, estimator: Any) -> None:
        """Keep an estimator already loaded (e.g. right after its upload was checked)."""
        with self._lock:
            self._items[sha256] = estimator

    def __len__(self) -> int:
        return len(self._items)

