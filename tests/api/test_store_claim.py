"""create_app claims the model store for its registry, and refuses a store of another registry
(the tests' way in, as `maas serve`'s workers build their apps)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from model_store.errors import StoreClaimed
from model_store.store import CLAIM_FILE, ArtifactStore
from registry.db import Database
from serving.config import Settings
from serving.operations.store_claim import registry_id
from tests.support import CREDIT_ROW, upload

pytestmark = pytest.mark.postgresql


def test_create_app_claims_its_store_and_refuses_another_registrys(
    make_app: Any, settings: Settings, credit_pipeline: Any
) -> None:
    database = Database(settings.database_url)
    try:
        rid = registry_id(database)
    finally:
        database.dispose()
    store = ArtifactStore(settings.store_dir)
    assert store.owner() is None
    client = make_app().test_client()
    assert (Path(settings.store_dir) / CLAIM_FILE).read_text() == f"{rid}\n"
    assert upload(client, "credit", credit_pipeline).status_code == 201
    # Built again on its own store (a restart, another worker): serves as before.
    client = make_app().test_client()
    assert client.post("/api/models/credit/versions/1/predict", json={"data": CREDIT_ROW}).status_code == 200

    other = str(uuid.uuid4())
    (Path(settings.store_dir) / CLAIM_FILE).write_text(other + "\n")
    with pytest.raises(StoreClaimed) as refused:
        make_app()
    assert rid is not None and rid in refused.value.message and other in refused.value.message
