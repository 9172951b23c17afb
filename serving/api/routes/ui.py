"""The pages for people: the models list (`/`) and the workbench of one model (`/ui/models/<name>`).

How the pages get their data (a decision, and why):

- Jinja renders the layout: the headings, the landmarks, the empty sections the JavaScript fills.
  No registry data is ever written into the markup itself, so there is one way a form, a table or
  a version picker is built: by the page's JavaScript (static/workbench.js, static/models.js)
  from the JSON the API answers.
- Without `MAAS_API_TOKEN`, the registry is open to anyone who can reach the page, so the view
  inlines the JSON the page would fetch first (`GET /api/models/<name>` and
  `GET /api/models/<name>/versions/<selector>`, dumped by the very marshmallow schemas those
  routes answer with) in a `<script type="application/json">`: the first paint needs no second
  round trip, and the JavaScript cannot tell the two sources apart.
- With `MAAS_API_TOKEN`, the pages stay open (they are HTML and JavaScript, no data) but hold no
  registry data at all: not even whether a model exists. The JavaScript fetches everything
  through the API with the token the person types once (kept in sessionStorage: this tab only).

Everything a page does after its first paint (predict, what-if, CSV, switching versions) goes
through the contract's API, as any other client's calls do.

Static files are served here too, at `/ui/static/`, each URL carrying a digest of the file's
content (`?v=`): such a URL can be cached for a year, and a changed file gets a new URL. The
stylesheets (ours and uPlot's, 10 KB together) are written into each page instead: a stylesheet
that has to be fetched holds the first paint back by a round trip, and the scripts are deferred,
so a page paints as soon as its HTML has arrived.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template, request, send_from_directory, url_for
from markupsafe import Markup
from werkzeug import Response as BaseResponse
from werkzeug.exceptions import HTTPException, NotFound

from registry import service
from registry.errors import RegistryError
from registry.names import LATEST
from serving.api.context import runtime
from serving.api.errors import registry_error_status
from serving.api.routes.models import model_detail
from serving.api.schemas import ModelDetailSchema, ModelSummarySchema, VersionSchema

PACKAGE = Path(__file__).resolve().parent.parent
STATIC = PACKAGE / "static"
# A year: the longest lifetime caches honour (RFC 9111 recommends no more).
STATIC_MAX_AGE_S = 365 * 24 * 3600
# The page lists every model in one table (the filter box works on it); the API's largest page.
MODELS_PAGE_SIZE = 1000
# Same host only, no inline script (the inline JSON is data: CSP does not apply to it).
# uPlot sizes its elements with style attributes: styles may be inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

blp = Blueprint("ui", __name__, template_folder=str(PACKAGE / "templates"))


@functools.cache
def asset_digest(filename: str) -> str:
    """The first 16 hex digits of a static file's sha256 (files are immutable while a worker runs)."""
    return hashlib.sha256((STATIC / filename).read_bytes()).hexdigest()[:16]


@functools.cache
def inline_asset(filename: str) -> Markup:
    """A static stylesheet's text, to write into a page's <style> (read once per worker)."""
    text = (STATIC / filename).read_text(encoding="utf-8")
    if "</" in text:
        raise ValueError(f"{filename} cannot be written into a <style> element")
    return Markup(text)


def asset_url(filename: str) -> str:
    """The URL of a static file, with its content digest: cacheable for a year."""
    return url_for("ui.static_file", filename=filename, v=asset_digest(filename))


@blp.app_context_processor
def _page_helpers() -> dict[str, Any]:
    return {"asset_url": asset_url, "inline_asset": inline_asset}


@blp.before_request
def _started() -> None:
    g.page_started = time.perf_counter()


@blp.after_request
def _page_headers(response: Response) -> Response:
    # The app's own time for the page (bench/bench_pages.py reads it in the browser).
    started = g.get("page_started")
    if started is not None:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def default_selector(aliases: dict[str, int]) -> str:
    """The version a model page opens on: the `production` alias, else the first alias by name,
    else `latest` (static/workbench.js picks the same when it has to fetch the model itself)."""
    if "production" in aliases:
        return "production"
    return min(aliases) if aliases else LATEST


@blp.get("/")
def models_page() -> str:
    """The registered models, with a filter box."""
    settings = runtime().settings
    initial = None
    if not settings.api_token:
        with runtime().db.read() as session:
            models, _ = service.list_models(session, offset=0, limit=MODELS_PAGE_SIZE)
        initial = {"models": ModelSummarySchema(many=True).dump(models)}
    return render_template("models.html", initial=initial, page={"token": bool(settings.api_token)})


@blp.get("/ui/")
def ui_root() -> BaseResponse:
    return redirect(url_for("ui.models_page"))


@blp.get("/ui/models/<name>")
def model_page(name: str) -> str:
    """One model's workbench: predict, what-if, portfolio, version detail."""
    settings = runtime().settings
    asked = request.args.get("version") or None
    # The charts' scripts (uPlot is half of all the pages' bytes) load when the page has painted.
    charts = [asset_url("vendor/uPlot.iife.min.js"), asset_url("whatif-chart.js")]
    page: dict[str, Any] = {"model": name, "selector": asked, "token": bool(settings.api_token), "charts": charts}
    initial = None
    if not settings.api_token:
        with runtime().db.read() as session:
            detail = ModelDetailSchema().dump(model_detail(session, name))
            selector = asked or default_selector(detail["aliases"])
            version = VersionSchema().dump(service.get_version(session, name, selector))
        page["selector"] = selector
        initial = {"model": detail, "version": version}
    return render_template("model.html", name=name, initial=initial, page=page)


@blp.get("/ui/static/<path:filename>")
def static_file(filename: str) -> Response:
    """A static file; cached for a year when asked for by its current digest, else revalidated."""
    current = request.args.get("v")
    response = send_from_directory(STATIC, filename, max_age=None)
    if current is not None and current == asset_digest(filename):
        response.cache_control.max_age = STATIC_MAX_AGE_S
        response.cache_control.public = True
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    return response


@blp.get("/ui/<path:anything>")
def unknown_page(anything: str) -> Response:
    raise NotFound()


def error_page(code: int, message: str) -> tuple[str, int]:
    page = {"token": bool(runtime().settings.api_token)}
    return render_template("error.html", code=code, message=message, initial=None, page=page), code


@blp.errorhandler(RegistryError)
def _registry_error(error: RegistryError) -> tuple[str, int]:
    """An unknown model or version answers a page (the API's routes keep answering JSON)."""
    return error_page(registry_error_status(error), error.message)


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    code = error.code or 500
    message = "There is no such page." if code == 404 else (error.description or "")
    return error_page(code, message)
