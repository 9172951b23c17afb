"""Request ids (API v1.1): every response carries X-Request-ID, the client's own when valid."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support import ADMIN, upload

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/health/live", None),
        ("get", "/api/models", None),
        ("get", "/api/models/nobody", None),  # 404 from the view
        ("get", "/no/such/route", None),  # Flask's routing 404
        ("delete", "/api/models", None),  # 405
        ("post", "/api/predict", {"model": "credit"}),  # 422
        ("get", "/", None),  # a page
    ],
)
def test_every_answer_carries_the_clients_id_or_a_new_one(client: Any, method: str, path: str, body: Any) -> None:
    sent = "req-42.a_B"
    answer = getattr(client, method)(path, json=body, headers={"X-Request-ID": sent})
    assert answer.headers["X-Request-ID"] == sent
    fresh = [getattr(client, method)(path, json=body).headers["X-Request-ID"] for _ in range(2)]
    assert all(NEW_ID.fullmatch(i) for i in fresh) and fresh[0] != fresh[1]


@pytest.mark.parametrize("bad", ["", "x" * 129, "has space", "semi;colon", "ünï", "a/b"])
def test_an_id_outside_the_contracts_alphabet_or_length_is_replaced(client: Any, bad: str) -> None:
    headers = {"X-Request-ID": bad.encode("utf-8").decode("latin-1")}
    answer = client.get("/api/models", headers=headers)
    assert answer.status_code == 200
    assert NEW_ID.fullmatch(answer.headers["X-Request-ID"])
    longest = "y" * 128
    assert client.get("/api/models", headers={"X-Request-ID": longest}).headers["X-Request-ID"] == longest


def test_an_upload_and_its_refusal_carry_ids(client: Any, credit_pipeline: Any) -> None:
    created = upload(client, "credit", credit_pipeline, headers={**ADMIN, "X-Request-ID": "upload-1"})
    assert created.status_code == 201 and created.headers["X-Request-ID"] == "upload-1"
    refused = upload(client, "credit", b"not a pickle", headers={**ADMIN, "X-Request-ID": "upload-2"})
    assert refused.status_code == 422 and refused.headers["X-Request-ID"] == "upload-2"
    unauthorised = upload(client, "credit", credit_pipeline, headers={"X-Request-ID": "upload-3"})
    assert unauthorised.status_code == 401 and unauthorised.headers["X-Request-ID"] == "upload-3"
