"""The web worker's side of the runners: start them from the zygote, call them with a deadline,
kill and replace them, and keep one per model version (an LRU of MAAS_CACHE_MODELS).

What a runner answers is checked here (protocol.py bounds its size, dtypes and lengths) and turned
into the model store's domain errors: PredictionFailed (the model raised: 422), InvalidArtifact /
UnsafeArtifact (it cannot be loaded: 422), RunnerTimedOut (504) and RunnerFailed (503: it died, ran
out of memory or broke the protocol). A runner killed or dead is replaced by the next request.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np
from cachetools import LRUCache

from model_store.errors import (
    InvalidArtifact,
    PredictionFailed,
    RunnerFailed,
    RunnerTimedOut,
    UnsafeArtifact,
)
from model_store.features import FeatureSpec
from serving.runners import protocol
from serving.telemetry import metrics

log = logging.getLogger(__name__)
# Heads the traceback of a model's own exception in the server's log (one per failed call).
MODEL_TRACEBACK = "its traceback in the runner:"

MAX_REPLY_BYTES = 256 << 20
# The engines a runner predicts with: the model's own code, or its verified ONNX graph.
ENGINES = ("sklearn", "onnx")
ZYGOTE_START_SECONDS = 120.0
# The only environment a zygote (and so every runner) gets: one BLAS/OpenMP thread each, so that
# RLIMIT_AS measures the model and not thread stacks and BLAS buffers.
RUNNER_ENVIRONMENT = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class RunnerLimits:
    """What every runner of a pool gets: no secrets in here, it is sent to the zygote."""

    memory_bytes: int
    timeout: float
    max_model_bytes: int | None
    trusted_modules: tuple[str, ...] = ()
    sandbox: bool = True


class Runner:
    """One runner process and its socket; calls are one at a time."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket, limits: RunnerLimits, label: str) -> None:
        self.pid = pid
        self.limits = limits
        self.label = label
        self.facts: dict[str, Any] = {}
        self._pidfd = pidfd
        self._sock = sock
        self._lock = threading.Lock()
        self._dead = False

    # -- life ------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """False once killed, or once the process has ended (its pidfd turns readable)."""
        if self._dead:
            return False
        if select.select([self._pidfd], [], [], 0)[0]:
            self.kill()
        return not self._dead

    def kill(self) -> None:
        """SIGKILL the process (through its pidfd: never another process that got its pid)."""
        if self._dead:
            return
        self._dead = True
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except OSError:  # already gone
            pass
        self._sock.close()
        os.close(self._pidfd)

    # -- calls -----------------------------------------------------------------------------------
    def call(
        self, header: dict[str, Any], arrays: Sequence[np.ndarray] = (), fds: Sequence[int] = ()
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Send one message and wait for the answer, at most `limits.timeout` seconds in all.

        Raises RunnerTimedOut (the runner is killed), RunnerFailed (it died, or answered outside
        the protocol: killed), and the domain error a runner's error answer stands for.
        """
        with self._lock:
            if self._dead:
                raise RunnerFailed(f"{self.label} cannot be served: its runner has stopped; try again.")
            deadline = time.monotonic() + self.limits.timeout
            try:
                self._sock.settimeout(self.limits.timeout)
                protocol.send(self._sock, header, arrays, fds)
                reply, reply_arrays, _ = protocol.recv(self._sock, MAX_REPLY_BYTES, deadline=deadline)
            except TimeoutError:
                self.kill()
                raise RunnerTimedOut(
                    f"{self.label} did not answer within {self.limits.timeout:g} s (MAAS_PREDICT_TIMEOUT): "
                    "its runner was stopped."
                ) from None
            except (OSError, protocol.ProtocolError, ValueError, RecursionError) as exc:
                self.kill()
                raise RunnerFailed(f"{self.label} cannot be served: {_death(exc)}") from None
        if reply.get("ok") is True:
            return reply, reply_arrays
        raise self._error(reply.get("error"))

    def _error(self, error: Any) -> Exception:
        if not isinstance(error, dict):
            self.kill()
            return RunnerFailed(f"{self.label} cannot be served: its runner answered outside the protocol.")
        kind, message = error.get("kind"), error.get("message")
        message = message if isinstance(message, str) else ""
        if kind == "memory":
            self.kill()
            return RunnerFailed(
                f"{self.label} ran out of memory (MAAS_RUNNER_MEMORY is {self.limits.memory_bytes} bytes): its "
                "runner was stopped."
            )
        if kind == "unsafe":
            offending = error.get("offending")
            names = [str(n)[:200] for n in offending[:100]] if isinstance(offending, list) else ["<unknown>"]
            return UnsafeArtifact(names, message or None)
        if kind == "invalid":
            return InvalidArtifact(message or "The artifact could not be loaded.")
        if kind == "failed":
            detail = error.get("detail")
            said = f"{message}: {detail}" if isinstance(detail, str) and detail else message
            trace = error.get("traceback")
            if isinstance(trace, str) and trace:
                # For whoever runs the service: the client is told the class (and a safe message) only.
                log.warning("%s raised %s; %s\n%s", self.label, message, MODEL_TRACEBACK, trace)
            return PredictionFailed(f"Model {self.label} failed on this input ({said}).")
        self.kill()
        return RunnerFailed(f"{self.label} cannot be served: its runner answered outside the protocol.")

    def load(
        self,
        file: BinaryIO,
        fmt: str | None,
        schema: str | None = None,
        features: Sequence[FeatureSpec] | None = None,
        graph: BinaryIO | None = None,
        graph_features: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Load the artifact in `file` (opened and verified by the caller) in this runner.

        `schema`: None, "infer", "positional" (x0, x1, ... for a model fitted without feature names)
        or "declared" (then `features` is checked against the model).
        `graph`: the version's verified ONNX file (opened and verified by the caller too), for the
        runner's ONNX engine, and `graph_features` the names of the version's features in order.
        Returns the runner's answer: "facts" about the model and, when asked, "features" (the
        contract's JSON, unchecked: the caller checks it).
        """
        header = {
            "op": "load",
            "format": fmt,
            "schema": schema,
            "features": [f.to_json() for f in features] if features is not None else None,
            "trusted_modules": list(self.limits.trusted_modules),
            "max_model_bytes": self.limits.max_model_bytes,
            "onnx": list(graph_features) if graph is not None else None,
        }
        fds = [file.fileno()] if graph is None else [file.fileno(), graph.fileno()]
        try:
            reply, _ = self.call(header, fds=fds)
        except PredictionFailed as exc:  # a load that raised in the model's own code
            raise InvalidArtifact(f"The artifact could not be loaded: {exc.message}") from None
        facts = reply.get("facts")
        if not isinstance(facts, dict):
            self.kill()
            raise RunnerFailed(f"{self.label} cannot be served: its runner answered outside the protocol.")
        self.facts = _checked_facts(facts)
        return reply

    def compile(
        self,
        features: Sequence[FeatureSpec],
        batches: Sequence[tuple[dict[str, Any], int]],
        frame: list[str] | None,
    ) -> tuple[bytes | None, str | None]:
        """Compile the loaded model to ONNX, verified on `batches` (checked columns and their row
        count): (the graph's bytes, None), or (None, why there is none)."""
        arrays: list[np.ndarray] = []
        header = {
            "op": "compile",
            "features": [f.to_json() for f in features],
            "frame": frame,
            "batches": [{"rows": rows, "columns": protocol.pack_columns(columns, arrays)} for columns, rows in batches],
        }
        reply, reply_arrays = self.call(header, arrays)
        try:
            graph, detail = reply.get("onnx"), reply.get("detail")
            if graph is None:
                if not isinstance(detail, str):
                    raise protocol.ProtocolError("a compile answer without its reason")
                protocol.check_json_value(detail)
                return None, detail
            data = protocol.unpack_values(graph, reply_arrays)
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
                raise protocol.ProtocolError("the compiled graph must be bytes")
            self.facts = {**self.facts, "engines": ["sklearn", "onnx"]}
            return data.tobytes(), None
        except (protocol.ProtocolError, KeyError, TypeError, AttributeError) as exc:
            self.kill()
            raise RunnerFailed(f"{self.label} cannot be served: {_death(exc)}") from None

    def predict(
        self,
        columns: dict[str, Any],
        rows: int,
        frame: list[str] | None,
        with_probabilities: bool,
        engine: str = "auto",
    ) -> tuple[Any, list[str] | None, np.ndarray | None, str]:
        """(predictions, probability keys, probabilities, the engine that answered) for `rows`
        rows given as checked columns; `engine` as the request names it (auto, sklearn, onnx)."""
        arrays: list[np.ndarray] = []
        header = {
            "op": "predict",
            "rows": rows,
            "columns": protocol.pack_columns(columns, arrays),
            "frame": frame,
            "probabilities": with_probabilities,
            "engine": engine,
        }
        reply, reply_arrays = self.call(header, arrays)
        try:
            answered = reply.get("engine")
            if answered not in ENGINES or (engine != "auto" and answered != engine):
                raise protocol.ProtocolError("the answer names no engine, or another than asked for")
            predictions = protocol.unpack_values(reply.get("predictions"), reply_arrays, rows)
            probabilities: Any = reply.get("probabilities")
            if not with_probabilities:
                return predictions, None, None, answered
            keys = probabilities["keys"]
            proba = protocol.unpack_values({"array": probabilities["array"]}, reply_arrays, rows)
            if not (isinstance(keys, list) and all(isinstance(k, str) and len(k) <= protocol.MAX_STRING for k in keys)):
                raise protocol.ProtocolError("probability keys must be strings")
            if proba.ndim != 2 or proba.shape[1] != len(keys):
                raise protocol.ProtocolError("probabilities do not match their keys")
            return predictions, keys, proba, answered
        except (protocol.ProtocolError, KeyError, TypeError, AttributeError) as exc:
            self.kill()
            raise RunnerFailed(f"{self.label} cannot be served: {_death(exc)}") from None


def _death(exc: BaseException) -> str:
    if isinstance(exc, protocol.PeerClosed):
        return "its runner died (killed, crashed, or out of memory); try again."
    if isinstance(exc, protocol.ProtocolError):
        return f"its runner answered outside the protocol ({exc})."
    return f"its runner cannot be reached ({type(exc).__name__})."


_FACT_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "estimator": str,
    "has_predict_proba": bool,
    "classes": (list, type(None)),
    "library_versions": dict,
    "feature_names": (list, type(None)),
    "n_features": (int, type(None)),
    "engines": list,
}


def _checked_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts a runner reports about its model, bounded like every other answer."""
    checked: dict[str, Any] = {}
    for key, kind in _FACT_TYPES.items():
        value = facts.get(key)
        if not isinstance(value, kind):
            raise protocol.ProtocolError(f"fact {key!r} has the wrong type")
        if isinstance(value, dict) and (
            len(value) > 64 or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            raise protocol.ProtocolError(f"fact {key!r} must map strings to strings")
        protocol.check_json_value(list(value.values()) if isinstance(value, dict) else value)
        checked[key] = value
    if checked["feature_names"] is not None and not all(isinstance(n, str) for n in checked["feature_names"]):
        raise protocol.ProtocolError("feature names must be strings")
    if checked["engines"] not in (["sklearn"], ["sklearn", "onnx"]):
        raise protocol.ProtocolError("fact 'engines' names unknown engines")
    return checked


# -- the zygote ------------------------------------------------------------------------------------
class _Zygote:
    """The process runners are forked from; one per web worker process, started when first needed."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        config = {
            "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
            "control_fd": theirs.fileno(),
        }
        bootstrap = (
            "import json, sys; config = json.loads(sys.argv[1]); sys.path[:] = config['sys_path']; "
            "from serving.runners.zygote import main; main()"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap, json.dumps(config)],
            env=RUNNER_ENVIRONMENT,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.ready = False

    def _wait_ready(self) -> None:
        """The zygote says it is ready once its imports are done (about a second): waited for by
        the first spawn, so that starting one never blocks its web worker."""
        self.sock.settimeout(ZYGOTE_START_SECONDS)
        try:
            protocol.recv(self.sock, 1 << 16)
        except (OSError, protocol.ProtocolError) as exc:
            raise RunnerFailed(f"Model runners cannot be started: the zygote did not come up ({_death(exc)})") from None
        self.ready = True

    def spawn(self, limits: RunnerLimits, label: str) -> Runner:
        ours, theirs = socket.socketpair()
        try:
            with self.lock:
                if not self.ready:
                    self._wait_ready()
                self.sock.settimeout(ZYGOTE_START_SECONDS)
                protocol.send(self.sock, {"op": "spawn", "limits": asdict(limits)}, fds=[theirs.fileno()])
                reply, _, fds = protocol.recv(self.sock, 1 << 16, with_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if not reply.get("ok") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            ours.close()
            raise RunnerFailed(f"{label} cannot be served: the zygote refused to start a runner.")
        return Runner(int(reply["pid"]), fds[0], ours, limits, label)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _forget_zygote_in_child() -> None:
    # A forked process (a gunicorn worker) must not share its parent's zygote: start its own.
    global _zygote, _zygote_lock
    _zygote, _zygote_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_zygote_in_child)


def spawn_runner(limits: RunnerLimits, label: str) -> Runner:
    """A fresh runner from this process's zygote (started, or restarted, when needed)."""
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive:
            _zygote = _Zygote()
        zygote = _zygote
    try:
        return zygote.spawn(limits, label)
    except (OSError, protocol.ProtocolError, RunnerFailed) as exc:
        with _zygote_lock:
            if _zygote is zygote:
                zygote.stop()
                _zygote = None
        if isinstance(exc, RunnerFailed):
            raise
        raise RunnerFailed(f"{label} cannot be served: no runner could be started ({_death(exc)})") from None


def start_zygote() -> None:
    """Start this process's zygote now rather than at the first model call (it comes up in the
    background; the first spawn waits for it)."""
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive:
            _zygote = _Zygote()


def stop_zygote() -> None:
    """Stop this process's zygote (a process that forks workers next: they start their own)."""
    global _zygote
    with _zygote_lock:
        if _zygote is not None:
            _zygote.stop()
            _zygote = None


# -- the pool --------------------------------------------------------------------------------------
class _Runners(LRUCache):
    """An LRU whose evicted runners are killed."""

    def popitem(self) -> tuple[Any, Runner]:
        key, runner = super().popitem()
        runner.kill()
        return key, runner


class RunnerPool:
    """One runner per model version, kept alive while used (LRU of `maxsize`)."""

    def __init__(self, limits: RunnerLimits, maxsize: int) -> None:
        self.limits = limits
        self._runners = _Runners(max(1, maxsize))
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.loads = 0
        self.hits = 0
        # A pool dropped without close() (an app a test threw away) still stops its runners.
        weakref.finalize(self, _kill_all, self._runners)

    def warm(self) -> None:
        """Start this process's zygote now, without waiting for it (a web worker starting up)."""
        start_zygote()

    def start(self, label: str) -> Runner:
        """A new runner that belongs to no version yet (an upload's), for the caller to kill or adopt."""
        return spawn_runner(self.limits, label)

    def adopt(self, key: Hashable, runner: Runner) -> None:
        """Keep a runner that already loaded `key`'s artifact (an upload just recorded)."""
        with self._lock:
            old = self._runners.pop(key, None)
            self._runners[key] = runner
            metrics.MODELS_IN_MEMORY.set(len(self._runners))
        if old is not None and old is not runner:
            old.kill()

    def get(self, key: Hashable, label: str, load: Callable[[Runner], None]) -> Runner:
        """The live runner serving `key`; one is started and `load`ed when there is none.
        One thread loads a given key; the others wait for it."""
        runner = self._live(key)
        if runner is not None:
            return runner
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        try:
            with loading:
                runner = self._live(key)
                if runner is None:
                    runner = spawn_runner(self.limits, label)
                    try:
                        load(runner)
                    except BaseException:
                        runner.kill()
                        raise
                    with self._lock:
                        self._runners[key] = runner  # may evict (and kill) the least recently used
                        self.loads += 1
                        metrics.MODELS_IN_MEMORY.set(len(self._runners))
        finally:
            with self._lock:
                self._loading.pop(key, None)
        return runner

    def _live(self, key: Hashable) -> Runner | None:
        with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                return None
            if runner.alive:
                self.hits += 1
                return runner
            del self._runners[key]
            metrics.MODELS_IN_MEMORY.set(len(self._runners))
            return None

    def __len__(self) -> int:
        return len(self._runners)

    def close(self) -> None:
        """Kill every runner (the pool's owner is going away)."""
        with self._lock:
            _kill_all(self._runners)
            metrics.MODELS_IN_MEMORY.set(0)


def _kill_all(runners: _Runners) -> None:
    for runner in list(runners.values()):
        runner.kill()
    runners.clear()
