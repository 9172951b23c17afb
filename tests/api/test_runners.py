"""The runner boundary itself: the data-only protocol's bounds, runners killed from outside (idle
and mid-call), deadlines, and what a worker caches about versions (keyed so nothing is reused)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import struct
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from registry.names import LATEST
from serving.runners import protocol
from tests.estimators.hostile_estimators import Hostile
from tests.support import ADMIN, upload

HOSTILE = ("tests.estimators.hostile_estimators",)


def _fit(estimator: Any, column: str = "x") -> Any:
    return estimator.fit(pd.DataFrame({column: [1.0, 2.0, 3.0]}), [0.0, 1.0, 2.0])


# -- the protocol's bounds (what a hostile runner could send the web worker) ----------------------
def _raw(header: dict[str, Any], payload: bytes = b"") -> bytes:
    body = json.dumps(header).encode()
    return struct.pack(">I", len(body)) + body + payload


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (_raw({"v": 1, "arrays": [{"dtype": "|O", "shape": [1]}]}, b"\0" * 8), "forbidden dtype"),
        (_raw({"v": 1, "arrays": [{"dtype": "<f8", "shape": [1 << 20]}]}), "over the limit"),
        (_raw({"v": 1, "arrays": [{"dtype": "<f8", "shape": [1, 1, 1]}]}), "forbidden shape"),
        (_raw({"v": 2}), "version"),
        (struct.pack(">I", 5) + b"[[[[[", "not JSON"),
        (struct.pack(">I", 1 << 30), "over the limit"),
        (_raw({"v": 1, "x": float("nan")}).replace(b"NaN", b"NaN"), "not JSON"),
    ],
)
def test_protocol_refuses_what_breaks_its_bounds(message: bytes, problem: str) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(message)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(protocol.ProtocolError, match=problem):
            protocol.recv(ours, 1 << 16)


def test_protocol_values_are_checked_scalars() -> None:
    arrays: list[np.ndarray] = []
    assert protocol.unpack_values(protocol.pack_values(np.array(["a", None], dtype=object), arrays), arrays, 2) == [
        "a",
        None,
    ]
    with pytest.raises(protocol.ProtocolError, match="characters"):
        protocol.unpack_values({"list": ["x" * (protocol.MAX_STRING + 1)]}, [], 1)
    with pytest.raises(protocol.ProtocolError, match="expected"):
        protocol.unpack_values({"list": [1, 2]}, [], 3)
    with pytest.raises(protocol.ProtocolError, match="type dict"):
        protocol.unpack_values({"list": [{"a": 1}]}, [], 1)


def test_a_deadline_holds_against_a_trickle() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(struct.pack(">I", 100) + b"{")  # then nothing more
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            protocol.recv(ours, 1 << 16, deadline=time.monotonic() + 0.3)
        assert time.monotonic() - started < 2


# -- runners killed, stalled, or answering too much -------------------------------------------------
def _ended(pid: int) -> bool:
    """Gone, or a zombie the zygote has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _runner_pid(app: Any, name: str) -> int:
    rt = app.extensions["maas"]
    with app.app_context():
        return rt.runner(rt.resolve(name, LATEST)).pid


def test_a_runner_killed_while_idle_is_replaced(make_app: Any, credit_pipeline: Any) -> None:
    app = make_app()
    client = app.test_client()
    assert upload(client, "credit", credit_pipeline).status_code == 201
    row = {"data": {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}}
    first = client.post("/api/models/credit/predict", json=row)
    assert first.status_code == 200
    pid = _runner_pid(app, "credit")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    again = client.post("/api/models/credit/predict", json=row)
    assert again.status_code == 200 and again.json == first.json
    assert _runner_pid(app, "credit") != pid


def test_a_runner_killed_mid_call_answers_503_and_the_next_call_works(make_app: Any) -> None:
    app = make_app(trusted_modules=HOSTILE)
    client = app.test_client()
    assert upload(client, "slow", _fit(Hostile("sleep", "1.5"))).status_code == 201
    pid = _runner_pid(app, "slow")
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    answer = client.post("/api/models/slow/predict", json={"data": {"x": 1.0}})
    assert answer.status_code == 503, answer.json
    assert "Version 1 of 'slow'" in answer.json["message"] and "died" in answer.json["message"]
    assert client.post("/api/models/slow/predict", json={"data": {"x": 1.0}}).status_code == 200


def test_a_call_past_the_timeout_is_504_and_its_runner_is_killed(make_app: Any, credit_pipeline: Any) -> None:
    app = make_app(trusted_modules=HOSTILE, predict_timeout=1.0)
    client = app.test_client()
    assert upload(client, "slow", _fit(Hostile("sleep", "30"))).status_code == 201
    assert upload(client, "credit", credit_pipeline).status_code == 201
    pid = _runner_pid(app, "slow")
    started = time.monotonic()
    answer = client.post("/api/models/slow/predict", json={"data": {"x": 1.0}})
    assert answer.status_code == 504 and "within 1 s" in answer.json["message"], answer.json
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    assert _ended(pid)
    row = {"data": {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}}
    assert client.post("/api/models/credit/predict", json=row).status_code == 200


def test_an_upload_whose_model_hangs_or_dies_on_its_first_row_is_422(make_app: Any) -> None:
    app = make_app(trusted_modules=HOSTILE, predict_timeout=1.0)
    client = app.test_client()
    hangs = upload(client, "slow", _fit(Hostile("sleep", "30")), {"example": {"x": 1.0}})
    assert hangs.status_code == 422, hangs.json
    assert hangs.json["message"].startswith("The example failed: ") and "within 1 s" in hangs.json["message"]
    assert client.get("/api/models").json == []


def test_an_upload_whose_model_answers_its_first_row_outside_the_protocol_is_422(make_app: Any) -> None:
    # The default time limit: on a loaded machine a megabyte answer can take longer than the 1 s
    # the hanging model above is given, and this test is about the answer, not the time.
    client = make_app(trusted_modules=HOSTILE).test_client()
    chatty = upload(client, "chatty", _fit(Hostile("huge_answer")), {"example": {"x": 1.0}})
    assert chatty.status_code == 422 and "outside the protocol" in chatty.json["message"], chatty.json
    assert client.get("/api/models").json == []


def test_an_answer_outside_the_protocol_is_503(make_app: Any) -> None:
    client = make_app(trusted_modules=HOSTILE).test_client()
    assert upload(client, "chatty", _fit(Hostile("huge_answer"))).status_code == 201
    answer = client.post("/api/models/chatty/predict", json={"data": {"x": 1.0}})
    assert answer.status_code == 503 and "outside the protocol" in answer.json["message"], answer.json


# -- what inspecting an upload finds --------------------------------------------------------------
def test_an_uploaded_class_instead_of_a_model_is_422(client: Any) -> None:
    answer = upload(client, "klass", pickle.dumps(Pipeline), filename="model.pkl")
    assert answer.status_code == 422, answer.json
    assert "Pipeline" in answer.json["message"]


# -- what a worker caches is keyed by what is never reused ------------------------------------------
@pytest.mark.postgresql  # SQLite reuses a deleted row's id, PostgreSQL's sequence does not
def test_a_new_version_in_a_deleted_versions_row_gets_its_own_schema(client: Any) -> None:
    """SQLite hands a deleted newest row's id to the next insert; the input schema a worker
    compiled for the deleted version must not be used for the new one."""
    assert upload(client, "m", _fit(LinearRegression(), "a")).status_code == 201
    assert upload(client, "m", _fit(LinearRegression(), "b")).status_code == 201
    assert client.post("/api/models/m/versions/2/predict", json={"data": {"b": 1.0}}).status_code == 200
    assert client.delete("/api/admin/models/m/versions/2", headers=ADMIN).status_code == 204
    assert upload(client, "m", _fit(LinearRegression(), "c")).status_code == 201
    answer = client.post("/api/models/m/versions/3/predict", json={"data": {"c": 1.0}})
    assert answer.status_code == 200, answer.json
    refused = client.post("/api/models/m/versions/3/predict", json={"data": {"b": 1.0}})
    assert refused.status_code == 422 and "c" in refused.json["errors"]["json"]["data"]
