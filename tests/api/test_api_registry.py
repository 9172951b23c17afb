"""Reading the registry, health, OpenAPI and docs, and the error shape on every route."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from registry.db import Database
from tests.support import ADMIN, upload

# Listings depend on the database's ordering and time types: both databases.
pytestmark = pytest.mark.postgresql


@pytest.fixture
def populated(client: Any, credit_pipeline: Any, regressor: Any) -> Any:
    for _ in range(3):
        assert upload(client, "credit", credit_pipeline, {"tags": {"team": "risk"}}).status_code == 201
    assert upload(client, "reg", regressor, {"description": "a regressor"}).status_code == 201
    r = client.put("/api/admin/models/credit/aliases/production", json={"version": 2}, headers=ADMIN)
    assert r.status_code == 200
    return client


def test_list_models(populated: Any) -> None:
    r = populated.get("/api/models")
    assert r.status_code == 200
    assert [m["name"] for m in r.json] == ["credit", "reg"]
    credit = r.json[0]
    assert credit["latest_version"] == 3
    assert credit["aliases"] == {"production": 2}
    assert set(credit) == {"name", "description", "latest_version", "aliases", "created_at", "updated_at"}
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", credit["created_at"])
    assert json.loads(r.headers["X-Pagination"])["total"] == 2


def test_list_models_paginates(populated: Any) -> None:
    r = populated.get("/api/models?page=2&page_size=1")
    assert [m["name"] for m in r.json] == ["reg"]
    pagination = json.loads(r.headers["X-Pagination"])
    assert pagination["total"] == 2 and pagination["page"] == 2 and pagination["total_pages"] == 2
    assert populated.get("/api/models?page_size=1001").status_code == 422
    assert populated.get("/api/models?page=0").status_code == 422
    assert populated.get("/api/models?page_size=1000").status_code == 200


def test_get_model_with_versions_newest_first(populated: Any) -> None:
    r = populated.get("/api/models/credit")
    assert r.status_code == 200
    assert [v["version"] for v in r.json["versions"]] == [3, 2, 1]
    assert r.json["versions"][1]["aliases"] == ["production"]
    assert r.json["latest_version"] == 3


def test_list_versions_paginated(populated: Any) -> None:
    r = populated.get("/api/models/credit/versions?page_size=2")
    assert [v["version"] for v in r.json] == [3, 2]
    assert json.loads(r.headers["X-Pagination"])["total"] == 3


def test_version_in_full(populated: Any, credit_pipeline: Any) -> None:
    r = populated.get("/api/models/credit/versions/production")
    assert r.status_code == 200
    v = r.json
    assert v["model"] == "credit" and v["version"] == 2 and v["aliases"] == ["production"]
    assert v["format"] == "joblib" and re.fullmatch(r"[0-9a-f]{64}", v["sha256"]) and v["size_bytes"] > 0
    assert v["estimator"] == "sklearn.pipeline.Pipeline"
    assert v["has_predict_proba"] is True and v["classes"] == [0, 1]
    assert v["tags"] == {"team": "risk"}
    assert set(v["library_versions"]) >= {"python", "scikit-learn"}
    assert [f["name"] for f in v["features"]] == ["age", "income", "gender", "region"]
    assert v["features"][0] == {
        "name": "age",
        "type": "number",
        "required": True,
        "allowed": None,
        "minimum": None,
        "maximum": None,
        "accepts_unseen": False,
    }
    assert v["features"][3]["type"] == "string" and v["features"][3]["allowed"] == ["east", "north", "south"]
    assert populated.get("/api/models/credit/versions/latest").json["version"] == 3
    assert populated.get("/api/models/credit/versions/1").json["version"] == 1
    assert populated.get("/api/models/reg/versions/1").json["classes"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/nope",
        "/api/models/nope/versions",
        "/api/models/nope/versions/1",
        "/api/models/credit/versions/9",
        "/api/models/credit/versions/staging",
        "/api/models/credit/versions/0",
        "/api/models/credit/versions/-1",
        "/api/models/credit/versions/99999999999999999999999",
        "/api/models/Credit",
        "/api/models/cr%C3%A9dit",
        "/api/models/" + "c" * 300,
        "/api/models/..",
        "/api/models/credit%2F..",
        "/api/nothing-here",
        "/nothing",
    ],
)
def test_unknown_reads_are_404_json(populated: Any, path: str) -> None:
    r = populated.get(path)
    assert r.status_code == 404
    assert r.json["code"] == 404 and r.json["status"] == "Not Found" and r.json["message"]


def test_405_is_json_with_allow(populated: Any) -> None:
    r = populated.delete("/api/models/credit")
    assert r.status_code == 405
    assert r.json["code"] == 405 and r.json["message"]
    assert "GET" in r.headers["Allow"]


def test_health(client: Any) -> None:
    assert client.get("/health/live").json == {"status": "ok"}
    assert client.get("/health/ready").json == {"status": "ready"}


def test_ready_is_503_when_database_is_gone(make_app: Any) -> None:
    # Built on a working database, then pointed at a closed port.
    good = make_app()
    runtime = good.extensions["maas"]
    runtime.db.dispose()
    runtime.db = Database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    r = good.test_client().get("/health/ready")
    assert r.status_code == 503
    assert r.json["code"] == 503 and "database" in r.json["message"]
    assert good.test_client().get("/health/live").status_code == 200


def test_openapi_documents_every_route(client: Any) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path, method in [
        ("/api/predict", "post"),
        ("/api", "post"),
        ("/api", "get"),
        ("/api/models", "get"),
        ("/api/models/{name}", "get"),
        ("/api/models/{name}/versions", "get"),
        ("/api/models/{name}/versions/{selector}", "get"),
        ("/api/models/{name}/versions/{selector}/predict", "post"),
        ("/api/models/{name}/predict", "post"),
        ("/api/admin/models/{name}/versions", "post"),
        ("/api/admin/models/{name}", "patch"),
        ("/api/admin/models/{name}/aliases/{alias}", "put"),
        ("/api/admin/models/{name}/aliases/{alias}", "delete"),
        ("/api/admin/models/{name}/versions/{version}", "delete"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
    ]:
        assert method in paths[path], (path, method)
    upload_op = paths["/api/admin/models/{name}/versions"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert {"201", "401", "403", "415", "422"} <= set(upload_op["responses"])
    assert {"200", "404", "422", "413"} <= set(paths["/api/predict"]["post"]["responses"])


def test_docs_served_offline(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "swagger-ui" in html and "/openapi.json" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assets = re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', html)
    assert "/docs/static/swagger-ui-bundle.js" in assets
    for asset in assets:
        with client.get(asset) as response:
            assert response.status_code == 200, asset
