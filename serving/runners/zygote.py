"""The zygote: a clean process with the model libraries imported, which forks runners on request.

Started by a web worker with an empty environment (no tokens, no database URL) and no inherited
descriptors but its control socket, it imports numpy, scipy, pandas, scikit-learn and the loader
once; every runner is a fork of it, so a runner starts in milliseconds and shares those pages.

Its control socket takes one message per runner: {"op": "spawn", "limits": {...}} with the
runner's end of a fresh socket pair attached. The zygote forks; the child keeps only that socket,
sets its limits, confines itself and serves (runner.py); the zygote answers {"pid": pid} with a
pidfd of the child attached, by which the web worker can kill it without any pid-reuse race.
The zygote leaves when its web worker closes the control socket (or dies).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

# Imported here, before any fork, so runners find them in memory: scikit-learn imports submodules
# lazily while unpickling, and a confined runner can still read site-packages, but each import
# costs time at every cold start.
PRELOADED = (
    "numpy",
    "scipy",
    "scipy.sparse",
    "scipy.special",
    "scipy.stats",
    "pandas",
    "joblib",
    "sklearn",
    "sklearn.base",
    "sklearn.pipeline",
    "sklearn.compose",
    "sklearn.preprocessing",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.svm",
    "sklearn.neighbors",
    "sklearn.naive_bayes",
    "sklearn.neural_network",
    "sklearn.cluster",
    "sklearn.decomposition",
    "sklearn.feature_selection",
    "sklearn.feature_extraction",
    "sklearn.model_selection",
    "sklearn.calibration",
    "sklearn.dummy",
    "sklearn.kernel_approximation",
    "sklearn.isotonic",
    "sklearn.multiclass",
    "sklearn.multioutput",
    "sklearn.covariance",
    "skops.io",
    "model_store.loader",
    "model_store.features",
    "model_store.safety",
    "serving.runners.runner",
    "serving.runners.confine",
    # The ONNX engine: the converter (at upload) and onnxruntime (every runner of a compiled version).
    "serving.runners.compiled",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "skl2onnx.common.data_types",
    "landlock",
    "pyseccomp",
)
CONTROL_MESSAGE_BYTES = 1 << 20


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:] = config["sys_path"]
    control = socket.socket(fileno=config["control_fd"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the worker decides
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PRELOADED:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    from serving.runners import protocol

    protocol.send(control, {"ok": True, "pid": os.getpid()})
    while True:
        _reap()
        ready, _, _ = select.select([control], [], [], 1.0)
        if not ready:
            continue
        try:
            header, _, fds = protocol.recv(control, CONTROL_MESSAGE_BYTES, with_fds=True)
        except protocol.PeerClosed:
            return
        if header.get("op") != "spawn" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            protocol.send(control, {"ok": False, "error": "expected a spawn with one socket"})
            continue
        limits = header["limits"]
        roots = _trusted_module_roots(limits.get("trusted_modules", ()))
        pid = os.fork()
        if pid == 0:
            _become_runner(fds[0], control.fileno(), limits, roots)
        os.close(fds[0])
        pidfd = os.pidfd_open(pid)
        try:
            protocol.send(control, {"ok": True, "pid": pid}, fds=[pidfd])
        finally:
            os.close(pidfd)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _trusted_module_roots(modules: list[str]) -> list[str]:
    """Import the modules an operator trusted (here, before any confinement: import-time code of
    operator-vouched packages), and return the package directories a runner may read for their
    lazily imported submodules. A single-file module needs none: it is already in memory."""
    roots: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
            spec = importlib.util.find_spec(name)
        except Exception:  # noqa: BLE001 - a module that is not installed: the load will say so
            continue
        if spec is not None and spec.submodule_search_locations:
            roots.extend(str(p) for p in spec.submodule_search_locations)
    return roots


def _become_runner(fd: int, control_fd: int, limits: dict[str, Any], roots: list[str]) -> None:
    """In the forked child: keep only the runner socket, limit, confine, serve; never return."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.close(control_fd)
        keep = fd
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 16)
        # Nothing a model prints reaches the server's log or terminal.
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(null, std)
        os.close(null)
        from serving.runners import confine, runner

        confine.limit_resources(int(limits["memory_bytes"]))
        if limits.get("sandbox", True):
            confine.confine(confine.readable_roots(roots))
        runner.serve(socket.socket(fileno=keep))
        status = 0
    except BaseException:  # noqa: BLE001 - a runner that cannot start just ends; its peer sees EOF
        status = 2
    finally:
        os._exit(status)


if __name__ == "__main__":
    start = time.monotonic()
    main()
