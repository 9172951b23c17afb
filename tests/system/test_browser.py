"""The pages in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by playwright)
against a live `maas serve` over HTTP, on SQLite, and on PostgreSQL when MAAS_TEST_DATABASE_URL is
set. Every number the pages show is checked against the model itself, trained here.

One server per module and database, two versions of a ColumnTransformer pipeline registered in
it; one browser per module, a fresh browser context (its own sessionStorage) per test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.support import (
    ADMIN_TOKEN,
    Live,
    database_of_its_own,
    joblib_bytes,
    live_server,
    loans,
    upload_live,
)

CHROMIUM = Path("/usr/bin/chromium")
# .ci/run sets it: there a missing browser or playwright fails the run instead of skipping these tests.
REQUIRED = os.environ.get("MAAS_TEST_BROWSER") == "required"


def _unavailable() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]' installs it)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"
    return None


if (_reason := _unavailable()) is not None:
    if REQUIRED:
        raise RuntimeError(f"MAAS_TEST_BROWSER=required, but {_reason}")
    pytest.skip(_reason, allow_module_level=True)

from playwright import sync_api  # noqa: E402 - only once it is known to be installed

pytestmark = pytest.mark.browser

MODEL = "credit"
API_TOKEN = "browser-api-token"
TIMEOUT_MS = 30_000
V1_EXAMPLE = {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}
V2_EXAMPLE = [{"age": 52, "income": 61000.0, "gender": "female", "region": "south"}]
# The second version declares its schema: bounds, an integer, an optional feature (imputed).
V2_FEATURES = [
    {"name": "age", "type": "integer", "minimum": 18, "maximum": 100},
    {"name": "income", "type": "number", "minimum": 0, "maximum": 250000, "required": False},
    {"name": "gender", "type": "string", "allowed": ["female", "male"]},
    {"name": "region", "type": "string", "allowed": ["east", "north", "south"]},
]


# -- the models, the server, the browser ------------------------------------------------------
def second_pipeline() -> Pipeline:
    """Another ColumnTransformer pipeline on the same columns; it imputes a missing income."""
    frame, target = loans(rows=400, seed=11)
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prepare = ColumnTransformer([("num", numeric, ["age", "income"]), ("cat", OneHotEncoder(), ["gender", "region"])])
    return Pipeline([("prepare", prepare), ("clf", LogisticRegression(C=0.2, max_iter=500))]).fit(frame, target)


@dataclass
class Site:
    """A live server with `credit` v1 (alias production, inferred schema) and v2 (declared schema)."""

    live: Live
    kind: str
    root: Path
    database_url: str
    v1: Pipeline
    v2: Pipeline

    @property
    def url(self) -> str:
        return self.live.server.url

    def model_for(self, version: int) -> Pipeline:
        return {1: self.v1, 2: self.v2}[version]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, credit_pipeline: Any
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp(f"browser-{request.param}")
    v2 = second_pipeline()
    with (
        database_of_its_own(request.param, root) as database_url,
        live_server(request.param, root, database_url, MAAS_ADMIN_TOKEN=ADMIN_TOKEN) as live,
    ):
        first = upload_live(
            live.server,
            MODEL,
            joblib_bytes(credit_pipeline),
            {"description": "Default risk", "example": V1_EXAMPLE, "aliases": ["production"], "tags": {"team": "risk"}},
        )
        assert first.status_code == 201, first.text
        second = upload_live(
            live.server,
            MODEL,
            joblib_bytes(v2),
            {"description": "Default risk, retrained", "example": V2_EXAMPLE, "features": V2_FEATURES},
        )
        assert second.status_code == 201, second.text
        yield Site(live, request.param, root, database_url, credit_pipeline, v2)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """A page in a context of its own, with every request it made and every script error it hit."""

    page: Any
    site: Site
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.page.goto(self.site.url + path)

    def open_model(self, query: str = "") -> None:
        self.open(f"/ui/models/{MODEL}{query}")
        self.page.wait_for_selector("body[data-ready]")

    def json_attribute(self, selector: str, name: str = "data-response") -> Any:
        value = self.page.get_attribute(selector, name)
        assert value is not None, f"{selector} has no {name}"
        return json.loads(value)

    def predict(self) -> Any:
        self.page.click("#predict-button")
        self.page.wait_for_selector("#prediction[data-status]")
        return self.json_attribute("#prediction")

    def run_whatif(self) -> Any:
        self.page.click("#whatif-run")
        self.page.wait_for_selector("#whatif-result[data-status]")
        return self.json_attribute("#whatif-result")

    def form_record(self) -> dict[str, Any]:
        """The record the form's last predict request sent, as the page built it."""
        return self.page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('#predict-form [name]')].map(e => [e.name,"
            " e.type === 'checkbox' ? e.checked : e.value]))"
        )


@pytest.fixture
def open_tab(browser: Any, site: Site) -> Iterator[Callable[..., Tab]]:
    """Open a fresh browser context and page (width x height) on the site."""
    tabs: list[tuple[Any, Tab]] = []

    def open_(width: int = 1280, height: int = 900, target: Site | None = None, **options: Any) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True, **options)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        tab = Tab(page, target or site)
        page.on("request", lambda request: tab.requests.append(request.url))
        page.on("pageerror", lambda error: tab.errors.append(str(error)))
        page.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
        tabs.append((context, tab))
        return tab

    yield open_
    for context, tab in tabs:
        context.close()
        # Chromium logs every answer of 4xx as an error; the pages handle those (tested above).
        unexpected = [e for e in tab.errors if not e.startswith("Failed to load resource: the server responded")]
        assert unexpected == [], "script errors on the page"


def frame_of(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([record])


def prediction_of(model: Pipeline, record: dict[str, Any]) -> Any:
    return model.predict(frame_of(record)).tolist()[0]


def probabilities_of(model: Pipeline, record: dict[str, Any]) -> dict[str, float]:
    row = model.predict_proba(frame_of(record))[0]
    return {str(label): float(p) for label, p in zip(model.classes_, row, strict=True)}


def sent_json(request: Any) -> Any:
    return json.loads(request.post_data)


# -- the form ------------------------------------------------------------------------------------
def test_the_form_predicts_what_the_model_predicts(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    tab.open_model()
    page = tab.page
    assert page.input_value("#version-picker") == "production"
    # Pre-filled from v1's example; one control per feature, named after it.
    assert float(page.input_value('input[name="age"]')) == V1_EXAMPLE["age"]
    assert float(page.input_value('input[name="income"]')) == V1_EXAMPLE["income"]
    assert page.eval_on_selector('select[name="gender"]', "e => e.selectedOptions[0].text") == "male"
    assert page.eval_on_selector('select[name="region"]', "e => e.selectedOptions[0].text") == "north"

    page.fill('input[name="age"]', "47")
    page.fill('input[name="income"]', "38500.5")
    page.select_option('select[name="gender"]', label="female")
    page.select_option('select[name="region"]', label="east")
    record = {"age": 47, "income": 38500.5, "gender": "female", "region": "east"}
    with page.expect_request(lambda r: r.url.endswith("/versions/production/predict")) as sent:
        answer = tab.predict()
    assert sent_json(sent.value) == {"data": record, "return_probabilities": True}

    expected = prediction_of(site.v1, record)
    probabilities = probabilities_of(site.v1, record)
    assert answer["version"] == 1
    assert answer["predictions"] == [expected]
    assert answer["probabilities"][0] == pytest.approx(probabilities, abs=1e-12)
    # What a person sees: the prediction, the version that answered, one bar per class.
    assert page.inner_text(".prediction-value") == str(expected)
    assert "v1" in page.inner_text(".answered-by")
    for label, p in probabilities.items():
        assert page.inner_text(f'.bar-row[data-class="{label}"] .bar-value') == f"{p * 100:.1f} %"
    assert page.get_attribute(".bar-row.predicted", "data-class") == str(expected)


def test_a_feature_that_accepts_unseen_values_is_free_text_with_suggestions(
    open_tab: Callable[..., Tab], site: Site, lenient_credit_pipeline: Pipeline
) -> None:
    """OneHotEncoder(handle_unknown="ignore"): the form suggests the fitted categories and takes another."""
    name = "lenient-credit"
    if site.live.server.get(f"/api/models/{name}").status_code == 404:
        created = upload_live(site.live.server, name, joblib_bytes(lenient_credit_pipeline), {"example": V1_EXAMPLE})
        assert created.status_code == 201, created.text
    tab = open_tab()
    tab.open(f"/ui/models/{name}")
    page = tab.page
    page.wait_for_selector("body[data-ready]")
    assert page.query_selector('select[name="region"]') is None
    listed = page.eval_on_selector('input[name="region"]', "e => [...e.list.options].map(o => o.value)")
    assert listed == ["east", "north", "south"]
    assert page.input_value('input[name="region"]') == V1_EXAMPLE["region"]
    assert "others accepted" in page.inner_text('[data-feature="region"] .hint')
    page.fill('input[name="region"]', "far west")
    answer = tab.predict()
    record = {**V1_EXAMPLE, "region": "far west"}
    assert answer["predictions"] == [prediction_of(lenient_credit_pipeline, record)]
    assert answer["probabilities"][0] == pytest.approx(probabilities_of(lenient_credit_pipeline, record), abs=1e-12)


def test_switching_versions_follows_the_new_schema(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    tab.open_model()
    page = tab.page
    assert page.get_attribute('input[name="age"]', "step") == "any"
    page.select_option("#version-picker", "latest")
    page.wait_for_selector('body[data-version="2"]')
    assert page.url.endswith("?version=latest")

    age = page.locator('input[name="age"]')
    assert (age.get_attribute("type"), age.get_attribute("step")) == ("number", "1")
    assert (age.get_attribute("min"), age.get_attribute("max")) == ("18", "100")
    assert page.text_content('.field[data-feature="income"] .optional-tag') == "optional"
    assert page.locator('.field[data-feature="age"] .optional-tag').count() == 0
    labels = page.eval_on_selector_all("#predict-form [name]", "els => els.map(e => e.labels[0].htmlFor === e.id)")
    assert labels == [True] * 4
    # The age control changed kind (number -> integer): v2's example; income kept what the form held.
    assert page.input_value('input[name="age"]') == str(V2_EXAMPLE[0]["age"])

    with page.expect_request(lambda r: r.url.endswith("/versions/latest/predict")) as sent:
        answer = tab.predict()
    record = sent_json(sent.value)["data"]
    assert answer["version"] == 2
    assert answer["predictions"] == [prediction_of(site.v2, record)]
    # the page asks for no engine: v2's ONNX graph answers (float32 after its one-hot encoding), within 1e-5
    assert answer["engine"] == "onnx"
    assert answer["probabilities"][0] == pytest.approx(probabilities_of(site.v2, record), abs=1e-5)
    assert "v2" in page.inner_text(".answered-by")

    # An optional feature left empty is sent as missing, and v2 imputes it.
    page.fill('input[name="income"]', "")
    with page.expect_request(lambda r: r.url.endswith("/predict")) as sent:
        answer = tab.predict()
    record = sent_json(sent.value)["data"]
    assert record["income"] is None
    assert answer["predictions"] == [prediction_of(site.v2, {**record, "income": math.nan})]


def test_a_value_out_of_range_is_shown_beside_its_field(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    tab.open_model("?version=2")
    page = tab.page
    page.fill('input[name="age"]', "150")
    answer = tab.predict()
    assert page.get_attribute("#prediction", "data-status") == "422"
    messages = answer["errors"]["json"]["data"]
    assert list(messages) == ["age"]
    assert page.inner_text('.field[data-feature="age"] .field-error') == " ".join(messages["age"])
    assert page.get_attribute('input[name="age"]', "aria-invalid") == "true"
    for other in ("income", "gender", "region"):
        assert page.inner_text(f'.field[data-feature="{other}"] .field-error') == ""
    assert page.evaluate("document.activeElement.name") == "age"

    page.fill('input[name="age"]', "64")
    answer = tab.predict()
    assert answer["version"] == 2
    assert page.inner_text('.field[data-feature="age"] .field-error') == ""


# -- what if ---------------------------------------------------------------------------------------
def chart_points(tab: Tab, feature: str) -> tuple[list[list[Any]], list[Any] | None]:
    """The series a feature's chart draws (x first) and, for categories, what x = 0, 1 ... stand for."""
    drawn = tab.page.eval_on_selector(
        f'figure[data-feature="{feature}"] .chart', "el => ({data: el.chart.data, categories: el.categories})"
    )
    return drawn["data"], drawn["categories"]


def drawn_pairs(xs: list[Any], ys: list[Any], categories: list[Any] | None) -> list[tuple[Any, Any]]:
    return [(categories[int(x)] if categories else x, y) for x, y in zip(xs, ys, strict=True) if y is not None]


def test_whatif_draws_the_apis_points_and_its_flips_flip(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    tab.open_model()
    page = tab.page
    page.fill('input[name="income"]', "47000")
    with page.expect_request(lambda r: r.url.endswith("/versions/production/whatif")) as sent:
        shown = tab.run_whatif()
    body = sent_json(sent.value)
    direct = site.live.server.post(f"/api/models/{MODEL}/versions/production/whatif", json=body)
    assert direct.status_code == 200, direct.text
    assert shown == direct.json()
    record = body["data"]
    assert record == {"age": 35, "income": 47000, "gender": "male", "region": "north"}

    # Ranked by swing, as the API answered; one figure each.
    names = page.eval_on_selector_all("figure.whatif-feature", "els => els.map(e => e.dataset.feature)")
    assert names == [f["name"] for f in shown["features"]]
    swings = [f["swing"] for f in shown["features"]]
    assert swings == sorted(swings, reverse=True)

    for feature in shown["features"]:
        series, categories = chart_points(tab, feature["name"])
        xs, curve, baseline = series
        # Numbers along a sorted axis; categories in the order the API swept them.
        expected = list(zip(feature["values"], feature["scores"], strict=True))
        if categories is None:
            expected.sort(key=lambda pair: pair[0])
        assert drawn_pairs(xs, curve, categories) == expected
        # The baseline: one point, at the form's value and the baseline's score.
        assert drawn_pairs(xs, baseline, categories) == [(record[feature["name"]], shown["baseline"]["score"])]

    # Each flip shown really flips the model's answer, and is the API's.
    baseline_prediction = prediction_of(site.v1, record)
    assert shown["baseline"]["prediction"] == baseline_prediction
    flips = page.eval_on_selector_all(
        "#flips li", "els => els.map(e => [e.dataset.feature, JSON.parse(e.dataset.value)])"
    )
    assert flips == [[f["name"], f["flip"]["value"]] for f in shown["features"] if f["flip"]]
    assert flips, "no flip within the swept ranges: the test's record should have one"
    for name, value in flips:
        assert prediction_of(site.v1, {**record, name: value}) != baseline_prediction, name

    # "Put it in the form" puts the flip in the form and predicts: the answer changes.
    name, value = flips[0]
    with page.expect_request(lambda r: r.url.endswith("/predict")) as sent:
        page.click(f'#flips li[data-feature="{name}"] button')
    page.wait_for_selector("#prediction[data-status]")
    assert sent_json(sent.value)["data"] == {**record, name: value}
    answer = tab.json_attribute("#prediction")
    assert answer["predictions"] == [prediction_of(site.v1, {**record, name: value})] != [baseline_prediction]


def test_whatif_overlays_a_second_version(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    tab.open_model()
    page = tab.page
    page.select_option("#whatif-compare", "latest")
    with page.expect_request(lambda r: r.url.endswith("/versions/latest/whatif")) as sent:
        shown = tab.run_whatif()
    compared = tab.json_attribute("#whatif-result", "data-compare-response")
    direct = site.live.server.post(f"/api/models/{MODEL}/versions/latest/whatif", json=sent_json(sent.value))
    assert compared == direct.json()
    assert (shown["version"], compared["version"]) == (1, 2)
    by_name = {f["name"]: f for f in compared["features"]}
    for feature in shown["features"]:
        series, categories = chart_points(tab, feature["name"])
        assert len(series) == 4  # x, v1, v2, the baseline
        other = by_name[feature["name"]]
        assert sorted(drawn_pairs(series[0], series[2], categories), key=repr) == sorted(
            zip(other["values"], other["scores"], strict=True), key=repr
        )


# -- portfolio -------------------------------------------------------------------------------------
def test_a_csv_round_trip_gives_the_models_predictions(
    open_tab: Callable[..., Tab], site: Site, tmp_path: Path
) -> None:
    frame, _ = loans(rows=25, seed=5)
    frame["income"] = frame["income"].round(2)
    path = tmp_path / "applicants.csv"
    frame.to_csv(path, index=False)
    tab = open_tab()
    tab.open_model()
    page = tab.page
    page.set_input_files("#portfolio-file", str(path))
    with page.expect_request(lambda r: "/versions/production/predict" in r.url) as sent:
        page.click("#portfolio-run")
    page.wait_for_selector("#portfolio-result[data-status]")
    assert page.get_attribute("#portfolio-result", "data-status") == "200", page.inner_text("#portfolio-result")
    assert sent.value.headers["content-type"] == "text/csv"
    assert sent.value.headers["accept"] == "text/csv"
    assert "return_probabilities=true" in sent.value.url

    with page.expect_download() as download:
        page.click("#portfolio-download")
    scored = pd.read_csv(download.value.path())
    assert scored["prediction"].tolist() == site.v1.predict(frame).tolist()
    for i, label in enumerate(site.v1.classes_):
        assert scored[f"probability_{label}"].to_numpy() == pytest.approx(site.v1.predict_proba(frame)[:, i])
    assert scored[list(frame.columns)].to_dict("records") == frame.to_dict("records")
    # The table on the page shows the same rows.
    shown = page.eval_on_selector_all("#portfolio-table tbody tr", "rows => rows.map(r => r.cells.length)")
    assert len(shown) == len(frame)

    # Pasted text instead of a file, on the version the picker names.
    page.select_option("#version-picker", "2")
    page.wait_for_selector('body[data-version="2"]')
    page.set_input_files("#portfolio-file", [])  # a chosen file wins over the text
    page.fill("#portfolio-text", frame.head(3).to_csv(index=False))
    page.click("#portfolio-run")
    page.wait_for_selector("#portfolio-result[data-status]")
    with page.expect_download() as download:
        page.click("#portfolio-download")
    scored = pd.read_csv(download.value.path())
    assert scored["prediction"].tolist() == site.v2.predict(frame.head(3)).tolist()


# -- keyboard, phone width, hosts, token -------------------------------------------------------------
def tab_to(tab: Tab, selector: str, limit: int = 150, key: str = "Tab") -> None:
    """Press Tab (or `key`) until the focus is on `selector` (fails after `limit` presses)."""
    for _ in range(limit):
        tab.page.keyboard.press(key)
        if tab.page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def focus_ring(tab: Tab) -> tuple[str, float]:
    style = tab.page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }"
    )
    return style[0], float(style[1].removesuffix("px"))


def test_the_whole_flow_by_keyboard(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    page = tab.page
    tab.open("/")
    page.wait_for_selector("#models-table tbody tr")
    tab_to(tab, "#model-filter")
    page.keyboard.type("cred")
    tab_to(tab, f'a[href="/ui/models/{MODEL}"]')
    assert focus_ring(tab)[0] != "none" and focus_ring(tab)[1] >= 2
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-ready]")

    # Every control has a label bound to it.
    unlabelled = page.eval_on_selector_all(
        "input, select, textarea", "els => els.filter(e => e.type !== 'hidden' && !e.labels.length).map(e => e.id)"
    )
    assert unlabelled == []

    tab_to(tab, 'input[name="age"]')
    assert focus_ring(tab)[0] != "none"
    page.keyboard.press("Control+A")
    page.keyboard.type("58")
    tab_to(tab, 'select[name="region"]')
    page.keyboard.press("ArrowDown")  # north -> south
    assert page.eval_on_selector('select[name="region"]', "e => e.selectedOptions[0].text") == "south"
    tab_to(tab, "#predict-button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#prediction[data-status]")
    record = {"age": 58, "income": 42000, "gender": "male", "region": "south"}
    assert tab.json_attribute("#prediction")["predictions"] == [prediction_of(site.v1, record)]

    tab_to(tab, "#whatif-run")
    page.keyboard.press("Space")
    page.wait_for_selector("#whatif-result[data-status]")
    tab_to(tab, "#flips li button")
    flip = page.evaluate("document.activeElement.closest('li').dataset.feature")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#prediction")).to_be_focused()
    page.wait_for_selector("#prediction[data-status]")
    changed = tab.json_attribute("#prediction")["predictions"]
    assert changed != [prediction_of(site.v1, record)], flip

    # The version picker by keyboard: the form follows.
    tab_to(tab, "#version-picker", key="Shift+Tab")
    page.keyboard.press("ArrowDown")  # production -> latest
    page.wait_for_selector('body[data-version="2"]')
    assert page.get_attribute('input[name="age"]', "step") == "1"

    # A portfolio typed in, scored and downloaded by keyboard (on v2, the picker's choice now).
    frame, _ = loans(rows=3, seed=8)
    frame["age"] = frame["age"].astype(int)  # v2 takes integer ages
    tab_to(tab, "#portfolio-text")
    page.keyboard.type(frame.to_csv(index=False, float_format="%.2f"))
    tab_to(tab, "#portfolio-run")
    page.keyboard.press("Enter")
    page.wait_for_selector("#portfolio-download")
    tab_to(tab, "#portfolio-download")
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    scored = pd.read_csv(download.value.path())
    assert scored["prediction"].tolist() == site.v2.predict(scored[list(frame.columns)]).tolist()

    tab_to(tab, "#copy-curl")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#copy-status")).not_to_have_text("")


def test_phone_width_has_no_sideways_scroll(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab(width=390, height=844, is_mobile=True, has_touch=True)
    page = tab.page

    def width() -> int:
        return int(page.evaluate("document.documentElement.scrollWidth"))

    tab.open("/")
    page.wait_for_selector("#models-table tbody tr")
    assert width() <= 390
    tab.open_model()
    assert width() <= 390
    tab.predict()
    tab.run_whatif()
    page.wait_for_selector("figure.whatif-feature .chart canvas")
    page.fill("#portfolio-text", loans(rows=5, seed=3)[0].to_csv(index=False))
    page.click("#portfolio-run")
    page.wait_for_selector("#portfolio-result[data-status]")
    assert width() <= 390
    page.select_option("#version-picker", "latest")
    page.wait_for_selector('body[data-version="2"]')
    page.fill('input[name="age"]', "150")
    tab.predict()
    assert width() <= 390


def test_no_request_leaves_for_another_host(open_tab: Callable[..., Tab], site: Site) -> None:
    tab = open_tab()
    page = tab.page
    tab.open("/")
    page.wait_for_selector("#models-table tbody tr")
    tab.open_model()
    tab.predict()
    page.select_option("#whatif-compare", "latest")
    tab.run_whatif()
    page.fill("#portfolio-text", loans(rows=4, seed=2)[0].to_csv(index=False))
    page.click("#portfolio-run")
    page.wait_for_selector("#portfolio-result[data-status]")
    tab.open("/ui/models/nothing-here")
    tab.open("/docs")
    page.wait_for_load_state("networkidle")

    origin = urlsplit(site.url)
    foreign = [u for u in tab.requests if urlsplit(u).netloc != origin.netloc and not u.startswith(("data:", "blob:"))]
    assert foreign == []
    # What the pages themselves call goes through the contract's API.
    paths = {urlsplit(u).path for u in tab.requests if urlsplit(u).netloc == origin.netloc}
    ui_calls = {p for p in paths if not p.startswith(("/ui/", "/docs")) and p not in {"/", "/openapi.json"}}
    assert ui_calls and all(p.startswith("/api/") for p in ui_calls), ui_calls


def test_with_an_api_token_the_page_asks_once_and_works(open_tab: Callable[..., Tab], site: Site) -> None:
    with live_server(site.kind, site.root, site.database_url, log="token-server.log", MAAS_API_TOKEN=API_TOKEN) as live:
        guarded = Site(live, site.kind, site.root, site.database_url, site.v1, site.v2)
        tab = open_tab(target=guarded)
        page = tab.page
        page.add_init_script(
            "window.asked = 0; const show = HTMLDialogElement.prototype.showModal;"
            " HTMLDialogElement.prototype.showModal = function () { window.asked++; return show.call(this); };"
        )
        html = live.server.get(f"/ui/models/{MODEL}")
        assert html.status_code == 200
        assert "initial-data" not in html.text and "Default risk" not in html.text  # no registry data inline
        tab.open(f"/ui/models/{MODEL}")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", API_TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-ready]")
        assert page.inner_text("#model-description") == "Default risk"
        answer = tab.predict()
        assert answer["predictions"] == [prediction_of(site.v1, V1_EXAMPLE)]
        tab.run_whatif()
        page.select_option("#version-picker", "2")
        page.wait_for_selector('body[data-version="2"]')
        assert page.evaluate("window.asked") == 1
        assert page.evaluate("sessionStorage.getItem('maas.api-token')") == API_TOKEN

        # Kept for this tab: the list page and a reload ask nothing more.
        tab.open("/")
        page.wait_for_selector("#models-table tbody tr")
        assert page.evaluate("window.asked") == 0
        # Another tab (a context of its own) has no token: it asks.
        other = open_tab(target=guarded)
        other.open(f"/ui/models/{MODEL}")
        other.page.wait_for_selector("#token-dialog[open]")


# -- /docs ---------------------------------------------------------------------------------------
def test_docs_authorize_makes_try_it_out_send_the_token(open_tab: Callable[..., Tab], site: Site) -> None:
    """Swagger UI's "Authorize", then "Try it out" on a read and on an admin operation: both send
    the bearer token (the operations declare their security), so the admin one answers 404 for
    an unknown model, not 401."""
    tab = open_tab()
    page = tab.page
    tab.open("/docs")
    page.click("button.authorize")
    page.fill(".auth-container input", ADMIN_TOKEN)
    page.click(".auth-container button.authorize")
    page.click("button.btn-done")
    for method, path, name, status in (
        ("get", "/api/models", None, 200),
        ("delete", "/api/admin/models/{name}", "no-such-model", 404),
    ):
        block = page.locator(f".opblock-{method}:has(.opblock-summary-path[data-path='{path}'])").first
        block.locator(".opblock-summary").first.click()
        block.locator("button.try-out__btn").click()
        if name is not None:
            block.locator("input[placeholder='name']").fill(name)
        with page.expect_response(lambda r, m=method: r.request.method == m.upper() and "/api/" in r.url) as answer:
            block.locator("button.execute").click()
        response = answer.value
        assert response.request.headers.get("authorization") == f"Bearer {ADMIN_TOKEN}", (method, path)
        assert response.status == status, (method, path, response.text())
