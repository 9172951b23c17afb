"""Races against a real `maas serve --workers 4` (gunicorn) over real HTTP, on SQLite and PostgreSQL.

Concurrent uploads to one new model, alias moves against version deletes, and predictions
through an alias that is being moved. Each client thread has a `requests.Session` of its own,
and the threads are released together at a `threading.Barrier`, so that their requests
really overlap in gunicorn's workers and in the database.

One server per database serves every test of this module (its start-up is most of the cost);
each test works on model names of its own.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.linear_model import LinearRegression

from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    Live,
    database_of_its_own,
    joblib_bytes,
    live_server,
)
from tests.support.live import HTTP_TIMEOUT_S

WORKERS = 4
# Only a guard against a hang when a thread dies before the barrier; nothing is timed.
BARRIER_TIMEOUT_S = 120.0

T = TypeVar("T")


# -- the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`maas serve --workers 4` on a database of its own (SQLite file or PostgreSQL database)."""
    root = tmp_path_factory.mktemp(f"races-{request.param}")
    with (
        database_of_its_own(request.param, root) as database_url,
        live_server(request.param, root, database_url, workers=WORKERS, MAAS_ADMIN_TOKEN=ADMIN_TOKEN) as server,
    ):
        yield server


def assert_clean_log(live: Live) -> None:
    """Nothing in the server's log says a request failed inside (it holds every test's requests)."""
    text = live.server.log.read_text(errors="replace")
    for marker in ("Traceback", " ERROR ", "[ERROR]", "WORKER TIMEOUT", "database unavailable", "locked"):
        assert marker not in text, f"{marker!r} in the server log:\n{live.server.output()}"


# -- clients that overlap --------------------------------------------------------------------------
def together(tasks: Sequence[Callable[[requests.Session], T]]) -> list[T]:
    """Run each task in a thread of its own, with a Session of its own, all released at once."""
    barrier = threading.Barrier(len(tasks))

    def run(task: Callable[[requests.Session], T]) -> T:
        with requests.Session() as session:
            barrier.wait(BARRIER_TIMEOUT_S)
            return task(session)

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        return list(pool.map(run, tasks))


@dataclass(frozen=True)
class Answer:
    """One response, kept whole enough to check afterwards."""

    method: str
    path: str
    status: int
    text: str
    body: Any

    @classmethod
    def of(cls, response: requests.Response) -> Answer:
        try:
            body = response.json()
        except ValueError:
            body = None
        request = response.request
        return cls(str(request.method), str(request.path_url), response.status_code, response.text, body)


def call(session: requests.Session, live: Live, method: str, path: str, **kwargs: Any) -> Answer:
    kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
    return Answer.of(session.request(method, live.url(path), **kwargs))


def assert_no_server_trouble(answers: Sequence[Answer], allowed: set[int]) -> Counter[int]:
    """No 5xx, nothing about a locked database, only `allowed` statuses; returns the status counts."""
    statuses = Counter(a.status for a in answers)
    for answer in answers:
        assert answer.status < 500, f"{answer.method} {answer.path}: {answer.status} {answer.text}"
        assert "locked" not in answer.text.lower(), f"{answer.method} {answer.path}: {answer.text}"
        assert answer.status in allowed, f"{answer.method} {answer.path}: {answer.status} {answer.text}"
        if answer.status >= 400:  # the contract's error shape, even under contention
            assert answer.body["code"] == answer.status, answer.text
            assert answer.body["message"], answer.text
    return statuses


def report(live: Live, what: str, requests_made: int, statuses: Counter[int], duplicates: int, started: float) -> None:
    print(
        f"\n[{live.database}] {what}: {requests_made} requests, statuses {dict(sorted(statuses.items()))}, "
        f"duplicates {duplicates}, {time.perf_counter() - started:.2f} s"
    )


def upload(session: requests.Session, live: Live, name: str, payload: bytes, metadata: dict[str, Any]) -> Answer:
    return call(
        session,
        live,
        "POST",
        f"/api/admin/models/{name}/versions",
        files={"file": ("model.joblib", payload, "application/octet-stream")},
        data={"metadata": json.dumps(metadata)},
        headers=ADMIN,
    )


def listed_versions(live: Live, name: str) -> list[int]:
    response = live.server.get(f"/api/models/{name}/versions", params={"page_size": 1000})
    assert response.status_code == 200, response.text
    assert json.loads(response.headers["X-Pagination"])["total"] == len(response.json())
    return [v["version"] for v in response.json()]


# -- models ------------------------------------------------------------------------------------
FRAME = pd.DataFrame(
    {"x1": np.random.default_rng(11).normal(size=120), "x2": np.random.default_rng(12).normal(size=120)}
)
ROWS = [{"x1": 0.5, "x2": -1.25}, {"x1": -2.0, "x2": 0.75}, {"x1": 3.5, "x2": 2.0}]


def refitted(shift: float) -> LinearRegression:
    """The same kind of regressor, fitted on a target moved by `shift`: other bytes, other answers."""
    return LinearRegression().fit(FRAME, 3 * FRAME["x1"] - 2 * FRAME["x2"] + 1 + shift)


def own_predictions(model: LinearRegression) -> list[float]:
    return [float(p) for p in model.predict(pd.DataFrame(ROWS))]


def sha256_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


# -- 1. concurrent uploads to one new model ------------------------------------------------------
UPLOADS = 16


@pytest.mark.parametrize("identical", [False, True], ids=["distinct-artifacts", "identical-bytes"])
def test_concurrent_uploads_to_a_new_model_get_versions_1_to_n(live: Live, identical: bool) -> None:
    name = "uploads-identical" if identical else "uploads-distinct"
    models = [refitted(0.0 if identical else i / 10) for i in range(UPLOADS)]
    payloads = [joblib_bytes(m) for m in models]
    assert len({sha256_of(p) for p in payloads}) == (1 if identical else UPLOADS)
    started = time.perf_counter()

    def uploader(i: int) -> Callable[[requests.Session], Answer]:
        metadata = {"description": f"upload {i}", "tags": {"upload": str(i)}}
        return lambda session: upload(session, live, name, payloads[i], metadata)

    answers = together([uploader(i) for i in range(UPLOADS)])

    statuses = assert_no_server_trouble(answers, {201})
    numbers = [a.body["version"] for a in answers]
    duplicates = len(numbers) - len(set(numbers))
    assert duplicates == 0, numbers
    assert set(numbers) == set(range(1, UPLOADS + 1))
    # Each answer describes its own upload, under the number it was given.
    version_of_upload = dict(enumerate(numbers))
    for i, answer in enumerate(answers):
        assert answer.body["tags"] == {"upload": str(i)}
        assert answer.body["sha256"] == sha256_of(payloads[i])
        assert answer.body["model"] == name

    # The registry agrees, once everything has settled.
    checks = 2
    assert listed_versions(live, name) == list(range(UPLOADS, 0, -1))
    detail = live.server.get(f"/api/models/{name}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["latest_version"] == UPLOADS
    assert [v["version"] for v in detail.json()["versions"]] == list(range(UPLOADS, 0, -1))

    for i, number in version_of_upload.items():
        version = live.server.get(f"/api/models/{name}/versions/{number}")
        prediction = live.server.post(f"/api/models/{name}/versions/{number}/predict", json={"data": ROWS})
        checks += 2
        assert version.status_code == 200, version.text
        assert version.json()["tags"] == {"upload": str(i)}
        assert version.json()["sha256"] == sha256_of(payloads[i])
        # Every recorded version is servable: its file is there and still hashes right.
        assert prediction.status_code == 200, prediction.text
        assert prediction.json()["version"] == number
        assert prediction.json()["predictions"] == pytest.approx(own_predictions(models[i]), rel=1e-9)

    for payload in payloads:
        stored = live.store / "objects" / sha256_of(payload)[:2] / sha256_of(payload)
        assert stored.is_file(), stored
        assert sha256_of(stored.read_bytes()) == sha256_of(payload)
    assert not list((live.store / "tmp").iterdir()), "an upload left its temp file behind"
    assert_clean_log(live)
    report(
        live, f"uploads ({'identical' if identical else 'distinct'})", UPLOADS + checks, statuses, duplicates, started
    )


# -- 2. alias moves against version deletes ------------------------------------------------------
ROUNDS = 3
VERSIONS_PER_ROUND = 6
MOVERS = 3
MOVES = 25
DELETERS = 2
DELETES = 12


@dataclass(frozen=True)
class Move:
    """An alias PUT (alias set) or a version DELETE (alias None) aimed at `version`, and its answer."""

    alias: str | None
    version: int
    answer: Answer


def alias_mover(live: Live, name: str, plan: list[tuple[str, int]]) -> Callable[[requests.Session], list[Move]]:
    """A client that PUTs each (alias, version) of `plan` in turn."""

    def run(session: requests.Session) -> list[Move]:
        return [
            Move(
                alias,
                version,
                call(
                    session,
                    live,
                    "PUT",
                    f"/api/admin/models/{name}/aliases/{alias}",
                    json={"version": version},
                    headers=ADMIN,
                ),
            )
            for alias, version in plan
        ]

    return run


def version_deleter(live: Live, name: str, plan: list[int]) -> Callable[[requests.Session], list[Move]]:
    """A client that DELETEs each version of `plan` in turn."""

    def run(session: requests.Session) -> list[Move]:
        return [
            Move(
                None,
                version,
                call(session, live, "DELETE", f"/api/admin/models/{name}/versions/{version}", headers=ADMIN),
            )
            for version in plan
        ]

    return run


def test_alias_moves_and_version_deletes_never_leave_a_dangling_alias(live: Live) -> None:
    name = "aliases"
    payload = joblib_bytes(refitted(0.0))
    setup = requests.Session()
    created: list[int] = []
    deleted: Counter[int] = Counter()  # version -> how many DELETEs answered 204 (at most 1)
    answers: list[Answer] = []
    started = time.perf_counter()

    for round_ in range(ROUNDS):
        for _ in range(VERSIONS_PER_ROUND):
            answer = upload(setup, live, name, payload, {})
            assert answer.status == 201, answer.text
            created.append(answer.body["version"])
        fresh = created[-VERSIONS_PER_ROUND:]
        if round_ == 0:
            for alias in ("a", "b"):
                answer = call(
                    setup, live, "PUT", f"/api/admin/models/{name}/aliases/{alias}", json={"version": 1}, headers=ADMIN
                )
                assert answer.status == 200, answer.text

        # Several clients create the same new alias at once: each PUT is a create-or-move, all succeed.
        new_alias = f"new{round_}"
        creations = [
            m.answer
            for result in together(
                [alias_mover(live, name, [(new_alias, fresh[i % len(fresh)])]) for i in range(MOVERS + DELETERS)]
            )
            for m in result
        ]
        answers += creations
        assert_no_server_trouble(creations, {200})
        for answer in creations:
            assert new_alias in answer.body["aliases"], answer.text
        # It pins one version: let it go again, so that the deletes may take that one too.
        answer = call(setup, live, "DELETE", f"/api/admin/models/{name}/aliases/{new_alias}", headers=ADMIN)
        assert answer.status == 204, answer.text

        rng = random.Random(round_)
        candidates = list(created)  # this round's versions and whatever earlier rounds left
        results = together(
            [
                alias_mover(live, name, [(rng.choice("ab"), rng.choice(fresh)) for _ in range(MOVES)])
                for _ in range(MOVERS)
            ]
            + [version_deleter(live, name, [rng.choice(candidates) for _ in range(DELETES)]) for _ in range(DELETERS)]
        )
        moves = [m for result in results[:MOVERS] for m in result]
        deletes = [m for result in results[MOVERS:] for m in result]
        answers += [m.answer for m in moves + deletes]
        assert_no_server_trouble([m.answer for m in moves + deletes], {200, 204, 404, 409})
        for delete in deletes:
            if delete.answer.status == 204:
                deleted[delete.version] += 1
        assert not [v for v, n in deleted.items() if n > 1], f"a version was deleted twice: {deleted}"
        for delete in deletes:
            answer = delete.answer
            assert answer.status in {204, 404, 409}, answer.text
            if answer.status == 404:  # only a version that somebody deleted can be missing
                assert delete.version in deleted, answer.text
            if answer.status == 409:
                assert "alias" in answer.body["message"], answer.text
        for move in moves:
            answer = move.answer
            assert answer.status in {200, 404}, answer.text
            if answer.status == 200:
                assert answer.body["version"] == move.version, answer.text
                assert move.alias in answer.body["aliases"], answer.text
            else:  # a move may only miss its version because a delete won the race for it
                assert move.version in deleted, answer.text

        # Settled: every alias points at a version that exists, and the listing is exact.
        remaining = [v for v in created if v not in deleted]
        listing = listed_versions(live, name)
        assert len(listing) == len(set(listing)), listing
        assert listing == sorted(remaining, reverse=True)
        detail = live.server.get(f"/api/models/{name}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["latest_version"] == max(remaining)
        aliases = detail.json()["aliases"]
        assert set(aliases) == {"a", "b"}, aliases
        for alias, number in aliases.items():
            assert number in remaining, (alias, number, remaining)
            resolved = live.server.get(f"/api/models/{name}/versions/{alias}")
            assert resolved.status_code == 200, resolved.text
            assert resolved.json()["version"] == number
            assert alias in resolved.json()["aliases"]
        for number in deleted:
            gone = live.server.get(f"/api/models/{name}/versions/{number}")
            assert gone.status_code == 404, gone.text

    setup.close()
    duplicates = sum(n - 1 for n in deleted.values())
    statuses = Counter(a.status for a in answers)
    # The rounds did race: some deletes and some moves went through.
    assert statuses[204] > 0 and statuses[200] > 0, statuses
    assert_clean_log(live)
    report(live, "alias moves vs deletes", len(answers), statuses, duplicates, started)


# -- 3. predictions through an alias that is being moved -------------------------------------------
PREDICTORS = 4
PREDICTIONS = 40
MAX_FLIPS = 2000  # a bound, in case the predictors never finish; they set `done` when they have


def test_predictions_through_a_moving_alias_answer_with_either_version(live: Live) -> None:
    name = "flip"
    models = {1: refitted(0.0), 2: LinearRegression().fit(FRAME, -FRAME["x1"] + 4 * FRAME["x2"] - 5)}
    expected = {number: own_predictions(model) for number, model in models.items()}
    assert expected[1] != pytest.approx(expected[2], rel=1e-3), "the two versions must answer differently"
    setup = requests.Session()
    for number, model in models.items():
        answer = upload(setup, live, name, joblib_bytes(model), {})
        assert answer.status == 201 and answer.body["version"] == number, answer.text
    answer = call(
        setup, live, "PUT", f"/api/admin/models/{name}/aliases/production", json={"version": 1}, headers=ADMIN
    )
    assert answer.status == 200, answer.text
    setup.close()
    started = time.perf_counter()

    done = threading.Event()
    finished = Counter[str]()
    finished_lock = threading.Lock()
    flips: list[tuple[int, Answer]] = []

    def flipper(session: requests.Session) -> list[Answer]:
        while not done.is_set() and len(flips) < MAX_FLIPS:
            target = 2 if len(flips) % 2 == 0 else 1
            flips.append(
                (
                    target,
                    call(
                        session,
                        live,
                        "PUT",
                        f"/api/admin/models/{name}/aliases/production",
                        json={"version": target},
                        headers=ADMIN,
                    ),
                )
            )
        return [a for _, a in flips]

    def predictor(index: int) -> Callable[[requests.Session], list[Answer]]:
        if index % 2:
            path, body = "/api/predict", {"model": name, "version": "production", "data": ROWS}
        else:
            path, body = f"/api/models/{name}/versions/production/predict", {"data": ROWS}

        def run(session: requests.Session) -> list[Answer]:
            try:
                return [call(session, live, "POST", path, json=body) for _ in range(PREDICTIONS)]
            finally:
                with finished_lock:
                    finished["predictors"] += 1
                    if finished["predictors"] == PREDICTORS:
                        done.set()

        return run

    results = together([flipper, *(predictor(i) for i in range(PREDICTORS))])
    moves, predictions = results[0], [a for result in results[1:] for a in result]

    statuses = assert_no_server_trouble(moves + predictions, {200})
    for target, answer in flips:
        assert answer.body["version"] == target, answer.text
        assert "production" in answer.body["aliases"], answer.text
    answered = Counter[int]()
    for answer in predictions:
        number = answer.body["version"]
        assert number in expected, answer.text
        assert answer.body["model"] == name
        # The numbers are that version's own: the version named in the answer is the one that ran.
        assert answer.body["predictions"] == pytest.approx(expected[number], rel=1e-9), answer.text
        answered[number] += 1
    # The alias did move under the predictions (else this test proved nothing).
    assert set(answered) == {1, 2}, answered
    assert len(moves) >= 2, len(moves)
    assert_clean_log(live)
    report(
        live,
        f"predictions through a moving alias ({len(moves)} flips, answered by {dict(sorted(answered.items()))})",
        len(moves) + len(predictions),
        statuses,
        0,
        started,
    )
