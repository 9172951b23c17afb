"""A damaged or missing artifact is remembered for MAAS_ARTIFACT_RETRY seconds: within that time a
worker answers the same 503 without opening and hashing the file again; after it, a repaired file
serves with no restart.

What the worker reads is observed, not assumed: /proc/self/io's `rchar` counts every byte this
process (the Flask test client's app runs in it) reads through read() and its kin.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tests.support import CREDIT_ROW, upload

PADDING = 8 << 20  # bytes appended to damage the artifact: hashing it reads all of them
RETRY_S = 1.0


def bytes_read() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def predict_reading(client: Any, body: dict[str, Any]) -> tuple[Any, int]:
    """The answer to one prediction, and the bytes this process read while it was made."""
    before = bytes_read()
    answer = client.post("/api/predict", json=body)
    return answer, bytes_read() - before


def stored_file(settings: Any, sha256: str) -> Path:
    [path] = [p for p in Path(settings.store_dir).rglob(sha256) if p.is_file()]
    return path


def test_a_damaged_artifact_is_not_hashed_again_within_the_retry_time(
    make_app: Any, settings: Any, credit_pipeline: Any
) -> None:
    client = make_app(artifact_retry_seconds=RETRY_S).test_client()
    r = upload(client, "credit", credit_pipeline)
    assert r.status_code == 201, r.json
    path = stored_file(settings, r.json["sha256"])
    original = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"\0" * PADDING)

    cold = make_app(artifact_retry_seconds=RETRY_S).test_client()  # a new worker: nothing loaded yet
    body = {"model": "credit", "data": CREDIT_ROW}
    first, read_first = predict_reading(cold, body)
    assert first.status_code == 503 and "damaged" in first.json["message"], first.json
    assert read_first >= PADDING, f"the first request read {read_first} bytes: it did not hash the file"

    again, read_again = predict_reading(cold, body)
    assert again.status_code == 503 and again.json == first.json
    assert read_again < PADDING // 8, f"within the retry time the file was read again ({read_again} bytes)"

    time.sleep(RETRY_S + 0.1)
    later, read_later = predict_reading(cold, body)
    assert later.status_code == 503 and later.json == first.json
    assert read_later >= PADDING, f"after the retry time the file was not hashed again ({read_later} bytes)"

    path.write_bytes(original)  # repaired: served once the failure is forgotten, with no restart
    assert cold.post("/api/predict", json=body).status_code == 503  # still remembered
    time.sleep(RETRY_S + 0.1)
    repaired = cold.post("/api/predict", json=body)
    assert repaired.status_code == 200, repaired.json
    assert repaired.json["predictions"] == credit_pipeline.predict(pd.DataFrame([CREDIT_ROW])).tolist()


def test_a_missing_artifact_is_remembered_then_looked_for_again(make_app: Any, settings: Any, regressor: Any) -> None:
    client = make_app(artifact_retry_seconds=RETRY_S).test_client()
    r = upload(client, "reg", regressor)
    assert r.status_code == 201, r.json
    path = stored_file(settings, r.json["sha256"])
    original = path.read_bytes()
    path.unlink()

    cold = make_app(artifact_retry_seconds=RETRY_S).test_client()
    body = {"model": "reg", "data": {"x1": 1, "x2": 2}}
    missing = cold.post("/api/predict", json=body)
    assert missing.status_code == 503 and "missing" in missing.json["message"], missing.json
    path.write_bytes(original)
    assert cold.post("/api/predict", json=body).json == missing.json  # from memory: the file is back
    time.sleep(RETRY_S + 0.1)
    found = cold.post("/api/predict", json=body)
    assert found.status_code == 200, found.json


def test_with_no_retry_time_every_request_looks_at_the_file(make_app: Any, settings: Any, regressor: Any) -> None:
    client = make_app(artifact_retry_seconds=0).test_client()
    r = upload(client, "reg", regressor)
    assert r.status_code == 201, r.json
    path = stored_file(settings, r.json["sha256"])
    original = path.read_bytes()
    os.unlink(path)
    cold = make_app(artifact_retry_seconds=0).test_client()
    body = {"model": "reg", "data": {"x1": 1, "x2": 2}}
    assert cold.post("/api/predict", json=body).status_code == 503
    path.write_bytes(original)
    assert cold.post("/api/predict", json=body).status_code == 200
