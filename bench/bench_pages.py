"""The pages' weight and first paint: static assets, and a model page in headless Chromium.

    python bench/bench_pages.py [--runs 15]

Prints the size of every static file the pages use (as served, and gzipped for reference: the
server does not compress), how each reaches the browser, their total (the budget: 300 KB), and the
size of each page's HTML. Then starts `maas serve --demo` (SQLite, a temporary directory,
127.0.0.1, a free port) and loads the demo model's page `--runs` times in headless Chromium
(/usr/bin/chromium, through playwright), each in a fresh browser context (an empty cache), then
once more each with the cache warm (a reload in the same context). For each load it reads the
browser's own `first-contentful-paint` (the `paint` performance entries) and, from the Navigation
Timing entry, the time from the request to the HTML's first byte; the server's own time for the
HTML is its `Server-Timing: app` header. For scale, the browser's floor: the first paint of a
fresh context showing `/health/live` (a few bytes of text). Prints medians and ranges; asserts
nothing: figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.support.live
from serving.api.routes.ui import STATIC
from serving.operations.demo import DEMO_MODEL
from tests.support.live import Server, environment, launch

CHROMIUM = "/usr/bin/chromium"
BUDGET_BYTES = 300 * 1024
# Per load: first contentful paint, time to the HTML's first byte (both from the browser), and
# the app's own time for the HTML (its Server-Timing header).
MEASURE = """() => new Promise(resolve => new PerformanceObserver(list => {
  const paint = list.getEntries().find(e => e.name === 'first-contentful-paint');
  if (!paint) return;
  const nav = performance.getEntriesByType('navigation')[0];
  const app = (nav.serverTiming || []).find(t => t.name === 'app');
  resolve({fcp: paint.startTime, ttfb: nav.responseStart - nav.requestStart, app: app ? app.duration : null});
}).observe({type: 'paint', buffered: true}))"""
WARMUP_LOADS = 4  # not counted: each of the server's workers renders its first pages more slowly


def asset_paths(html: str) -> set[str]:
    """The static files a page names: its <script src>s and the charts' scripts in its page-config."""
    paths = set(re.findall(r'src="/ui/static/([^"?]+)', html))
    config = re.search(r'<script type="application/json" id="page-config">(.*?)</script>', html, re.S)
    if config:
        paths.update(
            url.split("?")[0].removeprefix("/ui/static/") for url in json.loads(config.group(1)).get("charts", [])
        )
    return paths


def weights(server: Server) -> None:
    pages = {"/": server.get("/"), f"/ui/models/{DEMO_MODEL}": server.get(f"/ui/models/{DEMO_MODEL}")}
    loaded = {p for page in pages.values() for p in asset_paths(page.text)}
    print(f"{'static file':<30} {'how the pages get it':<34} {'bytes':>9} {'gzipped':>9}")
    total = total_gzip = 0
    for path in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        name = str(path.relative_to(STATIC))
        if path.suffix == ".css":
            how = "written into the page's <style>"
        elif name in loaded:
            how = "script" + (", after the first paint" if "chart" in name or "uPlot" in name else "")
        else:
            continue  # the vendor's LICENSE, README and refresh script: never sent to a browser
        body = path.read_bytes()
        size, packed = len(body), len(gzip.compress(body, 9))
        total, total_gzip = total + size, total_gzip + packed
        print(f"{name:<30} {how:<34} {size:>9,} {packed:>9,}")
    print(f"{'all of them':<65} {total:>9,} {total_gzip:>9,}   (budget {BUDGET_BYTES:,}: {total / BUDGET_BYTES:.0%})")
    for url, page in pages.items():
        print(f"{'HTML ' + url:<65} {len(page.content):>9,} {len(gzip.compress(page.content, 9)):>9,}")


def summary(label: str, values: list[float]) -> None:
    ordered = sorted(values)
    print(
        f"{label:<52} median {statistics.median(ordered):7.1f} ms   min {ordered[0]:7.1f}   max {ordered[-1]:7.1f}"
        f"   (n={len(ordered)})"
    )


def first_paint(server: Server, runs: int) -> None:
    from playwright.sync_api import sync_playwright

    url = f"{server.url}/ui/models/{DEMO_MODEL}"
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    floor: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        for run in range(WARMUP_LOADS + runs):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url, wait_until="load")
            page.wait_for_selector("body[data-ready]")
            measured = page.evaluate(MEASURE)
            page.reload(wait_until="load")
            page.wait_for_selector("body[data-ready]")
            again = page.evaluate(MEASURE)
            context.close()
            # The browser's own floor: a fresh context painting a few bytes of text from the server.
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{server.url}/health/live")
            least = page.evaluate(MEASURE)
            context.close()
            if run >= WARMUP_LOADS:
                cold.append(measured)
                warm.append(again)
                floor.append(least["fcp"])
        browser.close()
    summary("first-contentful-paint of /health/live (floor)", floor)
    for label, loads in (("empty cache", cold), ("warm cache (a reload)", warm)):
        summary(f"first-contentful-paint, {label}", [m["fcp"] for m in loads])
        summary(f"HTML: request to first byte, {label}", [m["ttfb"] for m in loads])
        summary(f"HTML: the app's own time, {label}", [m["app"] for m in loads if m["app"] is not None])
    html = [requests.get(url, timeout=10).elapsed.total_seconds() * 1000 for _ in range(runs)]
    summary("HTML over requests (no browser)", html)
    load = os.getloadavg()
    print(f"load average while measuring: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maas-bench-pages-") as tmp:
        workdir = Path(tmp)
        server = launch("--demo", env=environment(), cwd=workdir, log=workdir / "server.log")
        try:
            server.wait_ready()
            weights(server)
            print()
            first_paint(server, args.runs)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
