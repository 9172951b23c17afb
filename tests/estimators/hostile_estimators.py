"""Hostile estimators: models whose own code attacks the server that runs them.

Trusted on purpose (MAAS_TRUSTED_MODULES=tests.estimators.hostile_estimators) so that the pickle scan lets
them through: what stops them must be the runner's confinement, limits and process boundary.
Each one fits like a regressor on a DataFrame and, at predict (or, for `AttacksOnUnpickling`, while it is
unpickled), performs its attack. An attack that works leaves evidence: a marker file, a
connection to the test's listener, or a secret in its answer.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class Hostile(RegressorMixin, BaseEstimator):
    """Predicts zeros after running `attack`; `target` is what the attack aims at (a path, a port)."""

    def __init__(self, attack: str = "none", target: str = "") -> None:
        self.attack = attack
        self.target = target

    def fit(self, X: Any, y: Any = None) -> Hostile:
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> Any:
        values = np.asarray(X)
        if values.size and values.dtype.kind in "biuf" and not values.any():
            # The row of zeros an upload without an example tries (serving.operations.upload.smoke_row)
            # passes, so that the attack is met where the tests look for it: in a prediction.
            return np.zeros(len(X))
        found = ATTACKS[self.attack](self.target)
        if found is not None:
            return np.array([found] * len(X), dtype=object)
        return np.zeros(len(X))


class AttacksOnUnpickling(Hostile):
    """Attacks while it is unpickled (in __setstate__), then predicts zeros."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        ATTACKS[state["attack"]](state["target"])


def _system(marker: str) -> None:
    os.system(f"touch {marker}")


def _subprocess(marker: str) -> None:
    subprocess.run(["touch", marker], check=False)


def _fork(marker: str) -> None:
    pid = os.fork()
    if pid == 0:
        open(marker, "w").close()
        os._exit(0)
    os.waitpid(pid, 0)


def _write(marker: str) -> None:
    with open(marker, "w") as f:
        f.write("written by a model")


def _connect(port: str) -> None:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=2) as conn:
        conn.sendall(b"hello from a model")


def _environment(_: str) -> str:
    """Every MAAS_ADMIN_TOKEN this process can see: its own environment, then every process's."""
    found = [os.environ.get("MAAS_ADMIN_TOKEN", "")]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    for item in f.read().split(b"\0"):
                        if item.startswith(b"MAAS_ADMIN_TOKEN="):
                            found.append(item.split(b"=", 1)[1].decode())
            except OSError:
                continue
    return "|".join(found)


def _read_file(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(64).hex()


def _allocate(_: str) -> None:
    hoard = np.ones(10 * 2**30 // 8)  # 10 GiB
    hoard[::4096] = 2.0


def _loop(_: str) -> None:
    while True:
        pass


def _sleep(seconds: str) -> None:
    time.sleep(float(seconds))


def _huge_answer(_: str) -> str:
    return "x" * 1_000_000  # one string per row, far over what a runner may answer


def _crash(_: str) -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


ATTACKS = {
    "none": lambda _: None,
    "system": _system,
    "subprocess": _subprocess,
    "fork": _fork,
    "write": _write,
    "connect": _connect,
    "environment": _environment,
    "read_file": _read_file,
    "allocate": _allocate,
    "loop": _loop,
    "crash": _crash,
    "sleep": _sleep,
    "huge_answer": _huge_answer,
}
