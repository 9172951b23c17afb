"""The model store's claim: which registry it belongs to, one line in `registry-id` at its root."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from model_store.errors import StoreClaimed
from model_store.store import CLAIM_FILE, ArtifactStore


def test_the_first_claim_is_written_and_the_same_registry_may_claim_again(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    rid = str(uuid.uuid4())
    assert store.owner() is None
    assert store.claim(rid) is True
    assert (store.root / CLAIM_FILE).read_text() == rid + "\n"
    assert store.owner() == rid
    assert store.claim(rid) is False  # already its own: nothing written
    assert list(store.tmp.iterdir()) == [], "the claim's temp file was left behind"


def test_a_store_of_another_registry_is_refused_naming_both(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())
    store.claim(owner)
    with pytest.raises(StoreClaimed) as refused:
        store.claim(other)
    assert (refused.value.owner, refused.value.registry_id) == (owner, other)
    message = refused.value.message
    assert owner in message and other in message and "MAAS_STORE_DIR" in message and "\n" not in message
    assert store.owner() == owner


def test_an_empty_claim_file_is_never_taken_for_this_registry(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    store.init()
    (store.root / CLAIM_FILE).write_text("")
    with pytest.raises(StoreClaimed, match="an empty registry-id file"):
        store.claim(str(uuid.uuid4()))


def _claim_at_once(store: ArtifactStore, ids: list[str]) -> tuple[list[str], list[str]]:
    """Each id claims the store in a thread of its own, all released together: (won, refused)."""
    start = threading.Barrier(len(ids))
    won: list[str] = []
    refused: list[str] = []

    def claim(rid: str) -> None:
        start.wait()
        try:
            store.claim(rid)
            won.append(rid)
        except StoreClaimed:
            refused.append(rid)

    threads = [threading.Thread(target=claim, args=(rid,)) for rid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, refused


def test_two_registries_claiming_an_empty_store_at_once_cannot_both_win(tmp_path: Path) -> None:
    for attempt in range(20):
        store = ArtifactStore(tmp_path / f"store-{attempt}")
        won, refused = _claim_at_once(store, [str(uuid.uuid4()) for _ in range(4)])
        assert len(won) == 1 and len(refused) == 3, (won, refused)
        assert store.owner() == won[0]
