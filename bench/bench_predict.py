"""Prediction latency and throughput: over HTTP against `maas serve --demo`, and in-process.

    python bench/bench_predict.py [--requests 2000] [--workers 2] [--threads 1]

Starts `maas serve --demo` (SQLite, in a temporary directory, on 127.0.0.1 and a free port),
sends a bounded number of sequential requests over one keep-alive connection, then measures
in-process what a single-row prediction costs: the estimator alone, the input check, and the
whole Flask request through the test client. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.support.live
from serving.operations.demo import DEMO_EXAMPLE, DEMO_MODEL, synthetic_loans
from tests.support.live import ServerFailed, environment, launch


def columnar(rows: int) -> dict[str, list[Any]]:
    frame, _ = synthetic_loans(rows, seed=11)
    return {column: frame[column].tolist() for column in frame.columns}


def timed(call: Callable[[], Any], count: int, warmup: int) -> list[float]:
    """Seconds taken by each of `count` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def percentile(sorted_samples: list[float], p: float) -> float:
    index = min(len(sorted_samples) - 1, max(0, round(p / 100 * len(sorted_samples)) - 1))
    return sorted_samples[index]


class Table:
    HEADER = ("scenario", "rows/req", "requests", "p50 ms", "p95 ms", "p99 ms", "mean ms", "req/s", "rows/s")

    def __init__(self) -> None:
        self.lines: list[tuple[str, ...]] = []

    def add(self, scenario: str, rows: int, samples: list[float]) -> None:
        ordered = sorted(samples)
        total = sum(samples)
        self.lines.append(
            (
                scenario,
                f"{rows:,}",
                f"{len(samples):,}",
                f"{percentile(ordered, 50) * 1e3:.3f}",
                f"{percentile(ordered, 95) * 1e3:.3f}",
                f"{percentile(ordered, 99) * 1e3:.3f}",
                f"{statistics.fmean(samples) * 1e3:.3f}",
                f"{len(samples) / total:,.0f}",
                f"{rows * len(samples) / total:,.0f}",
            )
        )
        print(f"  measured: {scenario}", file=sys.stderr, flush=True)

    def print(self) -> None:
        rows = [self.HEADER, *self.lines]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]

        def fmt(r: tuple[str, ...]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )

        print(fmt(self.HEADER))
        print("  ".join("-" * w for w in widths))
        for line in self.lines:
            print(fmt(line))


def bench_http(table: Table, url: str, requests_count: int) -> None:
    session = requests.Session()

    def post(body: dict[str, Any]) -> Callable[[], None]:
        def call() -> None:
            response = session.post(url + "/api/predict", json=body, timeout=60)
            if response.status_code != 200:
                sys.exit(f"prediction failed: {response.status_code} {response.text[:500]}")

        return call

    one = {"model": DEMO_MODEL, "data": DEMO_EXAMPLE}
    table.add("HTTP /api/predict, 1 row", 1, timed(post(one), requests_count, warmup=200))
    table.add(
        "HTTP /api/predict, 1 row + probabilities",
        1,
        timed(post({**one, "return_probabilities": True}), requests_count // 4, warmup=50),
    )
    hundred = {"model": DEMO_MODEL, "data": columnar(100)}
    table.add("HTTP /api/predict, 100 rows (columnar)", 100, timed(post(hundred), 200, warmup=20))
    records = {"model": DEMO_MODEL, "data": [DEMO_EXAMPLE] * 100}
    table.add("HTTP /api/predict, 100 rows (records)", 100, timed(post(records), 200, warmup=20))
    big = {"model": DEMO_MODEL, "data": columnar(10_000)}
    table.add("HTTP /api/predict, 10,000 rows (columnar)", 10_000, timed(post(big), 20, warmup=3))
    session.close()


def bench_in_process(table: Table, workdir: Path, requests_count: int) -> None:
    import joblib

    from registry import service
    from serving.api.app import create_app
    from serving.config import Settings
    from serving.runners.runner import assemble

    settings = Settings(
        database_url=f"sqlite:///{workdir / 'maas-data' / 'registry.db'}",
        store_dir=str(workdir / "maas-data" / "models"),
    )
    app = create_app(settings, upgrade_db=False)
    rt = app.extensions["maas"]
    with app.app_context():
        with rt.db.read() as session:
            ref = service.resolve_version_ref(session, DEMO_MODEL, "latest")
        runner = rt.runner(ref)
        inputs = rt.input_schema(ref, runner.facts)
        columns, rows = inputs.check(DEMO_EXAMPLE)
        # The bench loads its own demo artifact in-process, to time the model itself; the server
        # never does (models run in runners).
        estimator = joblib.load(rt.store.path_for(ref.sha256))
        model_input = assemble(columns, list(columns), inputs.column_names)  # the one-row DataFrame a runner builds
        table.add(
            "in-process estimator.predict, 1 row",
            1,
            timed(lambda: estimator.predict(model_input), requests_count, warmup=200),
        )
        table.add(
            "runner call (hop + DataFrame + predict), 1 row",
            1,
            timed(lambda: runner.predict(columns, rows, inputs.column_names, False), requests_count, warmup=200),
        )

        def resolve() -> None:
            with rt.db.read() as session:
                service.resolve_version_ref(session, DEMO_MODEL, "latest")

        table.add("in-process registry resolve (1 query)", 1, timed(resolve, requests_count, warmup=200))
        table.add(
            "in-process input check, 1 row", 1, timed(lambda: inputs.check(DEMO_EXAMPLE), requests_count, warmup=200)
        )
        big_columns, _ = inputs.check(columnar(10_000))
        big_input = assemble(big_columns, list(big_columns), inputs.column_names)
        table.add(
            "in-process estimator.predict, 10,000 rows",
            10_000,
            timed(lambda: estimator.predict(big_input), 20, warmup=3),
        )
    client = app.test_client()
    body = {"model": DEMO_MODEL, "data": DEMO_EXAMPLE}

    def call() -> None:
        response = client.post("/api/predict", json=body)
        if response.status_code != 200:
            sys.exit(f"prediction failed: {response.status_code} {response.get_data(as_text=True)[:500]}")

    table.add("in-process Flask test client /api/predict, 1 row", 1, timed(call, requests_count, warmup=200))
    rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="single-row requests per scenario")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    table = Table()
    with tempfile.TemporaryDirectory(prefix="maas-bench-") as tmp:
        workdir = Path(tmp)
        server = launch(
            "--demo",
            "--threads",
            str(args.threads),
            env=environment(MAAS_LOG_LEVEL="WARNING"),
            cwd=workdir,
            log=workdir / "server.log",
            workers=args.workers,
        )
        print(f"starting maas serve --demo on {server.url} in {workdir}", file=sys.stderr, flush=True)
        try:
            server.wait_ready()
            bench_http(table, server.url, args.requests)
        except ServerFailed as exc:
            sys.exit(str(exc))
        finally:
            server.stop()
        bench_in_process(table, workdir, args.requests)

    import platform

    import sklearn

    print(
        f"\nmaas prediction benchmark: python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
        f"{os.cpu_count()} CPUs, server: {args.workers} workers x {args.threads} threads, SQLite, "
        "sequential requests (one keep-alive connection)\n"
    )
    table.print()


if __name__ == "__main__":
    main()
