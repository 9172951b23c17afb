"""Hostile estimators against a live `maas serve`: the model's own code attacks the server.

The estimators (tests/estimators/hostile_estimators.py) are trusted on purpose, so the scan lets them through;
what must hold them is the runner: no processes, no exec, no network, no writes, no secrets, memory
and time limits. The same battery against a server with MAAS_SANDBOX=off first shows every
confinement attack really works there (markers appear, the listener is reached, the token and the
files leak), so the confined run proves something.
"""

from __future__ import annotations

import io
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from tests.estimators.hostile_estimators import AttacksOnUnpickling, Hostile
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    CREDIT_ROW,
    REPO,
    Live,
    database_of_its_own,
    joblib_bytes,
    live_server,
)

MARKER_ATTACKS = ("system", "subprocess", "fork", "write")
TIMEOUT_S = 3


class Listener:
    """A TCP listener on loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.close()


def _fit(estimator: Any) -> Any:
    return estimator.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), [0.0, 1.0, 2.0])


def _post_artifact(live: Live, name: str, payload: bytes) -> requests.Response:
    return requests.post(
        live.url(f"/api/admin/models/{name}/versions"),
        files={"file": ("model.joblib", io.BytesIO(payload))},
        headers=ADMIN,
        timeout=60,
    )


def _contract_shaped(response: requests.Response) -> None:
    if response.status_code >= 400:
        body = response.json()
        assert body["code"] == response.status_code and body["status"] and body["message"], body


def _battery(
    live: Live, root: Path, listener: Listener, credit_pipeline: Any, database_file: Path | None
) -> dict[str, Any]:
    """Upload and call every hostile estimator, checking the good model between attacks."""
    markers = root / "markers"
    markers.mkdir()
    secret_file = root / "secret.txt"
    secret = secrets.token_hex(16)
    secret_file.write_text(secret)
    good = requests.post(
        live.url("/api/admin/models/credit/versions"),
        files={"file": ("model.joblib", io.BytesIO(joblib_bytes(credit_pipeline)))},
        headers=ADMIN,
        timeout=60,
    )
    assert good.status_code == 201, good.text
    expected = credit_pipeline.predict(pd.DataFrame([CREDIT_ROW])).tolist()

    def good_model_answers() -> None:
        answer = requests.post(live.url("/api/models/credit/predict"), json={"data": CREDIT_ROW}, timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"] == expected, answer.text

    targets = {attack: str(markers / attack) for attack in MARKER_ATTACKS}
    targets["connect"] = str(listener.port)
    targets["read_file"] = str(secret_file)
    attacks = [*targets, "environment", "allocate", "loop", "crash"]
    if database_file is not None:
        attacks.append("read_db")
        targets["read_db"] = str(database_file)

    statuses: dict[str, int] = {}
    bodies: list[str] = []
    on_load_targets = {
        "system": str(markers / "on-load"),
        "write": str(markers / "on-load-write"),
        "connect": str(listener.port),
    }
    for attack, target in on_load_targets.items():
        on_load = _post_artifact(live, f"on-load-{attack}", joblib_bytes(_fit(AttacksOnUnpickling(attack, target))))
        _contract_shaped(on_load)
        statuses[f"on-load {attack}"] = on_load.status_code
        bodies.append(on_load.text)
        good_model_answers()
    for attack in attacks:
        name = f"h-{attack.replace('_', '-')}"
        kind = "read_file" if attack == "read_db" else attack
        uploaded = _post_artifact(live, name, joblib_bytes(_fit(Hostile(kind, targets.get(attack, "")))))
        assert uploaded.status_code == 201, uploaded.text  # fit() is harmless: predict attacks
        meanwhile: list[int] = []
        if attack == "loop":  # the other models keep answering while a runner spins

            def ask_good(meanwhile: list[int] = meanwhile) -> None:
                for _ in range(3):
                    good_model_answers()
                    meanwhile.append(200)

            helper = threading.Thread(target=ask_good)
            helper.start()
        answer = requests.post(live.url(f"/api/models/{name}/predict"), json={"data": {"x": 1.0}}, timeout=60)
        if attack == "loop":
            helper.join()
            assert meanwhile == [200, 200, 200]
        _contract_shaped(answer)
        statuses[attack] = answer.status_code
        bodies.append(answer.text)
        good_model_answers()
        # A broken runner is replaced: the same version is asked again and answers the same way.
        if attack in ("allocate", "crash"):
            again = requests.post(live.url(f"/api/models/{name}/predict"), json={"data": {"x": 1.0}}, timeout=60)
            assert again.status_code == answer.status_code, again.text
    return {
        "statuses": statuses,
        "bodies": bodies,
        "markers": sorted(p.name for p in markers.iterdir()),
        "connections": listener.connections,
        "secret": secret,
        "log": live.server.log.read_text(errors="replace"),
    }


def _run(kind: str, tmp_path: Path, listener: Listener, credit_pipeline: Any, sandbox: str) -> dict[str, Any]:
    root = tmp_path / f"{kind}-{sandbox}"
    root.mkdir()
    with (
        database_of_its_own(kind, root) as url,
        live_server(
            kind,
            root,
            url,
            MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
            MAAS_TRUSTED_MODULES="tests.estimators.hostile_estimators",
            MAAS_PREDICT_TIMEOUT=str(TIMEOUT_S),
            MAAS_RUNNER_MEMORY=str(1 << 30),
            MAAS_SANDBOX=sandbox,
            PYTHONPATH=str(REPO),
        ) as live,
    ):
        database_file = root / "registry.db" if kind == "sqlite" else None
        return _battery(live, root, listener, credit_pipeline, database_file)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_hostile_estimators_are_contained(kind: str, tmp_path: Path, listener: Listener, credit_pipeline: Any) -> None:
    found = _run(kind, tmp_path, listener, credit_pipeline, "on")
    statuses = found["statuses"]
    assert found["markers"] == [], found  # no process, exec or write happened
    assert found["connections"] == 0  # no connection left the runner
    for body in found["bodies"]:
        assert ADMIN_TOKEN not in body and found["secret"] not in body
        assert "53514c69746520666f726d6174" not in body  # "SQLite format" read from the registry file
    assert ADMIN_TOKEN not in found["log"]
    # The model's attempt fails inside it (422 naming the exception), or it quietly gets nothing
    # (os.system answers "command not found" status); the limits kill and replace the runner.
    for attack in ("subprocess", "fork", "write", "connect", "read_file", "environment"):
        assert statuses[attack] == 422, statuses
    assert statuses["system"] in (200, 422)
    # While loading: a failed write or connection fails the load (422); os.system fails quietly.
    assert statuses["on-load write"] == 422 and statuses["on-load connect"] == 422, statuses
    assert statuses["on-load system"] in (201, 422), statuses
    assert statuses["allocate"] == 503 and statuses["crash"] == 503 and statuses["loop"] == 504, statuses
    if kind == "sqlite":
        assert statuses["read_db"] == 422


def test_the_same_attacks_work_without_the_sandbox(tmp_path: Path, listener: Listener, credit_pipeline: Any) -> None:
    """MAAS_SANDBOX=off: the battery's attacks really do what they try (so the test above can fail);
    the process boundary and the memory and time limits still hold."""
    found = _run("sqlite", tmp_path, listener, credit_pipeline, "off")
    assert found["markers"] == sorted(["on-load", "on-load-write", *MARKER_ATTACKS]), found
    assert found["connections"] == 2  # one while loading, one while predicting
    assert any(found["secret"].encode().hex() in body for body in found["bodies"])  # read_file
    assert any("53514c69746520666f726d6174" in body for body in found["bodies"])  # read_db
    assert any(ADMIN_TOKEN in body for body in found["bodies"])  # environment, via /proc
    assert "MAAS_SANDBOX=off" in found["log"]
    statuses = found["statuses"]
    assert statuses["allocate"] == 503 and statuses["crash"] == 503 and statuses["loop"] == 504, statuses
