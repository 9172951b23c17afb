"""Screenshots of the pages, for the README: python docs/screenshots.py [--out docs/screenshots]

Starts `maas serve --demo` (SQLite, in a temporary directory, on 127.0.0.1 and a free port), adds
a second version of the demo model (retrained on other applicants: `latest`, while `production`
stays on version 1), then drives the pages in headless Chromium (/usr/bin/chromium, through
playwright) and saves one PNG per page: the models list, a prediction, what-if (production
against latest), a scored portfolio, the version's detail and the page at phone width.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.support.live
from serving.operations.demo import CATEGORICAL, DEMO_EXAMPLE, DEMO_MODEL, NUMERIC, synthetic_loans
from tests.support.live import Server, environment, launch

CHROMIUM = "/usr/bin/chromium"
ADMIN_TOKEN = "screenshots"
# Lay the sections out as a person scrolls through them, without the sticky section bar on top.
STILL = "nav.sections { position: static !important; } * { caret-color: transparent !important; }"


def upload(server: Server, name: str, model: Any, metadata: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    answer = server.post(
        f"/api/admin/models/{name}/versions",
        files={"file": ("model.joblib", buffer.getvalue(), "application/octet-stream")},
        data={"metadata": json.dumps(metadata)},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    answer.raise_for_status()


def register_more(server: Server) -> None:
    """A second version of the demo model, trained on other applicants (`latest`; `production`
    stays on version 1), and a small regressor, so the list has more than one model."""
    frame, target = synthetic_loans(rows=3000, seed=23)
    prepare = ColumnTransformer([("numeric", StandardScaler(), NUMERIC), ("categorical", OneHotEncoder(), CATEGORICAL)])
    model = Pipeline([("prepare", prepare), ("classify", LogisticRegression(C=0.05, max_iter=1000))]).fit(frame, target)
    upload(
        server,
        DEMO_MODEL,
        model,
        {"description": "Loan default risk, retrained on 3,000 newer applicants", "example": DEMO_EXAMPLE},
    )
    rooms = pd.DataFrame({"rooms": [1, 2, 3, 4, 5, 2, 3], "area": [30, 55, 70, 95, 120, 48, 82]})
    rent = LinearRegression().fit(rooms, [610, 890, 1150, 1420, 1700, 820, 1230])
    features = [
        {"name": "rooms", "type": "integer", "minimum": 1, "maximum": 10},
        {"name": "area", "type": "number", "minimum": 10, "maximum": 400},
    ]
    upload(
        server,
        "rent",
        rent,
        {"description": "Monthly rent from rooms and area", "features": features, "aliases": ["staging"]},
    )


def portfolio_csv(directory: Path) -> Path:
    frame, _ = synthetic_loans(rows=40, seed=99)
    path = directory / "applicants.csv"
    frame.to_csv(path, index=False)
    return path


def below(page: Any, selector: str) -> dict[str, float]:
    """The page from its top to just below `selector`."""
    box = page.locator(selector).bounding_box()
    scroll = page.evaluate("window.scrollY")
    return {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": box["y"] + scroll + box["height"] + 16}


def around(page: Any, selector: str, margin: float = 16) -> dict[str, float]:
    """`selector`'s box on the page, with a margin."""
    box = page.locator(selector).bounding_box()
    scroll = page.evaluate("window.scrollY")
    return {
        "x": max(0, box["x"] - margin),
        "y": box["y"] + scroll - margin,
        "width": box["width"] + 2 * margin,
        "height": box["height"] + 2 * margin,
    }


def shoot(server: Server, out: Path, workdir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved: list[Path] = []
    model_page = f"{server.url}/ui/models/{DEMO_MODEL}"

    def save(target: Any, name: str, **options: Any) -> None:
        path = out / f"{name}.png"
        target.screenshot(path=str(path), animations="disabled", **options)
        saved.append(path)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        desk = browser.new_page(viewport={"width": 1100, "height": 800}, device_scale_factor=1)
        desk.set_default_timeout(30_000)

        desk.goto(server.url + "/")
        desk.wait_for_selector("#models-table tbody tr")
        save(desk, "models", clip=below(desk, "#models-table"))

        desk.goto(model_page)
        desk.wait_for_selector("body[data-ready]")
        desk.add_style_tag(content=STILL)
        desk.fill('input[name="income"]', "38000")
        desk.fill('input[name="loan_amount"]', "15000")
        desk.click("#predict-button")
        desk.wait_for_selector("#prediction[data-status]")
        save(desk, "predict", full_page=True, clip=below(desk, "#prediction"))

        desk.select_option("#whatif-compare", "latest")
        desk.click("#whatif-run")
        desk.wait_for_selector("#whatif-result[data-status]")
        desk.wait_for_selector("figure.whatif-feature canvas")
        save(desk, "whatif", full_page=True, clip=around(desk, "#whatif"))

        desk.set_input_files("#portfolio-file", str(portfolio_csv(workdir)))
        desk.click("#portfolio-run")
        desk.wait_for_selector("#portfolio-download")
        desk.evaluate(
            "() => document.querySelectorAll('#portfolio-table tbody tr').forEach((r, i) => r.hidden = i >= 8)"
        )
        save(desk, "portfolio", full_page=True, clip=around(desk, "#portfolio"))
        save(desk, "details", full_page=True, clip=around(desk, "#details"))

        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True)
        phone.set_default_timeout(30_000)
        phone.goto(model_page)
        phone.wait_for_selector("body[data-ready]")
        phone.add_style_tag(content=STILL)
        phone.click("#predict-button")
        phone.wait_for_selector("#prediction[data-status]")
        save(phone, "phone", full_page=True, clip=below(phone, "#prediction"))
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maas-screenshots-") as tmp:
        workdir = Path(tmp)
        server = launch(
            "--demo", env=environment(MAAS_ADMIN_TOKEN=ADMIN_TOKEN), cwd=workdir, log=workdir / "server.log"
        )
        try:
            server.wait_ready()
            register_more(server)
            for path in shoot(server, args.out, workdir):
                print(f"{path} ({path.stat().st_size // 1024} KB)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
