"""Serving benchmark: maas against the in-process limit, two Flask apps and (with --peers) MLflow
and MLServer, driven over loopback by wrk.

    python bench/serve_bench.py [--quick] [--peers] [--duration 10] [--rounds 3]

Trains two pipelines (10 numeric features: StandardScaler + LogisticRegression; 4 numeric + 2
categorical: ColumnTransformer(StandardScaler, OneHotEncoder) + LogisticRegression, both fitted on
DataFrames), starts every system on 127.0.0.1 and a free port, and measures each one round by
round (the systems interleaved, the order rotated every round; figures are medians of rounds):
p50/p99 at concurrency 1, req/s and p99 at concurrency 16 (single rows), rows/s for 100-row
batches at concurrency 16, and the server's RSS. Then maas alone: a fresh upload's first
prediction against a fresh process's `joblib.load` + one `predict_proba`, and a ~200 MB upload's
throughput and the server's peak RSS increase. Prints the tables (markdown), the targets as ratios
with PASS/FAIL, and writes everything to bench/.cache/last.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import requests
from requests_toolbelt import MultipartEncoder
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.support.live
from tests.support.live import Server, ServerFailed, environment, free_port, launch

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
LUA = HERE / "wrk" / "post.lua"
FLASK_APPS = HERE / "flask_apps"
ADMIN_TOKEN = "bench-admin-token"
WORKERS = 2
BATCH = 100
BIG_TARGET_BYTES = 200 * 1024 * 1024
MLFLOW_SPEC = "mlflow==3.18.0"
# uvloop 0.22 dropped the implicit event loop that MLServer 1.7.1's parallel workers ask for
# (asyncio.get_event_loop() in mlserver/parallel/worker.py): with it, every worker dies at start.
MLSERVER_SPECS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22")
# The peers' venvs get the scikit-learn stack of this one, so that they load the same pickles.
SAME_STACK = ("scikit-learn", "numpy", "pandas", "joblib", "scipy")
START_TIMEOUT_S = 120.0
FLOOR = "Flask floor (no model)"


# -- the two pipelines ------------------------------------------------------------------------------
@dataclass
class Pipeline:
    name: str
    model: Any
    frame: pd.DataFrame  # rows to send (at least BATCH)
    path: Path = Path()  # the joblib file, once saved

    def records(self, rows: int) -> list[dict[str, Any]]:
        return [{str(k): _plain(v) for k, v in r.items()} for r in self.frame.iloc[:rows].to_dict(orient="records")]

    def columns(self, rows: int) -> dict[str, list[Any]]:
        return {c: [_plain(v) for v in self.frame[c].iloc[:rows]] for c in self.frame.columns}

    def data(self, rows: int) -> Any:
        """The `data` every JSON app gets: a list of one record, or 100 rows as columns."""
        return self.records(1) if rows == 1 else self.columns(rows)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def numeric_pipeline() -> Pipeline:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 10)), columns=[f"f{i}" for i in range(10)])
    target = (frame.sum(axis=1) + rng.normal(size=2000) > 0).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, target)
    return Pipeline("numeric", model, frame.iloc[:BATCH].reset_index(drop=True))


def categorical_pipeline() -> Pipeline:
    rng = np.random.default_rng(1)
    n = 2000
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50_000, 15_000, n).round(2),
            "loan_amount": rng.normal(12_000, 5_000, n).round(2),
            "term_months": rng.choice([12.0, 24.0, 36.0, 60.0], n),
            "employment": rng.choice(["salaried", "self-employed", "unemployed"], n),
            "home_ownership": rng.choice(["mortgage", "own", "rent"], n),
        }
    )
    score = (frame["loan_amount"] / frame["income"]) * 4 - (frame["employment"] == "salaried") + rng.normal(size=n)
    numeric = ["age", "income", "loan_amount", "term_months"]
    model = make_pipeline(
        ColumnTransformer(
            [("num", StandardScaler(), numeric), ("cat", OneHotEncoder(), ["employment", "home_ownership"])]
        ),
        LogisticRegression(),
    ).fit(frame, (score > score.median()).astype(int))
    return Pipeline("categorical", model, frame.iloc[:BATCH].reset_index(drop=True))


def big_forest() -> Path:
    """A RandomForestClassifier whose joblib file is about 200 MB, trained once and cached."""
    path = CACHE / "big-forest.joblib"
    if path.exists():
        return path
    print("training the ~200 MB RandomForest (once; cached in bench/.cache/) ...", flush=True)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(60_000, 10)), columns=[f"f{i}" for i in range(10)])
    labels = rng.integers(0, 2, len(frame))  # noise: fully grown trees, about one leaf per sample
    forest = RandomForestClassifier(n_estimators=2, n_jobs=2, random_state=0, warm_start=True).fit(frame, labels)
    per_tree = _joblib_size(forest) / 2
    forest.set_params(n_estimators=max(2, round(BIG_TARGET_BYTES / per_tree)))
    forest.fit(frame, labels)
    # Saved with n_jobs=None: predict_proba with n_jobs=2 fails in maas's confined runner
    # (PermissionError from joblib's parallelism), and a server's model should not spawn threads anyway.
    forest.set_params(n_jobs=None)
    CACHE.mkdir(parents=True, exist_ok=True)
    joblib.dump(forest, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return path


def _joblib_size(model: Any) -> int:
    with tempfile.NamedTemporaryFile() as f:
        joblib.dump(model, f.name)
        return os.path.getsize(f.name)


# -- processes, process trees and their RSS --------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name (state first), or None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, or None when it is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[3]))


def process_tree(root: int) -> list[int]:
    """root, its descendants, and every process of root's session (a server started with
    start_new_session=True: its master, workers, and what they start, even once re-parented)."""
    parents: dict[int, list[int]] = {}
    in_session = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[0], []).append(int(entry))
            if stat[1] == root:
                in_session.append(int(entry))
    found, todo = {root}, [root, *in_session]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(c for c in parents.get(pid, []) if c not in found)
    return sorted(found)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds so far) of each process still there."""
    found = {}
    for pid in pids:
        if (fields := _stat_fields(pid)) is not None:
            found[pid] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


@dataclass
class CpuShare:
    """CPU milliseconds per request during one wrk run: the server's master and its direct
    children (gunicorn's workers), the processes below them (maas: the zygotes and model runners),
    and the load generator."""

    web: float
    below: float
    wrk: float


CpuMark = tuple[dict[int, tuple[int, float]], float]


def cpu_mark(root: int) -> CpuMark:
    """The CPU seconds so far of the server's processes and of this process's finished children (wrk)."""
    return cpu_seconds(process_tree(root)), _children_cpu()


def cpu_share(root: int, mark: CpuMark, requests_served: float) -> CpuShare:
    """CPU per request since `mark`, over `requests_served` requests."""
    before, wrk_before = mark
    n = max(requests_served, 1.0)
    web = below = 0.0
    for pid, (parent, seconds) in cpu_seconds(process_tree(root)).items():
        spent = seconds - before.get(pid, (0, 0.0))[1]
        if pid == root or parent == root:
            web += spent
        else:
            below += spent
    return CpuShare(web * 1e3 / n, below * 1e3 / n, (_children_cpu() - wrk_before) * 1e3 / n)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


@dataclass
class Process:
    """A command in a process group of its own, its output in a log file; stop() kills the group."""

    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def wait_http(self, url: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise ServerFailed(f"{self.argv[0]} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise ServerFailed(f"{url} not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()


# -- the systems ------------------------------------------------------------------------------------
@dataclass
class Request:
    url: str
    body: bytes
    rows: int
    count: Callable[[Any], int]  # how many rows of answers a response's JSON holds


class System(ABC):
    """A server under test: started once, measured every round, stopped at the end."""

    label: str
    unavailable: str | None = None  # why its rows are n/a

    @abstractmethod
    def start(self, work: Path, pipelines: list[Pipeline]) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def pid(self, pipeline: Pipeline) -> int:
        """The root of the process tree that serves `pipeline`."""

    @abstractmethod
    def request(self, pipeline: Pipeline, rows: int) -> Request | None:
        """The request for `rows` rows with probabilities, or None when this system cannot answer it."""


def _json_request(url: str, payload: Any, rows: int, count: Callable[[Any], int]) -> Request:
    return Request(url, json.dumps(payload).encode(), rows, count)


class FlaskApp(System):
    """bench/flask_apps/<module>.py under gunicorn: WORKERS sync workers, no control socket."""

    def __init__(self, label: str, module: str) -> None:
        self.label, self.module = label, module
        self.process: Process | None = None
        self.port = 0

    def start(self, work: Path, pipelines: list[Pipeline]) -> None:
        self.port = free_port()
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        argv = [gunicorn, "--workers", str(WORKERS), "--worker-class", "sync", "--no-control-socket"]
        argv += ["--bind", f"127.0.0.1:{self.port}", "--chdir", str(FLASK_APPS), f"{self.module}:app"]
        env = {**os.environ, "BENCH_MODEL_DIR": str(work / "models")}
        self.process = Process(argv, work / f"{self.module}.log", env)
        self.process.start()
        _wait_port_answers(self.process, f"http://127.0.0.1:{self.port}/")

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def pid(self, pipeline: Pipeline) -> int:
        assert self.process is not None
        return self.process.pid

    def request(self, pipeline: Pipeline, rows: int) -> Request:
        url = f"http://127.0.0.1:{self.port}/predict/{pipeline.name}"
        return _json_request(url, {"data": pipeline.data(rows)}, rows, lambda r: len(r["probabilities"]))


def _wait_port_answers(process: Process, url: str) -> None:
    """Until the server answers anything at all (the Flask apps have no health route: a 404 will do)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.popen is not None and process.popen.poll() is not None:
            raise ServerFailed(f"{process.argv[0]} exited:\n{process.tail()}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.25)
    raise ServerFailed(f"{url} did not answer:\n{process.tail()}")


class Maas:
    """One `maas serve --workers 2` on a fresh SQLite database and store, both pipelines uploaded."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.versions: dict[str, dict[str, Any]] = {}
        self.started = False

    def start(self, work: Path, pipelines: list[Pipeline]) -> None:
        if self.started:  # by the other engine's row
            if self.server is None:
                raise ServerFailed("maas did not start (see its first row)")
            return
        self.started = True
        data = work / "maas"
        data.mkdir()
        env = environment(
            MAAS_ADMIN_TOKEN=ADMIN_TOKEN,
            MAAS_DATABASE_URL=f"sqlite:///{data / 'registry.db'}",
            MAAS_STORE_DIR=str(data / "models"),
            MAAS_PREDICT_TIMEOUT="60",  # the 200 MB forest's load, on a busy machine
        )
        self.server = launch(env=env, cwd=data, log=work / "maas.log", workers=WORKERS)
        self.server.wait_ready(START_TIMEOUT_S)
        for p in pipelines:
            self.versions[p.name] = self.upload(f"bench-{p.name}", p.path)

    def upload(self, name: str, path: Path, description: str = "serve_bench") -> dict[str, Any]:
        assert self.server is not None
        with path.open("rb") as f:
            encoder = MultipartEncoder(
                {
                    "file": (path.name, f, "application/octet-stream"),
                    "metadata": json.dumps({"description": description}),
                }
            )
            response = requests.post(
                f"{self.server.url}/api/admin/models/{name}/versions",
                data=encoder,
                headers={"Content-Type": encoder.content_type, "Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=600,
            )
        if response.status_code != 201:
            raise ServerFailed(f"upload of {name} answered {response.status_code}: {response.text[:500]}")
        version = response.json()
        full = requests.get(f"{self.server.url}/api/models/{name}/versions/{version['version']}", timeout=30)
        full.raise_for_status()
        return dict(full.json())

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class MaasEngine(System):
    """maas with one engine: `sklearn` (sent only when the version lists its `engines`) or `onnx`
    (n/a unless the version lists "onnx")."""

    def __init__(self, maas: Maas, engine: str) -> None:
        self.maas, self.engine = maas, engine
        self.label = f"maas engine={engine}"

    def start(self, work: Path, pipelines: list[Pipeline]) -> None:
        self.maas.start(work, pipelines)
        if self.engine == "onnx" and not any("onnx" in v.get("engines", []) for v in self.maas.versions.values()):
            self.unavailable = "this maas lists no onnx in its versions' engines"

    def stop(self) -> None:
        self.maas.stop()

    def pid(self, pipeline: Pipeline) -> int:
        assert self.maas.server is not None
        return self.maas.server.process.pid

    def request(self, pipeline: Pipeline, rows: int) -> Request | None:
        assert self.maas.server is not None
        version = self.maas.versions[pipeline.name]
        if self.engine == "onnx" and "onnx" not in version.get("engines", []):
            return None
        body: dict[str, Any] = {"data": pipeline.data(rows), "return_probabilities": True}
        if "engines" in version:
            body["engine"] = self.engine
        url = f"{self.maas.server.url}/api/models/bench-{pipeline.name}/predict"
        return _json_request(url, body, rows, self.count)

    def count(self, answer: Any) -> int:
        """Rows answered, once the answer says the engine asked for answered (when one was)."""
        if "engine" in answer and answer["engine"] != self.engine:
            raise ValueError(f"engine {answer['engine']!r} answered, not {self.engine!r}")
        return len(answer["probabilities"])


def peer_venv(name: str, specs: tuple[str, ...]) -> tuple[Path | None, str | None]:
    """bench/.cache/venv-<name> with `specs` and this venv's scikit-learn stack, made once; (its
    python, None) or (None, why it could not be made)."""
    venv = CACHE / f"venv-{name}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join([*specs, *(f"{p}=={importlib.metadata.version(p)}" for p in SAME_STACK)])
    if marker.exists() and marker.read_text() == wanted:
        return python, None
    print(f"creating {venv.relative_to(HERE.parent)}: pip install {wanted} ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    made = subprocess.run(["python3.11", "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode == 0:
        made = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *wanted.split()], capture_output=True, text=True
        )
    if made.returncode != 0:
        lines = [line for line in (made.stderr + made.stdout).splitlines() if "ERROR" in line or "error" in line]
        return None, f"pip install {wanted} failed: {(lines or ['?'])[-1][:300]}"
    marker.write_text(wanted)
    return python, None


class Mlflow(System):
    """`mlflow models serve --env-manager local --workers 2`, one server per model, each saved with
    mlflow.sklearn.save_model(pyfunc_predict_fn="predict_proba") in bench/.cache/venv-mlflow."""

    label = "mlflow models serve"

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.servers: dict[str, tuple[Process, int]] = {}

    def start(self, work: Path, pipelines: list[Pipeline]) -> None:
        python, why = peer_venv("mlflow", (self.spec,))
        if python is None:
            self.unavailable = why
            return
        bin_dir = python.parent
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": str(work / "mlruns")}
        try:
            for p in pipelines:
                directory = work / f"mlflow-{p.name}"
                save = (
                    "import sys, joblib, mlflow.sklearn; mlflow.sklearn.save_model("
                    "joblib.load(sys.argv[1]), sys.argv[2], pyfunc_predict_fn='predict_proba')"
                )
                subprocess.run([str(python), "-c", save, str(p.path), str(directory)], env=env, check=True)
                port = free_port()
                argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(directory), "--env-manager", "local"]
                argv += ["-h", "127.0.0.1", "-p", str(port), "--workers", str(WORKERS)]
                process = Process(argv, work / f"mlflow-{p.name}.log", env, work)
                process.start()
                self.servers[p.name] = (process, port)
                process.wait_http(f"http://127.0.0.1:{port}/ping")
        except (subprocess.CalledProcessError, ServerFailed) as exc:
            self.unavailable = f"mlflow did not start: {str(exc)[-300:]}"

    def stop(self) -> None:
        for process, _ in self.servers.values():
            process.stop()

    def pid(self, pipeline: Pipeline) -> int:
        return self.servers[pipeline.name][0].pid

    def request(self, pipeline: Pipeline, rows: int) -> Request:
        frame = pipeline.frame.iloc[:rows]
        split = {
            "columns": list(frame.columns),
            "data": [[_plain(v) for v in r] for r in frame.itertuples(index=False)],
        }
        url = f"http://127.0.0.1:{self.servers[pipeline.name][1]}/invocations"
        return _json_request(url, {"dataframe_split": split}, rows, lambda r: len(r["predictions"]))


class MLServer(System):
    """`mlserver start` with both models (mlserver_sklearn, predict_proba asked for), parallel_workers 2,
    in bench/.cache/venv-mlserver; V2 inference requests with the pandas content type."""

    label = "MLServer"

    def __init__(self) -> None:
        self.process: Process | None = None
        self.port = 0

    def start(self, work: Path, pipelines: list[Pipeline]) -> None:
        python, why = peer_venv("mlserver", MLSERVER_SPECS)
        if python is None:
            self.unavailable = why
            return
        repo = work / "mlserver"
        for p in pipelines:
            (repo / p.name).mkdir(parents=True)
            shutil.copy(p.path, repo / p.name / "model.joblib")
            settings = {
                "name": f"bench-{p.name}",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
            (repo / p.name / "model-settings.json").write_text(json.dumps(settings))
        self.port = free_port()
        server = {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": WORKERS,
            "metrics_dir": str(work / "mlserver-metrics"),  # not the working directory's .metrics
        }
        (repo / "settings.json").write_text(json.dumps(server))
        env = {**os.environ, "PATH": f"{python.parent}:{os.environ['PATH']}"}
        self.process = Process([str(python.parent / "mlserver"), "start", str(repo)], work / "mlserver.log", env, repo)
        self.process.start()
        try:
            for p in pipelines:
                self.process.wait_http(f"http://127.0.0.1:{self.port}/v2/models/bench-{p.name}/ready")
        except ServerFailed as exc:
            self.unavailable = f"MLServer did not start: {str(exc)[-300:]}"

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def pid(self, pipeline: Pipeline) -> int:
        assert self.process is not None
        return self.process.pid

    def request(self, pipeline: Pipeline, rows: int) -> Request:
        inputs = []
        for column, values in pipeline.columns(rows).items():
            text = isinstance(values[0], str)
            entry: dict[str, Any] = {"name": column, "shape": [rows], "datatype": "BYTES" if text else "FP64"}
            entry["data"] = values
            if text:
                entry["parameters"] = {"content_type": "str"}
            inputs.append(entry)
        payload = {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": [{"name": "predict_proba"}]}
        url = f"http://127.0.0.1:{self.port}/v2/models/bench-{pipeline.name}/infer"
        return _json_request(url, payload, rows, lambda r: int(r["outputs"][0]["shape"][0]))


# -- measuring ---------------------------------------------------------------------------------------
@dataclass
class Load:
    """One wrk run's figures (None where it failed: `error` says why)."""

    p50_ms: float | None = None
    p99_ms: float | None = None
    rps: float | None = None
    error: str | None = None
    seconds: float | None = None  # wrk's own measured duration


def preflight(request: Request) -> str | None:
    """One request by hand: None when it answers 200 with one answer per row, else what went wrong."""
    try:
        response = requests.post(
            request.url, data=request.body, headers={"Content-Type": "application/json"}, timeout=60
        )
    except requests.RequestException as exc:
        return f"no answer: {exc}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        rows = request.count(response.json())
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unexpected answer ({exc!r}): {response.text[:200]}"
    return None if rows == request.rows else f"{rows} answers for {request.rows} rows"


def wrk(request: Request, threads: int, connections: int, seconds: float) -> Load:
    with tempfile.NamedTemporaryFile(suffix=".json") as body:
        body.write(request.body)
        body.flush()
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s"]
        done = subprocess.run([*argv, "-s", str(LUA), request.url, "--", body.name], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        return Load(error=f"wrk failed: {(done.stderr or done.stdout)[-300:]}")
    figures = json.loads(lines[-1].removeprefix("WRK_JSON "))
    errors = {k: figures[k] for k in ("connect", "read", "write", "status", "timeout") if figures[k]}
    if errors or not figures["requests"]:
        return Load(error=f"wrk saw errors {errors} in {figures['requests']:.0f} requests")
    seconds = figures["duration_us"] / 1e6
    return Load(figures["p50_us"] / 1e3, figures["p99_us"] / 1e3, figures["requests"] / seconds, seconds=seconds)


@dataclass
class Figures:
    """One system on one pipeline in one round."""

    c1: Load
    c16: Load
    batch: Load  # BATCH-row requests at concurrency 16
    rss_mb: float | None
    cpu: CpuShare | None = None  # of the single-row run at concurrency 16


def measure(system: System, pipeline: Pipeline, duration: float, warmup: float) -> Figures:
    loads = []
    cpu = None
    root = system.pid(pipeline)
    for rows, threads, connections in ((1, 1, 1), (1, 2, 16), (BATCH, 2, 16)):
        request = system.request(pipeline, rows)
        if request is None:
            loads.append(Load(error="n/a"))
            continue
        problem = preflight(request)
        if problem is not None:
            loads.append(Load(error=problem))
            continue
        if warmup > 0:
            wrk(request, 2, 16, warmup)
        mark = cpu_mark(root)
        load = wrk(request, threads, connections, duration)
        if (rows, connections) == (1, 16) and load.rps is not None and load.seconds is not None:
            cpu = cpu_share(root, mark, load.rps * load.seconds)
        loads.append(load)
    rss = rss_bytes(process_tree(root)) / 2**20
    return Figures(loads[0], loads[1], loads[2], rss_mb=rss, cpu=cpu)


def in_process(pipeline: Pipeline, rows: int, budget_s: float) -> float:
    """Seconds per predict_proba on a DataFrame of `rows` rows built beforehand: the best of 5 loops."""
    frame = pipeline.frame.iloc[:rows].copy()
    model = pipeline.model
    model.predict_proba(frame)
    started = time.perf_counter()
    model.predict_proba(frame)
    calls = max(5, int(budget_s / 5 / max(time.perf_counter() - started, 1e-6)))
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            model.predict_proba(frame)
        best = min(best, (time.perf_counter() - started) / calls)
    return best


BARE_LOAD = """
import sys, time, json
import joblib, numpy, pandas
frame = pandas.DataFrame(json.loads(sys.argv[2]))
times = []
for _ in range(2):
    started = time.perf_counter()
    model = joblib.load(sys.argv[1])
    model.predict_proba(frame)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def bare_first_prediction(pipeline: Pipeline) -> tuple[float, float]:
    """A fresh process's `joblib.load` + one `predict_proba`, timed inside it (interpreter start,
    `import joblib, numpy, pandas` and the one-row DataFrame before the clock), twice: (the first
    time: the target's baseline, which imports the scikit-learn modules the pickle names and pays
    predict's first-call costs; the second time: a load and a predict and nothing else)."""
    argv = [sys.executable, "-c", BARE_LOAD, str(pipeline.path), json.dumps(pipeline.records(1))]
    first, second = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return float(first), float(second)


def cold_round(maas: Maas, pipelines: list[Pipeline], round_: int, results: Results) -> None:
    """One round of cold first predictions: maas's against the bare baseline, per pipeline."""
    for p in pipelines:
        cold = results.cold.setdefault(p.name, {k: [] for k in ("upload", "maas", "bare", "again")})
        try:
            uploaded, first = maas_first_prediction(maas, p, f"cold-{p.name}-{round_ + 1}")
        except (ServerFailed, requests.RequestException) as exc:
            print(f"  cold first prediction FAILED: {str(exc)[:300]}", flush=True)
            continue
        bare, again = bare_first_prediction(p)
        for key, value in (("upload", uploaded), ("maas", first), ("bare", bare), ("again", again)):
            cold[key].append(value)


def maas_first_prediction(maas: Maas, pipeline: Pipeline, name: str) -> tuple[float, float]:
    """A fresh upload (a model name never used): (the upload's time to its 201, then the wall time
    of the first prediction)."""
    assert maas.server is not None
    started = time.perf_counter()
    maas.upload(name, pipeline.path, "serve_bench cold start")
    uploaded = time.perf_counter() - started
    body = json.dumps({"data": pipeline.data(1), "return_probabilities": True})
    started = time.perf_counter()
    response = requests.post(
        f"{maas.server.url}/api/models/{name}/predict",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return uploaded, elapsed


@contextmanager
def rss_sampler(root: int, every_s: float = 0.05) -> Iterator[list[tuple[int, int]]]:
    """Samples (RSS of the whole tree, RSS of the master and its direct children) every `every_s`."""
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            tree = process_tree(root)
            web = [p for p in tree if p == root or ((s := _stat(p)) is not None and s[0] == root)]
            samples.append((rss_bytes(tree), rss_bytes(web)))
            stop.wait(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def big_upload(maas: Maas, path: Path) -> dict[str, Any]:
    """The upload's throughput and the server tree's RSS around it, or {"error": why} when refused."""
    assert maas.server is not None
    root = maas.server.process.pid
    with rss_sampler(root) as before:
        time.sleep(1.0)
    base_tree = statistics.median(s[0] for s in before)
    base_web = statistics.median(s[1] for s in before)
    size = path.stat().st_size
    with rss_sampler(root) as during:
        started = time.perf_counter()
        try:
            maas.upload("bench-big-forest", path, "serve_bench 200 MB upload")
        except (ServerFailed, requests.RequestException) as exc:
            return {"error": str(exc)[:500]}
        elapsed = time.perf_counter() - started
        time.sleep(0.5)  # what the upload left behind
    return {
        "artifact_mb": size / 2**20,
        "seconds": elapsed,
        "mb_per_s": size / 2**20 / elapsed,
        "rss_before_mb": base_tree / 2**20,
        "peak_increase_mb": (max(s[0] for s in during) - base_tree) / 2**20,
        "peak_increase_web_mb": (max(s[1] for s in during) - base_web) / 2**20,
        "after_mb": during[-1][0] / 2**20,
    }


# -- results ----------------------------------------------------------------------------------------
def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present and len(present) == len(values) else None


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 or digits == 0 else f"{value:.{digits}f}"


@dataclass
class Results:
    rounds: int
    duration: float
    # per system label, per pipeline: the rounds' Figures
    servers: dict[str, dict[str, list[Figures]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    in_process: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # pipeline -> "1"/"100" -> s
    cold: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # pipeline -> maas/bare -> s
    upload: dict[str, Any] = field(default_factory=dict)

    def summary(self, label: str, pipeline: str) -> dict[str, float | None]:
        runs = self.servers.get(label, {}).get(pipeline, [])
        if not runs:
            return dict.fromkeys(
                ("p50_c1", "p99_c1", "rps_c16", "p99_c16", "rows_s", "rss_mb", "cpu_web", "cpu_below", "cpu_wrk")
            )
        return {
            "p50_c1": median([r.c1.p50_ms for r in runs]),
            "p99_c1": median([r.c1.p99_ms for r in runs]),
            "rps_c16": median([r.c16.rps for r in runs]),
            "p99_c16": median([r.c16.p99_ms for r in runs]),
            "rows_s": median([None if r.batch.rps is None else r.batch.rps * BATCH for r in runs]),
            "rss_mb": median([r.rss_mb for r in runs]),
            "cpu_web": median([r.cpu.web if r.cpu else None for r in runs]),
            "cpu_below": median([r.cpu.below if r.cpu else None for r in runs]),
            "cpu_wrk": median([r.cpu.wrk if r.cpu else None for r in runs]),
        }

    def errors(self, label: str, pipeline: str) -> list[str]:
        found = []
        for r in self.servers.get(label, {}).get(pipeline, []):
            for what, load in (("c1", r.c1), ("c16", r.c16), (f"{BATCH} rows", r.batch)):
                if load.error and load.error != "n/a":
                    found.append(f"{what}: {load.error}")
        return found

    def in_process_summary(self, pipeline: str) -> tuple[float | None, float | None]:
        one = self.in_process.get(pipeline, {}).get("1", [])
        batch = self.in_process.get(pipeline, {}).get(str(BATCH), [])
        return (
            statistics.median(one) * 1e3 if one else None,
            BATCH / statistics.median(batch) if batch else None,
        )


CPU_HELP = (
    "user + system time from /proc over the run, divided by the requests served; on 2 cores, "
    "2000 ms of CPU per second is all there is"
)
TARGETS_HELP = "ratios of medians of rounds; latency ratios are maas / other (lower is better)"


def targets(
    results: Results, pipelines: list[str], peers: bool
) -> list[tuple[str, str, float | None, str, bool | None]]:
    """(target, pipeline, measured, required, passed) for every target of issue 14."""
    rows: list[tuple[str, str, float | None, str, bool | None]] = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    def add(target: str, pipeline: str, value: float | None, op: str, bound: float) -> None:
        passed = (
            None
            if value is None
            else (value >= bound if op == ">=" else value <= bound if op == "<=" else value < bound)
        )
        rows.append((target, pipeline, value, f"{op} {bound:g}", passed))

    for p in pipelines:
        flask = results.summary("minimal Flask (cached)", p)
        _, limit_rows = results.in_process_summary(p)
        floor = results.summary(FLOOR, p)
        rows.append(
            (
                "req/s c16 1 row, Flask floor (no model) / minimal Flask (the most a Flask app reaches)",
                p,
                ratio(floor["rps_c16"], flask["rps_c16"]),
                "info",
                None,
            )
        )
        for engine in ("onnx", "sklearn"):
            maas = results.summary(f"maas engine={engine}", p)
            rps_bound = 3.0 if engine == "onnx" else (1.5 if p == "numeric" else 1.0)
            add(
                f"req/s c16 1 row, maas {engine} / minimal Flask",
                p,
                ratio(maas["rps_c16"], flask["rps_c16"]),
                ">=",
                rps_bound,
            )
            p50_bound = 0.5 if engine == "onnx" else 1.1
            add(
                f"p50 c1 1 row, maas {engine} / minimal Flask",
                p,
                ratio(maas["p50_c1"], flask["p50_c1"]),
                "<=",
                p50_bound,
            )
            rows_bound = 1.0 if engine == "onnx" else 0.7
            add(
                f"rows/s {BATCH}-row, maas {engine} / in-process",
                p,
                ratio(maas["rows_s"], limit_rows),
                ">=",
                rows_bound,
            )
        cold = results.cold.get(p, {})
        cold_ratio = (
            ratio(statistics.median(cold["maas"]), statistics.median(cold["bare"])) if cold.get("maas") else None
        )
        add("cold first prediction, maas / bare joblib.load + predict_proba", p, cold_ratio, "<=", 1.3)
        again = ratio(statistics.median(cold["maas"]), statistics.median(cold["again"])) if cold.get("maas") else None
        rows.append(
            ("cold first prediction, maas / bare load + predict again (imports excluded)", p, again, "info", None)
        )
    increase = results.upload.get("peak_increase_mb")
    rows.append(
        (
            "200 MB upload: server tree peak RSS increase, MB",
            "-",
            increase,
            "< 64",
            None if increase is None else increase < 64,
        )
    )
    web = results.upload.get("peak_increase_web_mb")  # where the increase is: not a target
    rows.append(("200 MB upload: master and workers alone (runners excluded), MB", "-", web, "info", None))
    if peers:
        for p in pipelines:
            mlflow = results.summary("mlflow models serve", p)
            for engine in ("onnx", "sklearn"):
                maas = results.summary(f"maas engine={engine}", p)
                factors = [
                    ratio(mlflow["p50_c1"], maas["p50_c1"]),
                    ratio(mlflow["p99_c1"], maas["p99_c1"]),
                    ratio(maas["rps_c16"], mlflow["rps_c16"]),
                    ratio(mlflow["p99_c16"], maas["p99_c16"]),
                ]
                worst = None if any(f is None for f in factors) else min(f for f in factors if f is not None)
                add(f"maas {engine} vs mlflow, worst single-row factor", p, worst, ">=", 4.0)
    return rows


def report(results: Results, systems: list[System], pipelines: list[Pipeline], peers: bool) -> dict[str, Any]:
    names = [p.name for p in pipelines]
    print(f"\n## Serving ({results.rounds} round(s) of {results.duration:g} s per figure; medians of rounds)\n")
    header = [
        "system",
        "pipeline",
        "p50 c1 ms",
        "p99 c1 ms",
        "req/s c16",
        "p99 c16 ms",
        f"rows/s {BATCH}-row c16",
        "RSS MB",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for p in names:
        p50, rows_s = results.in_process_summary(p)
        print(f"| in-process predict_proba (limit) | {p} | {fmt(p50, 3)} | - | - | - | {fmt(rows_s, 0)} | - |")
    table: dict[str, Any] = {}
    for system in systems:
        for p in names:
            s = results.summary(system.label, p)
            table.setdefault(system.label, {})[p] = s
            cells = [fmt(s["p50_c1"]), fmt(s["p99_c1"]), fmt(s["rps_c16"], 0), fmt(s["p99_c16"])]
            cells += [fmt(s["rows_s"], 0), fmt(s["rss_mb"], 0)]
            print(f"| {system.label} | {p} | " + " | ".join(cells) + " |")
    for system in systems:
        if system.label in results.unavailable:
            print(f"\nn/a: {system.label}: {results.unavailable[system.label]}")
        for p in names:
            for error in sorted(set(results.errors(system.label, p))):
                print(f"\nFAILED: {system.label}, {p}: {error}")

    print(f"\n## CPU per single-row request at concurrency 16 (ms, medians of rounds; {CPU_HELP})\n")
    print("| system | pipeline | master and workers | below them (maas: runners) | wrk | all |")
    print("|---|---|---|---|---|---|")
    for system in systems:
        for p in names:
            s = results.summary(system.label, p)
            parts = [s["cpu_web"], s["cpu_below"], s["cpu_wrk"]]
            total = None if any(v is None for v in parts) else sum(v for v in parts if v is not None)
            print(f"| {system.label} | {p} | " + " | ".join(fmt(v, 3) for v in [*parts, total]) + " |")

    print("\n## maas: cold first prediction and a 200 MB upload\n")
    print("| pipeline | maas upload ms | maas first prediction ms | bare load + predict ms | ratio | bare, again ms |")
    print("|---|---|---|---|---|---|")
    for p in names:
        cold = {k: statistics.median(v) * 1e3 if v else None for k, v in results.cold.get(p, {}).items()}
        m, b = cold.get("maas"), cold.get("bare")
        ratio = None if m is None or b is None else m / b
        print(f"| {p} | {fmt(cold.get('upload'))} | {fmt(m)} | {fmt(b)} | {fmt(ratio)} | {fmt(cold.get('again'))} |")
    u = results.upload
    if "error" in u:
        print(f"\n200 MB upload FAILED: {u['error']}")
    elif u:
        print(
            f"\n200 MB upload: {u['artifact_mb']:.0f} MB in {u['seconds']:.2f} s = "
            f"{u['mb_per_s']:.1f} MB/s (until 201); "
            f"server tree RSS {u['rss_before_mb']:.0f} MB before, peak +{u['peak_increase_mb']:.0f} MB "
            f"(master and workers alone: +{u['peak_increase_web_mb']:.0f} MB), {u['after_mb']:.0f} MB after"
        )

    print(f"\n## Targets ({TARGETS_HELP})\n")
    print("| target | pipeline | measured | required | result |")
    print("|---|---|---|---|---|")
    checked = targets(results, names, peers)
    for target, p, value, required, passed in checked:
        verdict = "-" if required == "info" else "n/a" if passed is None else "PASS" if passed else "FAIL"
        print(f"| {target} | {p} | {fmt(value)} | {required} | {verdict} |")
    return {
        "table": table,
        "in_process": {p: dict(zip(("p50_ms", "rows_s"), results.in_process_summary(p), strict=True)) for p in names},
        "targets": [
            {"target": t, "pipeline": p, "measured": v, "required": r, "passed": ok} for t, p, v, r, ok in checked
        ],
    }


# -- the run ----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2 s per figure, 1 round, short warm-ups")
    parser.add_argument("--peers", action="store_true", help="also mlflow models serve and MLServer (own venvs)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per figure (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are their medians (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load before each figure")
    parser.add_argument("--mlflow", default=MLFLOW_SPEC, help=f"pip requirement for the MLflow peer ({MLFLOW_SPEC})")
    parser.add_argument("--skip-upload", action="store_true", help="leave out the 200 MB upload")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 2.0, 1, 1.0
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2

    pipelines = [numeric_pipeline(), categorical_pipeline()]
    maas = Maas()
    systems: list[System] = [
        FlaskApp(FLOOR, "floor"),
        FlaskApp("seed-style Flask (load per request)", "seed"),
        FlaskApp("minimal Flask (cached)", "minimal"),
        MaasEngine(maas, "sklearn"),
        MaasEngine(maas, "onnx"),
    ]
    if args.peers:
        systems += [Mlflow(args.mlflow), MLServer()]
    results = Results(args.rounds, args.duration)
    big = None if args.skip_upload else big_forest()

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        (work / "models").mkdir()
        for p in pipelines:
            p.path = work / "models" / f"{p.name}.joblib"
            joblib.dump(p.model, p.path)
        try:
            for system in systems:
                print(f"starting {system.label} ...", flush=True)
                try:
                    system.start(work, pipelines)
                except ServerFailed as exc:
                    system.unavailable = f"did not start: {str(exc)[-500:]}"
                if system.unavailable:
                    results.unavailable[system.label] = system.unavailable
                    print(f"  n/a: {system.unavailable}", flush=True)
            running = [s for s in systems if not s.unavailable]
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}", flush=True)
                for p in pipelines:
                    results.in_process.setdefault(p.name, {}).setdefault("1", []).append(in_process(p, 1, 1.0))
                    results.in_process[p.name].setdefault(str(BATCH), []).append(in_process(p, BATCH, 1.0))
                order = running[round_ % len(running) :] + running[: round_ % len(running)]
                for system in order:
                    for p in pipelines:
                        print(f"  {system.label}, {p.name}", flush=True)
                        figures = measure(system, p, args.duration, args.warmup)
                        results.servers.setdefault(system.label, {}).setdefault(p.name, []).append(figures)
                if maas.server is not None:
                    cold_round(maas, pipelines, round_, results)
            if big is not None and maas.server is not None:
                print("uploading the 200 MB forest to maas ...", flush=True)
                results.upload = big_upload(maas, big)
        finally:
            for system in systems:
                system.stop()

    summary = report(results, systems, pipelines, args.peers)
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = {
        "args": vars(args),
        "unavailable": results.unavailable,
        "rounds": {
            label: {p: [_figures_dict(f) for f in runs] for p, runs in per.items()}
            for label, per in results.servers.items()
        },
        "in_process_s": results.in_process,
        "cold_s": results.cold,
        "upload": results.upload,
        **summary,
    }
    (CACHE / "last.json").write_text(json.dumps(raw, indent=1))
    print("\n(written to bench/.cache/last.json)")
    return 0


def _figures_dict(figures: Figures) -> dict[str, Any]:
    return {
        "c1": vars(figures.c1),
        "c16": vars(figures.c16),
        f"batch{BATCH}_c16": vars(figures.batch),
        "rss_mb": figures.rss_mb,
        "cpu_ms_per_request_c16": vars(figures.cpu) if figures.cpu else None,
    }


if __name__ == "__main__":
    sys.exit(main())
