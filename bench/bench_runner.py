"""What running models in confined runners costs: the hop on a single-row prediction, and a
runner's cold start.

    python bench/bench_runner.py [--calls 3000] [--rounds 6] [--starts 40]

Hop: for two pipelines (10 numeric features: StandardScaler + LogisticRegression; the demo's
ColumnTransformer + OneHotEncoder + LogisticRegression), the same checked one-row columns go
(a) through what the web worker did before runners (build the model's input, call predict) and
(b) through a confined runner (send the columns, the runner builds the input and predicts, the
answer comes back and is checked). Rounds of the two are interleaved; p50/p99 of each and the
added latency (b - a) are printed.

Cold start: the zygote's start (process start to ready), a runner forked from a warm zygote and
confined, and a runner started and loaded with a model, against loading that model in-process.
Prints a table; asserts nothing. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model_store.features import infer_feature_schema
from serving.inference.inputs import InputSchema
from serving.operations.demo import DEMO_EXAMPLE, train_demo_model
from serving.runners import pool
from serving.runners.runner import assemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import timed

LIMITS = pool.RunnerLimits(memory_bytes=2 << 30, timeout=10.0, max_model_bytes=1 << 30)


def numeric_pipeline() -> tuple[Any, dict[str, Any]]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 10)), columns=[f"f{i}" for i in range(10)])
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, (frame.sum(axis=1) > 0).astype(int))
    return model, {c: float(frame[c][0]) for c in frame.columns}


def ms(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] * 1e3 if q < 100 else max(samples) * 1e3


def loaded_runner(model: Any) -> tuple[pool.Runner, float]:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    with tempfile.TemporaryFile() as f:
        f.write(buffer.getvalue())
        f.flush()
        f.seek(0)
        started = time.perf_counter()
        runner = pool.spawn_runner(LIMITS, "bench")
        runner.load(f, None)
        return runner, time.perf_counter() - started


def bench_hop(name: str, model: Any, row: dict[str, Any], calls: int, rounds: int) -> None:
    runner, _ = loaded_runner(model)
    inputs = InputSchema(name, 1, infer_feature_schema(model), runner.facts["feature_names"], 10_000)
    columns, rows = inputs.check(row)

    def in_process() -> None:
        model.predict(assemble(columns, list(columns), inputs.column_names))

    def through_runner() -> None:
        runner.predict(columns, rows, inputs.column_names, False)

    samples: dict[str, list[float]] = {"in-process": [], "runner": []}
    calls_per_round = max(1, calls // rounds)
    for _ in range(rounds):  # interleaved, so drifts of the machine hit both alike
        for label, call in (("in-process", in_process), ("runner", through_runner)):
            for _ in range(50):
                call()
            for _ in range(calls_per_round):
                started = time.perf_counter()
                call()
                samples[label].append(time.perf_counter() - started)
    a, b = samples["in-process"], samples["runner"]
    print(
        f"{name:44s} {ms(a, 50):8.3f} {ms(a, 99):8.3f} {ms(b, 50):8.3f} {ms(b, 99):8.3f}"
        f" {ms(b, 50) - ms(a, 50):+8.3f} {ms(b, 99) - ms(a, 99):+8.3f}"
    )
    runner.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--starts", type=int, default=40)
    args = parser.parse_args()

    started = time.perf_counter()
    pool.start_zygote()
    first = pool.spawn_runner(LIMITS, "bench")
    zygote_start = time.perf_counter() - started
    first.kill()

    print("single-row prediction, ms        in-process p50      p99   runner p50      p99  added p50  added p99")
    numeric, numeric_row = numeric_pipeline()
    bench_hop("10 numeric (StandardScaler+LogisticRegression)", numeric, numeric_row, args.calls, args.rounds)
    demo = train_demo_model()
    bench_hop("demo (ColumnTransformer+OneHot+Logistic)", demo, DEMO_EXAMPLE, args.calls, args.rounds)

    print()
    print(f"zygote start (process start to ready, imports): {zygote_start * 1e3:.0f} ms (once per web worker)")
    spawns = timed(lambda: pool.spawn_runner(LIMITS, "bench").kill(), args.starts, warmup=0)
    print(f"runner fork + confine from a warm zygote: p50 {ms(spawns, 50):.1f} ms, max {max(spawns) * 1e3:.1f} ms")
    for label, model in (("10 numeric pipeline", numeric), ("demo pipeline", demo)):
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        data = buffer.getvalue()

        def load_once(data: bytes = data) -> Any:
            return joblib.load(io.BytesIO(data))

        loads = timed(load_once, args.starts, warmup=0)
        cold = []
        for _ in range(args.starts):
            runner, seconds = loaded_runner(model)
            cold.append(seconds)
            runner.kill()
        print(
            f"{label} ({len(data)} bytes): in-process joblib.load p50 {ms(loads, 50):.1f} ms; runner start + scan + "
            f"load + inspect p50 {ms(cold, 50):.1f} ms (added {ms(cold, 50) - ms(loads, 50):+.1f} ms)"
        )


if __name__ == "__main__":
    main()
