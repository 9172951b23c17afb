"""Which registry a model store belongs to: the registry knows its id, the store records it.

A store holds the artifacts of one registry: `maas store gc` removes every artifact that no
version of *its* registry references, so a store shared by two registries would lose the other
one's artifacts. The first `maas serve` or `maas db upgrade` of a registry claims its store;
serving from, or collecting, a store that another registry claimed is refused.
"""

from __future__ import annotations

import logging

from model_store.store import ModelStore
from registry import service
from registry.db import Database

log = logging.getLogger(__name__)


def registry_id(database: Database) -> str | None:
    """The registry's id; None when its database is below the revision that makes one."""
    with database.read() as session:
        return service.registry_id(session)


def claim_store(database: Database, store: ModelStore) -> str | None:
    """Claim `store` for this registry, or check that it already belongs to it; returns the
    registry's id (None, nothing checked, when the database has none yet).

    Raises StoreClaimed when another registry claimed the store.

    A store made before stores were claimed holds artifacts and no claim: the first registry to
    start on it claims it. That is accepted rather than refused because nothing in the store
    tells the artifacts of one registry from another's: refusing a store with artifacts that
    this registry does not reference would also refuse every single-registry store holding the
    files of deleted versions or failed uploads (gc's everyday work), with no way forward but an
    override. A store shared before this change was already exposed (any gc against either
    registry deleted the other's artifacts); from its first claim on, the second registry's
    `maas serve` and `maas store gc` refuse it, which is how such sharing comes to light. The
    claim of a store that already holds artifacts is logged, to say so at the moment it happens.
    """
    rid = registry_id(database)
    if rid is None:
        return None
    holds_artifacts = store.owner() is None and next(store.artifacts(), None) is not None
    if store.claim(rid) and holds_artifacts:
        log.warning(
            "the model store at %s held artifacts and no owner: it now belongs to registry %s. If another "
            "registry shares it, give that one a store of its own (MAAS_STORE_DIR) before its next start.",
            store.location,
            rid,
        )
    return rid
