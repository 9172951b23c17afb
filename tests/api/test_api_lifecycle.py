"""Model deletes (numbers go on after a re-upload), version PATCH, and /docs' bearer security."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.support import ADMIN, CREDIT_ROW, joblib_bytes, model_count, store_files, upload

# Deletes and counters go through the database's constraints and transactions: both databases.
pytestmark = pytest.mark.postgresql


@pytest.fixture
def three(client: Any, credit_pipeline: Any) -> Any:
    """credit versions 1..3, `production` on 2."""
    for n in range(3):
        r = upload(client, "credit", credit_pipeline, {"description": f"v{n + 1}", "tags": {"team": "risk"}})
        assert r.status_code == 201, r.json
    assert (
        client.put("/api/admin/models/credit/aliases/production", json={"version": 2}, headers=ADMIN).status_code == 200
    )
    return client


def snapshot(client: Any) -> Any:
    return client.get("/api/models/credit").json, [
        client.get(f"/api/models/credit/versions/{v}").json for v in (1, 2, 3)
    ]


# -- DELETE /api/admin/models/{name} ----------------------------------------------------------
@pytest.mark.parametrize("query", ["", "?force=false"])
def test_delete_refused_while_the_model_has_versions(three: Any, query: str) -> None:
    before = snapshot(three)
    r = three.delete(f"/api/admin/models/credit{query}", headers=ADMIN)
    assert r.status_code == 409, r.json
    assert r.json["code"] == 409 and "force=true" in r.json["message"]
    assert r.json["errors"] == {"versions": [1, 2, 3]}
    assert snapshot(three) == before


@pytest.mark.parametrize("query", ["?force=true&force=maybe", "?force=true&force=true", "?force=false&force=true"])
def test_a_query_parameter_given_twice_is_refused_and_nothing_is_deleted(three: Any, query: str) -> None:
    before = snapshot(three)
    r = three.delete(f"/api/admin/models/credit{query}", headers=ADMIN)
    assert r.status_code == 422, r.json
    assert r.json["code"] == 422 and "'force' more than once" in r.json["message"], r.json
    assert r.json["errors"] == {"query": {"force": ["Given more than once."]}}
    assert snapshot(three) == before


def test_force_deletes_versions_and_aliases_and_numbers_go_on(app: Any, three: Any, credit_pipeline: Any) -> None:
    files = store_files(app)
    r = three.delete("/api/admin/models/credit?force=true", headers=ADMIN)
    assert r.status_code == 204 and r.data == b""
    assert three.get("/api/models/credit").status_code == 404
    assert three.get("/api/models/credit/versions/2").status_code == 404
    assert three.get("/api/models/credit/versions/production").status_code == 404
    assert model_count(three) == 0
    for body, path in (
        ({"model": "credit", "data": CREDIT_ROW}, "/api/predict"),
        ({"model": "credit", "version": "production", "data": CREDIT_ROW}, "/api/predict"),
        ({"data": CREDIT_ROW}, "/api/models/credit/predict"),
        ({"data": CREDIT_ROW}, "/api/models/credit/versions/1/predict"),
    ):
        p = three.post(path, json=body)
        assert p.status_code == 404 and p.json["code"] == 404, (path, p.json)
    assert store_files(app) == files  # the artifacts are left for `maas store gc`
    assert three.delete("/api/admin/models/credit?force=true", headers=ADMIN).status_code == 404

    # The name may be used again; its numbers go on from where they stopped.
    again = upload(three, "credit", credit_pipeline, {"description": "reborn"})
    assert again.status_code == 201, again.json
    assert again.json["version"] == 4 and again.json["aliases"] == []
    detail = three.get("/api/models/credit").json
    assert detail["latest_version"] == 4 and detail["aliases"] == {} and detail["description"] == "reborn"
    assert [v["version"] for v in detail["versions"]] == [4]
    assert three.post("/api/predict", json={"model": "credit", "data": CREDIT_ROW}).json["version"] == 4
    # ... and again after a second delete.
    assert three.delete("/api/admin/models/credit?force=true", headers=ADMIN).status_code == 204
    assert upload(three, "credit", credit_pipeline).json["version"] == 5


def test_delete_a_model_without_versions_keeps_its_counter(three: Any, credit_pipeline: Any) -> None:
    assert three.delete("/api/admin/models/credit/aliases/production", headers=ADMIN).status_code == 204
    for v in (1, 2, 3):
        assert three.delete(f"/api/admin/models/credit/versions/{v}", headers=ADMIN).status_code == 204
    assert three.delete("/api/admin/models/credit", headers=ADMIN).status_code == 204
    assert three.get("/api/models/credit").status_code == 404
    assert upload(three, "credit", credit_pipeline).json["version"] == 4


def test_delete_leaves_other_models_alone(three: Any, credit_pipeline: Any) -> None:
    assert upload(three, "other", credit_pipeline, {"aliases": ["production"]}).status_code == 201
    assert three.delete("/api/admin/models/credit?force=true", headers=ADMIN).status_code == 204
    other = three.get("/api/models/other").json
    assert other["aliases"] == {"production": 1} and other["latest_version"] == 1
    assert three.post("/api/predict", json={"model": "other", "data": CREDIT_ROW}).status_code == 200
    assert upload(three, "newcomer", credit_pipeline).json["version"] == 1


@pytest.mark.parametrize("name", ["ghost", "Credit", "cr%00edit", "c" * 65, "credit%0A"])
def test_delete_unknown_model_is_404(three: Any, name: str) -> None:
    for query in ("", "?force=true"):
        r = three.delete(f"/api/admin/models/{name}{query}", headers=ADMIN)
        assert r.status_code == 404 and r.json["message"], r.json


@pytest.mark.parametrize("query", ["force=maybe", "force=TRUE", "force=1", "force=", "force=yes"])
def test_delete_bad_force_is_422_and_deletes_nothing(three: Any, query: str) -> None:
    before = snapshot(three)
    r = three.delete(f"/api/admin/models/credit?{query}", headers=ADMIN)
    assert r.status_code == 422, r.json
    assert r.json["code"] == 422 and "query" in r.json["errors"]
    assert snapshot(three) == before


def test_uploads_racing_force_deletes_never_reuse_a_number(app: Any, credit_pipeline: Any) -> None:
    """Uploads to one name while it is force-deleted again and again: every number handed out
    is distinct, what is left holds only numbers that uploads were given, and the next upload
    goes on from the highest."""
    payload = joblib_bytes(credit_pipeline)
    uploads: list[Any] = []
    deletes: list[Any] = []

    def uploader() -> None:
        client = app.test_client()
        for _ in range(4):
            uploads.append(upload(client, "race", payload))

    def deleter() -> None:
        client = app.test_client()
        for _ in range(6):
            deletes.append(client.delete("/api/admin/models/race?force=true", headers=ADMIN))

    threads = [threading.Thread(target=uploader) for _ in range(3)] + [threading.Thread(target=deleter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in uploads} <= {201, 409}, [r.json for r in uploads]
    assert {r.status_code for r in deletes} <= {204, 404, 409}, [r.json for r in deletes]
    assert all("try again" in r.json["message"] for r in uploads + deletes if r.status_code == 409)
    numbers = [r.json["version"] for r in uploads if r.status_code == 201]
    assert numbers and len(numbers) == len(set(numbers)), numbers
    client = app.test_client()
    left = client.get("/api/models/race/versions")
    if left.status_code == 200:
        assert {v["version"] for v in left.json} <= set(numbers)
    else:
        assert left.status_code == 404
    assert upload(client, "race", payload).json["version"] == max(numbers) + 1


# -- PATCH /api/admin/models/{name}/versions/{version} ---------------------------------------
def test_patch_version_tags_replace_and_description_stays(three: Any) -> None:
    r = three.patch("/api/admin/models/credit/versions/2", json={"tags": {"stage": "prod"}}, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["tags"] == {"stage": "prod"} and r.json["description"] == "v2"
    assert r.json["aliases"] == ["production"] and r.json["features"] and r.json["version"] == 2
    assert three.get("/api/models/credit/versions/2").json == r.json
    r = three.patch("/api/admin/models/credit/versions/2", json={"description": "champion"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["description"] == "champion" and r.json["tags"] == {"stage": "prod"}
    r = three.patch("/api/admin/models/credit/versions/2", json={"description": None, "tags": {}}, headers=ADMIN)
    assert r.status_code == 200 and r.json["description"] is None and r.json["tags"] == {}
    # only that version changed, and everything else of it stayed
    assert three.get("/api/models/credit/versions/1").json["tags"] == {"team": "risk"}
    assert r.json["sha256"] == three.get("/api/models/credit/versions/1").json["sha256"]


def test_patch_version_by_selector_like_delete(three: Any) -> None:
    r = three.patch("/api/admin/models/credit/versions/production", json={"tags": {"a": "b"}}, headers=ADMIN)
    assert r.status_code == 200 and r.json["version"] == 2
    r = three.patch("/api/admin/models/credit/versions/latest", json={"tags": {"a": "c"}}, headers=ADMIN)
    assert r.status_code == 200 and r.json["version"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tags": {"a": 1}},
        {"tags": ["a"]},
        {"tags": None},
        {"tags": {"": "x"}},
        {"tags": {"k" * 256: "x"}},
        {"tags": {"a": "x" * 10_001}},
        {"tags": {"a\x00": "x"}},
        {"tags": {"a": "\ud800"}},
        {"description": 5},
        {"description": "a\x00b"},
        {"description": "x" * 10_001},
        {"description": "ok", "colour": "red"},
        {"version": 3},
    ],
)
def test_patch_version_refusals_are_422_and_change_nothing(three: Any, body: dict[str, Any]) -> None:
    before = snapshot(three)
    r = three.patch("/api/admin/models/credit/versions/2", json=body, headers=ADMIN)
    assert r.status_code == 422, r.json
    assert r.json["code"] == 422 and r.json["message"] and r.json["errors"]
    assert snapshot(three) == before


def test_patch_version_body_must_be_json(three: Any) -> None:
    r = three.patch("/api/admin/models/credit/versions/2", data="tags=x", headers=ADMIN, content_type="text/plain")
    assert r.status_code == 415
    r = three.patch("/api/admin/models/credit/versions/2", data="{", headers=ADMIN, content_type="application/json")
    assert r.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/models/ghost/versions/1",
        "/api/admin/models/credit/versions/9",
        "/api/admin/models/credit/versions/0",
        "/api/admin/models/credit/versions/-1",
        "/api/admin/models/credit/versions/99999999999999999999",
        "/api/admin/models/credit/versions/staging",
        "/api/admin/models/Credit/versions/1",
    ],
)
def test_patch_unknown_version_is_404(three: Any, path: str) -> None:
    r = three.patch(path, json={"tags": {}}, headers=ADMIN)
    assert r.status_code == 404 and r.json["message"], r.json


# -- /docs: the bearer security of each operation ----------------------------------------------
def test_every_api_operation_declares_its_bearer_security(client: Any) -> None:
    spec = client.get("/openapi.json").json
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    seen = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            seen.add(f"{method.upper()} {path}")
            if path.startswith("/api/admin/"):
                assert operation["security"] == [{"bearer": []}], path
            elif path in ("/api", "/v2") or (path.startswith(("/api/", "/v2/")) and not path.startswith("/v2/health/")):
                # Open, or closed by MAAS_API_TOKEN (V2's health stays open: the contract).
                assert operation["security"] == [{}, {"bearer": []}], path
            else:
                assert "security" not in operation, path
    assert {
        "DELETE /api/admin/models/{name}",
        "PATCH /api/admin/models/{name}/versions/{version}",
        "POST /api/predict",
        "GET /api/models",
    } <= seen
    delete = spec["paths"]["/api/admin/models/{name}"]["delete"]
    force = next(p for p in delete["parameters"] if p["name"] == "force")
    assert force["in"] == "query" and force["schema"]["type"] == "boolean"
    assert {"204", "404", "409", "422"} <= set(delete["responses"])
    patch = spec["paths"]["/api/admin/models/{name}/versions/{version}"]["patch"]
    assert {"200", "404", "422"} <= set(patch["responses"])
