"""The pages through the Flask test client: what the HTML holds (and does not), their errors,
the static files and their cache headers. tests/system/test_browser.py runs them in a browser."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from serving.api.routes.ui import STATIC, STATIC_MAX_AGE_S, asset_digest, inline_asset
from tests.support import ADMIN, CREDIT_ROW, upload

ASSET_BUDGET_BYTES = 300 * 1024


@pytest.fixture
def registry(client: Any, credit_pipeline: Any) -> Any:
    metadata = {"description": "Default <b>risk</b>", "example": CREDIT_ROW, "aliases": ["production"]}
    assert upload(client, "credit", credit_pipeline, metadata).status_code == 201
    assert upload(client, "credit", credit_pipeline, {"description": "second"}).status_code == 201
    return client


def inline_json(html: str, element_id: str) -> Any:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert found, f"no #{element_id} in the page"
    return json.loads(found.group(1))


def test_the_models_page_inlines_what_the_api_answers(registry: Any) -> None:
    page = registry.get("/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert inline_json(page.text, "initial-data") == {"models": registry.get("/api/models").json}
    assert "<b>risk</b>" not in page.text  # JSON in the page is escaped for HTML
    assert inline_json(page.text, "page-config") == {"token": False}


def test_a_model_page_inlines_the_model_and_the_chosen_version(registry: Any) -> None:
    page = registry.get("/ui/models/credit")
    assert page.status_code == 200
    initial = inline_json(page.text, "initial-data")
    assert initial["model"] == registry.get("/api/models/credit").json
    # It opens on the production alias (aliases first), as the API answers that version.
    assert initial["version"] == registry.get("/api/models/credit/versions/production").json
    assert initial["version"]["example"] == CREDIT_ROW
    config = inline_json(page.text, "page-config")
    assert (config["model"], config["selector"], config["token"]) == ("credit", "production", False)

    chosen = registry.get("/ui/models/credit?version=2")
    assert inline_json(chosen.text, "initial-data")["version"] == registry.get("/api/models/credit/versions/2").json
    assert inline_json(chosen.text, "page-config")["selector"] == "2"


def test_without_aliases_the_page_opens_on_latest(client: Any, regressor: Any) -> None:
    assert upload(client, "reg", regressor).status_code == 201
    page = client.get("/ui/models/reg")
    assert inline_json(page.text, "page-config")["selector"] == "latest"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/ui/models/nothing", "Model 'nothing' not found."),
        ("/ui/models/Not%20A%20Name", "not found"),
        ("/ui/models/credit%2Fversions", "not found"),
        ("/ui/models/credit?version=9", "no version or alias '9'"),
        ("/ui/models/credit?version=staging", "no version or alias 'staging'"),
        ("/ui/nothing", "There is no such page."),
        ("/ui/models/", "There is no such page."),
        ("/ui/static/nothing.js", "There is no such page."),
        ("/ui/static/../routes/ui.py", "There is no such page."),
    ],
)
def test_unknown_pages_are_html_404s(registry: Any, path: str, message: str) -> None:
    page = registry.get(path)
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert message in html.unescape(page.text)
    assert "Traceback" not in page.text


@pytest.mark.parametrize(
    "path", ["/api/models/nothing", "/nothing", "/static/app.py", "/api/models/credit/versions/9", "/v2/nothing"]
)
def test_everything_else_keeps_its_json_errors(registry: Any, path: str) -> None:
    answer = registry.get(path)
    assert answer.status_code == 404
    assert answer.mimetype == "application/json"
    if path.startswith("/v2/"):  # the Open Inference Protocol's own shape
        assert list(answer.json) == ["error"] and answer.json["error"]
    else:
        assert answer.json["code"] == 404 and answer.json["message"]


def test_with_an_api_token_the_pages_hold_no_registry_data(make_app: Any, credit_pipeline: Any) -> None:
    client = make_app(api_token="reader").test_client()
    assert upload(client, "credit", credit_pipeline, {"description": "Default risk"}).status_code == 201
    for path in ("/", "/ui/models/credit", "/ui/models/nothing"):
        page = client.get(path)
        assert page.status_code == 200, path  # open, and saying nothing of what exists
        assert "initial-data" not in page.text
        assert "Default risk" not in page.text and "sklearn" not in page.text
        assert inline_json(page.text, "page-config")["token"] is True
    assert client.get("/api/models").status_code == 401
    assert client.get("/api/models", headers={"Authorization": "Bearer reader"}).status_code == 200
    assert client.get("/api/models", headers=ADMIN).status_code == 200


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html)


def test_static_files_are_cached_by_digest_and_within_budget(registry: Any) -> None:
    model_page = registry.get("/ui/models/credit").text
    # The charts' scripts load after the first paint, from the URLs the page names.
    charts = inline_json(model_page, "page-config")["charts"]
    assert "/ui/static/vendor/uPlot.iife.min.js?v=" + asset_digest("vendor/uPlot.iife.min.js") in charts
    urls = sorted({*charts, *asset_urls(model_page), *asset_urls(registry.get("/").text)})
    total = len(inline_asset("maas.css")) + len(inline_asset("vendor/uPlot.min.css"))  # written into the pages
    for url in urls:
        answer = registry.get(url)
        assert answer.status_code == 200, url
        cache = answer.headers["Cache-Control"]
        assert f"max-age={STATIC_MAX_AGE_S}" in cache and "immutable" in cache, (url, cache)
        total += len(answer.data)
        answer.close()
    assert total < ASSET_BUDGET_BYTES
    every_file = sum(p.stat().st_size for p in STATIC.rglob("*") if p.suffix in {".js", ".css"})
    assert every_file < ASSET_BUDGET_BYTES

    stale = registry.get("/ui/static/page.js?v=0000")
    assert stale.status_code == 200 and "no-cache" in stale.headers["Cache-Control"]
    stale.close()


def test_pages_allow_no_other_host(registry: Any) -> None:
    page = registry.get("/ui/models/credit")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)


def test_every_control_in_the_templates_has_a_label() -> None:
    templates = Path(STATIC.parent / "templates")
    for template in templates.glob("*.html"):
        text = template.read_text()
        labelled = set(re.findall(r'<label for="([^"]+)"', text))
        for control in re.findall(r"<(?:input|select|textarea)\b[^>]*>", text):
            found = re.search(r'id="([^"]+)"', control)
            assert found and found.group(1) in labelled, f"{template.name}: {control}"
