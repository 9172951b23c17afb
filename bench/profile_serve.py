"""Where a maas prediction's CPU goes under load: py-spy samples every process of `maas serve`
(its web workers and the model runners below them) while wrk drives single-row predictions at
concurrency 16, and the samples are grouped by what the process was doing.

    python bench/profile_serve.py [--pipeline numeric|categorical] [--engine onnx|sklearn] [--seconds 20]

Needs wrk (apt-get install -y wrk) and py-spy (pip install py-spy; reading other processes'
memory needs root or CAP_SYS_PTRACE). It starts `maas serve --workers 2` exactly as
serve_bench.py does (bench/serve_bench.py's Maas), uploads the pipeline, warms it up, then runs
`py-spy record --subprocesses --nonblocking` on the server during one wrk run. It prints, for the
web workers and for the runners apart, the share of their samples in each group (a sample goes to
the innermost frame that belongs to a group: a json.dumps called by the access log is the access
log's), the CPU milliseconds per request each process kind spent (from /proc, as serve_bench's CPU
table), and the heaviest frames by their own samples. The raw samples stay in
bench/.cache/profile-<pipeline>-<engine>.txt (py-spy's collapsed stacks, one process per root frame).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import joblib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import (
    CACHE,
    Maas,
    MaasEngine,
    categorical_pipeline,
    cpu_mark,
    cpu_share,
    numeric_pipeline,
    preflight,
    wrk,
)

# (group, a pattern of the frame's file). A sample belongs to the innermost frame that matches one.
WORKER_GROUPS = (
    ("runner round trip (pack, send, wait, read, check the answer)", r"serving/runners/(pool|protocol)\.py"),
    (
        "body parsing and validation (webargs, marshmallow, our schemas)",
        r"(^|/)(webargs|marshmallow)/|serving/api/(schemas|jsonbody|strictjson)\.py",
    ),
    ("feature schema check (every value of every row)", r"serving/inference/inputs\.py"),
    ("version resolving", r"serving/inference/(resolver|runtime)\.py|(^|/)sqlalchemy/"),
    ("access log", r"serving/api/accesslog\.py|serving/telemetry/logs\.py|(^|/)logging/"),
    ("metrics and request id", r"serving/telemetry/|serving/api/(instrument|requestid|middleware)\.py"),
    ("the predict route itself", r"serving/api/routes/predict\.py|serving/inference/"),
    ("JSON of the answer", r"(^|/)(flask/)?json/"),
    ("Flask and werkzeug (routing, request and response objects)", r"(^|/)(flask|flask_smorest|werkzeug|inspect\.py)"),
    ("gunicorn (accept, read the request, write the answer)", r"(^|/)(gunicorn/|socket\.py|email/)"),
)
RUNNER_GROUPS = (
    ("onnxruntime's run of the graph", r"(^|/)onnxruntime/"),
    ("scikit-learn", r"(^|/)sklearn/"),
    ("building the model's input (columns, arrays, DataFrame)", r"(^|/)(pandas|numpy)/|serving/runners/compiled\.py"),
    ("the message: read, decode, encode, write", r"serving/runners/protocol\.py"),
    ("runner loop", r"serving/runners/runner\.py"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def parse(raw: Path) -> dict[str, collections.Counter[tuple[str, ...]]]:
    """py-spy's raw output per process kind: stacks (root first) and their counts. py-spy roots
    each stack in its process's ancestry (`process PID:"cmdline"` frames, the server first): the
    server's own children are the web workers ("worker"), the processes below them the zygotes
    and runners ("runner"), the server itself "master"."""
    kinds: dict[str, collections.Counter[tuple[str, ...]]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        depth = sum(1 for frame in frames if frame.startswith("process "))
        kind = {1: "master", 2: "worker"}.get(depth, "runner")
        kinds[kind][tuple(frames[depth:])] += int(count)
    return kinds


def group(stacks: collections.Counter[tuple[str, ...]], groups: tuple[tuple[str, str], ...]) -> list[tuple[str, int]]:
    compiled = [(name, re.compile(pattern)) for name, pattern in groups]
    totals: collections.Counter[str] = collections.Counter()
    for frames, count in stacks.items():
        name = "other"
        for frame in reversed(frames):
            match = FRAME.match(frame)
            file = match.group("file") if match else frame
            hit = next((n for n, pattern in compiled if pattern.search(file)), None)
            if hit is not None:
                name = hit
                break
        totals[name] += count
    return totals.most_common()


def leaves(stacks: collections.Counter[tuple[str, ...]], top: int) -> list[tuple[str, int]]:
    own: collections.Counter[str] = collections.Counter()
    for frames, count in stacks.items():
        if frames:
            own[re.sub(r"^.*/(site-packages|lib/python3\.\d+|main)/", "", frames[-1])] += count
    return own.most_common(top)


def table(title: str, rows: list[tuple[str, int]], total: int) -> None:
    print(f"\n| {title} | samples | share |\n|---|---:|---:|")
    for name, count in rows:
        print(f"| {name} | {count:,} | {100 * count / total:.1f}% |")


def record(args: argparse.Namespace, raw: Path) -> str | None:
    """Serve, load and sample into `raw`; None on success, else why not. Prints the load's figures."""
    pipeline = (numeric_pipeline if args.pipeline == "numeric" else categorical_pipeline)()
    maas = Maas()
    with tempfile.TemporaryDirectory(prefix="maas-profile-") as tmp:
        work = Path(tmp)
        (work / "models").mkdir()
        pipeline.path = work / "models" / f"{pipeline.name}.joblib"
        joblib.dump(pipeline.model, pipeline.path)
        system = MaasEngine(maas, args.engine)
        try:
            system.start(work, [pipeline])
            request = system.request(pipeline, 1)
            if request is None:
                return f"the {args.pipeline} pipeline has no {args.engine} engine"
            problem = preflight(request)
            if problem is not None:
                return f"the first request failed: {problem}"
            wrk(request, 2, 16, 3)  # warm-up: every worker's runner started and loaded
            root = system.pid(pipeline)
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(root), "--subprocesses", "--nonblocking", "--rate", str(args.rate),
                 "--format", "raw", "--output", str(raw), "--duration", str(round(args.seconds) + 4)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            wrk(request, 2, 16, 2)  # while py-spy attaches to every process
            mark = cpu_mark(root)
            load = wrk(request, 2, 16, args.seconds)
            cpu = cpu_share(root, mark, (load.rps or 0) * (load.seconds or 0)) if load.rps else None
            _, spy_err = spy.communicate(timeout=args.seconds + 60)
        finally:
            system.stop()
    if load.error is not None or spy.returncode != 0 or not raw.exists():
        return f"no profile: {load.error or spy_err.strip()[-500:]}"
    print(f"maas engine={args.engine}, {args.pipeline} pipeline, single rows at concurrency 16 for {args.seconds:g} s:")
    print(f"{load.rps:,.0f} req/s, p99 {load.p99_ms:.2f} ms (py-spy attached: slower than without it)")
    if cpu is not None:
        print(
            f"CPU per request (from /proc): web workers {cpu.web:.3f} ms, runners {cpu.below:.3f} ms, "
            f"wrk {cpu.wrk:.3f} ms"
        )
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", choices=("numeric", "categorical"), default="numeric")
    parser.add_argument("--engine", choices=("onnx", "sklearn"), default="onnx")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second per process")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--raw", type=Path, help="only group the samples of an earlier run's raw file")
    args = parser.parse_args()
    raw = args.raw
    if raw is None:
        for tool, install in (("wrk", "apt-get install -y wrk"), ("py-spy", "pip install py-spy")):
            if shutil.which(tool) is None:
                print(f"{tool} is not installed: {install}", file=sys.stderr)
                return 2
        CACHE.mkdir(exist_ok=True)
        raw = CACHE / f"profile-{args.pipeline}-{args.engine}.txt"
        problem = record(args, raw)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
    kinds = parse(raw)
    for kind, groups in (("worker", WORKER_GROUPS), ("runner", RUNNER_GROUPS)):
        stacks = kinds.get(kind, collections.Counter())
        total = sum(stacks.values())
        if not total:
            print(f"\nno samples of the {kind}s", file=sys.stderr)
            continue
        label = "web workers" if kind == "worker" else "runners (and zygotes)"
        table(f"{label}: where their samples go ({total:,} samples)", group(stacks, groups), total)
        table(f"{label}: the {args.top} heaviest frames by their own samples", leaves(stacks, args.top), total)
    print(f"\nraw samples: {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
