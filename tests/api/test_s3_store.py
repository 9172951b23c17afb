"""The model store in S3-compatible object storage (MAAS_STORE_URL), on moto's server over real
HTTP: uploads land in the bucket under their sha256 (the ONNX graphs too), a replica that starts
later serves from the bucket with the engine compiled once, damaged or missing objects cost their
version only, the local cache is bounded and verified, and `maas store gc` and the store's claim
work there as they do on a directory."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_store.errors import StoreClaimed, StoreWriteFailed
from model_store.s3 import S3Store
from model_store.store import object_name
from serving.config import Settings
from tests.support import ADMIN, joblib_bytes, upload
from tests.support.live import MAAS, environment
from tests.support.s3 import S3Endpoint, moto_server

ROW = {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}


def on_s3(make_app: Any, s3_settings: Settings, cache: str = "cache", **overrides: Any) -> Any:
    """An app on the test's database and bucket, with a local cache directory of its own name:
    each such app is what one replica's worker is."""
    cache_dir = str(Path(s3_settings.store_cache_dir).parent / cache)
    return make_app(
        store_url=s3_settings.store_url,
        s3_endpoint_url=s3_settings.s3_endpoint_url,
        store_cache_dir=cache_dir,
        **overrides,
    )


def store_of(settings: Settings, **overrides: Any) -> S3Store:
    store = replace(settings, **overrides).open_store()
    assert isinstance(store, S3Store)
    return store


def bucket_keys(s3: S3Endpoint, store: S3Store) -> set[str]:
    found = s3.client().list_objects_v2(Bucket=store.bucket, Prefix=store.prefix).get("Contents", [])
    return {item["Key"][len(store.prefix) :] for item in found}


def object_bytes(s3: S3Endpoint, store: S3Store, sha256: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=store.bucket, Key=store.prefix + object_name(sha256))["Body"].read()
    return body


def cached_files(settings: Settings, cache: str) -> list[Path]:
    return sorted(p for p in (Path(settings.store_cache_dir).parent / cache / "objects").rglob("*") if p.is_file())


def uploaded(client: Any, name: str, model: Any) -> dict[str, Any]:
    response = upload(client, name, model)
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def predict(client: Any, name: str, **body: Any) -> Any:
    return client.post(f"/api/models/{name}/predict", json={"data": ROW, **body})


@pytest.mark.postgresql
def test_an_upload_lands_in_the_bucket_and_a_later_replica_serves_it_compiled(
    make_app: Any, s3_settings: Settings, s3: S3Endpoint, credit_pipeline: Any
) -> None:
    app_a = on_s3(make_app, s3_settings, "cache-a")
    a = app_a.test_client()
    version = uploaded(a, "credit", credit_pipeline)
    assert version["engines"] == ["sklearn", "onnx"], version["engine_detail"]
    store = store_of(s3_settings)
    keys = bucket_keys(s3, store)
    # The pickle and its compiled graph, both under their sha256: nothing else but the claim-less store.
    artifacts = {k for k in keys if k.startswith("objects/")}
    assert object_name(version["sha256"]) in artifacts and len(artifacts) == 2, keys
    for key in artifacts:
        sha256 = key.rsplit("/", 1)[-1]
        assert hashlib.sha256(object_bytes(s3, store, sha256)).hexdigest() == sha256
    assert object_bytes(s3, store, version["sha256"]) == joblib_bytes(credit_pipeline)
    # Nothing was written to the directory store the app would otherwise use.
    assert not Path(app_a.extensions["maas"].settings.store_dir).exists()

    # Another replica, with nothing cached: it fetches both from the bucket and serves the ONNX
    # engine at once, without compiling anything (the graph is the one stored at upload).
    assert cached_files(s3_settings, "cache-b") == []
    b = on_s3(make_app, s3_settings, "cache-b").test_client()
    expected = credit_pipeline.predict(pd.DataFrame([ROW])).tolist()
    for engine in ("onnx", "sklearn"):
        answer = predict(b, "credit", engine=engine)
        assert answer.status_code == 200, answer.json
        assert answer.json["engine"] == engine and answer.json["predictions"] == expected
    assert {p.name for p in cached_files(s3_settings, "cache-b")} == {k.rsplit("/", 1)[-1] for k in artifacts}


def test_damaged_or_missing_objects_cost_their_version_only(
    make_app: Any, s3_settings: Settings, s3: S3Endpoint, credit_pipeline: Any, regressor: Any
) -> None:
    a = on_s3(make_app, s3_settings, "cache-a").test_client()
    credit = uploaded(a, "credit", credit_pipeline)
    other = uploaded(a, "other", regressor)
    store = store_of(s3_settings)
    client = s3.client()
    key = store.prefix + object_name(credit["sha256"])
    client.put_object(Bucket=store.bucket, Key=key, Body=joblib_bytes(regressor))  # other bytes, same key

    b = on_s3(make_app, s3_settings, "cache-b", artifact_retry_seconds=0).test_client()
    damaged = predict(b, "credit")
    assert damaged.status_code == 503 and "damaged" in damaged.json["message"], damaged.json
    assert cached_files(s3_settings, "cache-b") == [], "a damaged object was cached"
    fine = b.post("/api/models/other/predict", json={"data": {"x1": 1.0, "x2": 2.0}})
    assert fine.status_code == 200, fine.json

    client.delete_object(Bucket=store.bucket, Key=store.prefix + object_name(other["sha256"]))
    c = on_s3(make_app, s3_settings, "cache-c").test_client()
    missing = c.post("/api/models/other/predict", json={"data": {"x1": 1.0, "x2": 2.0}})
    assert missing.status_code == 503 and "missing" in missing.json["message"], missing.json

    # Repaired in the bucket: the same replica serves it again once its retry time has passed
    # (0 here: at once), with no restart.
    client.put_object(Bucket=store.bucket, Key=key, Body=joblib_bytes(credit_pipeline))
    assert predict(b, "credit").status_code == 200


def test_a_damaged_cached_copy_is_fetched_again(make_app: Any, s3_settings: Settings, credit_pipeline: Any) -> None:
    a = on_s3(make_app, s3_settings, "cache-a").test_client()
    version = uploaded(a, "credit", credit_pipeline)
    b = on_s3(make_app, s3_settings, "cache-b").test_client()
    assert predict(b, "credit", engine="sklearn").status_code == 200
    [cached] = [p for p in cached_files(s3_settings, "cache-b") if p.name == version["sha256"]]
    cached.write_bytes(b"not the model")
    # A new worker on the same cache (the old one's runner is warm and would not reopen the file).
    again = on_s3(make_app, s3_settings, "cache-b").test_client()
    answer = predict(again, "credit", engine="sklearn")
    assert answer.status_code == 200, answer.json
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == version["sha256"]


def test_the_local_cache_is_bounded(
    make_app: Any, s3_settings: Settings, credit_pipeline: Any, regressor: Any, string_classifier: Any
) -> None:
    a = on_s3(make_app, s3_settings, "cache-a").test_client()
    for name, model in (("credit", credit_pipeline), ("other", regressor), ("strings", string_classifier)):
        uploaded(a, name, model)
    sizes = {p.name: p.stat().st_size for p in cached_files(s3_settings, "cache-a")}
    assert len(sizes) >= 3  # uploads keep their bytes in the uploading replica's cache
    bound = max(sizes.values()) + 1  # room for the largest one file, not two
    small = on_s3(make_app, s3_settings, "cache-small", store_cache_bytes=bound).test_client()
    assert predict(small, "credit", engine="sklearn").status_code == 200
    assert small.post("/api/models/other/predict", json={"data": {"x1": 1.0, "x2": 2.0}}).status_code == 200
    strings = small.post("/api/models/strings/predict", json={"data": {"height": 180.0, "weight": 95.0}})
    assert strings.status_code == 200, strings.json
    kept = cached_files(s3_settings, "cache-small")
    assert len(kept) >= 1 and sum(p.stat().st_size for p in kept) <= bound, kept


def test_put_streams_multipart_parts_and_touches_identical_bytes(s3_settings: Settings, s3: S3Endpoint) -> None:
    store = store_of(s3_settings, s3_part_bytes=5 << 20)
    payload = np.random.default_rng(7).bytes(12 << 20)  # three parts of 5 MiB at most
    first = store.put(io.BytesIO(payload))
    assert first.created and first.sha256 == hashlib.sha256(payload).hexdigest()
    head = s3.client().head_object(Bucket=store.bucket, Key=store.prefix + object_name(first.sha256))
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # S3's mark of a 3-part upload
    again = store.put(io.BytesIO(payload))
    touched = s3.client().head_object(Bucket=store.bucket, Key=store.prefix + object_name(first.sha256))
    assert not again.created
    # Touched in the bucket (what gc and a failed upload's cleanup compare against), not only here.
    assert touched["Metadata"]["maas-stored-ns"] != head["Metadata"]["maas-stored-ns"]
    assert int(touched["Metadata"]["maas-stored-ns"]) / 1e9 == pytest.approx(again.mtime, abs=1e-6)
    assert again.mtime > first.mtime
    # Fetched into an empty cache, and handed over read-only: a runner gets this very descriptor.
    fresh = store_of(s3_settings, store_cache_dir=str(Path(s3_settings.store_cache_dir).parent / "fresh"))
    with fresh.opened(first.sha256) as f:
        assert hashlib.sha256(f.read()).hexdigest() == first.sha256
        with pytest.raises(OSError):
            os.write(f.fileno(), b"x")
    assert list(store.partial_uploads()) == []


def test_an_upload_the_endpoint_refuses_is_a_store_error_leaving_nothing(
    tmp_path: Path, s3: S3Endpoint, s3_settings: Settings
) -> None:
    """An endpoint that refuses the parts (this moto wants parts of 64 MiB; ours are 5 MiB): the
    transfer's own error (S3UploadFailedError) is a StoreWriteFailed (a 503), and no multipart
    upload is left behind."""
    with moto_server(tmp_path / "strict-moto.log", env={"S3_UPLOAD_PART_MIN_SIZE": str(64 << 20)}) as strict:
        store = store_of(s3_settings, store_url=f"s3://{strict.new_bucket()}/models", s3_endpoint_url=strict.url)
        with pytest.raises(StoreWriteFailed, match="cannot take the artifact") as refused:
            store.put(io.BytesIO(np.random.default_rng(8).bytes(12 << 20)))
        assert "EntityTooSmall" in refused.value.message, refused.value.message
        client = strict.client()
        assert client.list_objects_v2(Bucket=store.bucket).get("Contents", []) == []
        assert client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []


def test_an_unreachable_store_is_not_ready_and_refuses_uploads_recording_nothing(
    make_app: Any, s3_settings: Settings, s3: S3Endpoint, credit_pipeline: Any
) -> None:
    client = on_s3(make_app, s3_settings).test_client()
    assert client.get("/health/ready").status_code == 200
    store = store_of(s3_settings)
    s3.client().delete_object(Bucket=store.bucket, Key=store.prefix + "registry-id")
    s3.client().delete_bucket(Bucket=store.bucket)  # the bucket gone under the running server
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json["message"], ready.json
    refused = upload(client, "credit", credit_pipeline)
    assert refused.status_code == 503 and "model store" in refused.json["message"], refused.json
    assert client.get("/api/models").json == []


def _maas(*args: str, settings: Settings, s3: S3Endpoint, database_url: str | None = None) -> Any:
    env = environment(
        MAAS_DATABASE_URL=database_url or settings.database_url,
        MAAS_STORE_URL=str(settings.store_url),
        MAAS_STORE_CACHE_DIR=settings.store_cache_dir,
        **s3.environment(),
    )
    return subprocess.run([*MAAS, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_gc_and_the_claim_on_a_bucket(
    make_app: Any, s3_settings: Settings, s3: S3Endpoint, credit_pipeline: Any, regressor: Any, tmp_path: Path
) -> None:
    upgraded = _maas("db", "upgrade", settings=s3_settings, s3=s3)
    assert upgraded.returncode == 0, upgraded.stderr
    store = store_of(s3_settings)
    assert store.owner() is not None
    a = on_s3(make_app, s3_settings).test_client()
    kept = uploaded(a, "credit", credit_pipeline)
    deleted = uploaded(a, "gone", regressor)
    assert a.delete("/api/admin/models/gone?force=true", headers=ADMIN).status_code == 204
    orphan = store.put(io.BytesIO(b"bytes no version references"))
    client = s3.client()
    unfinished = client.create_multipart_upload(Bucket=store.bucket, Key=store.prefix + object_name("ab" * 32))
    client.upload_part(
        Bucket=store.bucket,
        Key=store.prefix + object_name("ab" * 32),
        UploadId=unfinished["UploadId"],
        PartNumber=1,
        Body=b"half an upload",
    )
    client.put_object(Bucket=store.bucket, Key=store.prefix + "objects/notes.txt", Body=b"not ours")

    dry = _maas("store", "gc", "--grace-period", "0", "--dry-run", settings=s3_settings, s3=s3)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {object_name(orphan.sha256)}" in dry.stdout, dry.stdout
    assert object_name(orphan.sha256) in bucket_keys(s3, store)

    gc = _maas("store", "gc", "--grace-period", "0", settings=s3_settings, s3=s3)
    assert gc.returncode == 0, gc.stderr
    keys = bucket_keys(s3, store)
    assert object_name(kept["sha256"]) in keys
    assert object_name(orphan.sha256) not in keys and object_name(deleted["sha256"]) not in keys, gc.stdout
    assert "objects/notes.txt" in keys
    assert client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix).get("Uploads", []) == []
    assert f"removed {object_name(orphan.sha256)}" in gc.stdout and "removed multipart:" in gc.stdout, gc.stdout
    assert predict(on_s3(make_app, s3_settings, "cache-after").test_client(), "credit").status_code == 200

    # Another registry (a database of its own) is refused this bucket: by db upgrade and by gc.
    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    refused = _maas("db", "upgrade", settings=s3_settings, s3=s3, database_url=other_db)
    assert refused.returncode == 1 and "belongs to registry" in refused.stderr, refused.stderr
    refused_gc = _maas("store", "gc", "--grace-period", "0", settings=s3_settings, s3=s3, database_url=other_db)
    assert refused_gc.returncode == 1 and "nothing removed" in refused_gc.stderr, refused_gc.stderr
    assert object_name(kept["sha256"]) in bucket_keys(s3, store)
    with pytest.raises(StoreClaimed):
        store.claim("another-registry")


def test_store_url_must_be_an_s3_url() -> None:
    from serving.config import ConfigError

    for bad in ("http://bucket/x", "s3://", "s3:///prefix", "s3://bucket/x?versionId=1"):
        with pytest.raises(ConfigError, match="MAAS_STORE_URL"):
            Settings.from_env({"MAAS_STORE_URL": bad})
    settings = Settings.from_env({"MAAS_STORE_URL": "s3://bucket/a/b/", "MAAS_S3_ENDPOINT_URL": "http://x:1"})
    store = settings.open_store()
    assert isinstance(store, S3Store) and (store.bucket, store.prefix, store.location) == (
        "bucket",
        "a/b/",
        "s3://bucket/a/b",
    )
