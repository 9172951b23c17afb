"""The runner's own loop: load one artifact, describe it, predict with it. Runs confined.

A runner serves one model version for its whole life, so no model ever sees another's inputs.
It answers data only (protocol.py); what goes wrong inside the model comes back as an error kind
and the exception's class name, never as an object.
"""

from __future__ import annotations

import math
import os
import re
import socket
import traceback
import warnings
from typing import Any

import numpy as np
import pandas as pd

from model_store.errors import InvalidArtifact, UnsafeArtifact
from serving.runners import compiled, protocol

# What the web worker may send a runner in one message: a batch of rows as columns.
MAX_REQUEST_BYTES = 1 << 30


class _Failed(Exception):
    """The model raised; the web worker is told its class name only."""

    def __init__(self, kind: str, exc: BaseException) -> None:
        super().__init__(kind)
        self.kind = kind
        self.exc = exc


def serve(sock: socket.socket) -> None:
    """Answer the web worker's messages until it hangs up."""
    warnings.simplefilter("ignore")  # a model's warnings go nowhere anyway (stderr is /dev/null)
    state = _State()
    while True:
        try:
            header, arrays, fds = protocol.recv(sock, MAX_REQUEST_BYTES, with_fds=True)
        except protocol.PeerClosed:
            return
        reply_arrays: list[np.ndarray] = []
        try:
            reply = state.handle(header, arrays, fds, reply_arrays)
        except MemoryError:
            reply_arrays = []
            reply = _error("memory", "the model ran out of memory")
        except UnsafeArtifact as exc:
            reply = _error("unsafe", exc.message, offending=exc.offending)
        except InvalidArtifact as exc:
            reply = _error("invalid", exc.message)
        except _Failed as exc:
            reply = _error(
                exc.kind, _exception_name(exc.exc), detail=_safe_message(exc.exc), traceback=_traceback(exc.exc)
            )
        except Exception as exc:  # noqa: BLE001 - our own code failing here must still answer
            reply = _error("failed", _exception_name(exc))
        finally:
            for fd in fds:
                _close(fd)
        try:
            protocol.send(sock, reply, reply_arrays)
        except protocol.ProtocolError as exc:  # e.g. an answer too large: say so instead
            protocol.send(sock, _error("failed", f"the model's answer cannot be sent ({exc})"))
        if reply.get("error", {}).get("kind") == "memory":
            os._exit(3)  # after a MemoryError nothing in this process can be trusted to work


def _error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": {"kind": kind, "message": message[: protocol.MAX_STRING], **extra}}


def _exception_name(exc: BaseException) -> str:
    name = type(exc).__name__
    return name if isinstance(name, str) and name.isidentifier() and len(name) <= 100 else "Exception"


# A message that names a file (a path, a module's location) stays in the server's log only.
_PATHLIKE = re.compile(r"[/\\][\w.~-]|\.py\b|site-packages")
MAX_DETAIL = 300


def _safe_message(exc: BaseException) -> str | None:
    """The exception's message for the client: None when empty, too long or holding a path."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - the model's own __str__
        return None
    if not message or len(message) > MAX_DETAIL or _PATHLIKE.search(message) or not message.isprintable():
        return None
    return message


def _traceback(exc: BaseException) -> str:
    """The whole traceback, for the server's log (the tail when it is longer than a message may be)."""
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - formatting calls the model's own __str__/__repr__
        text = f"{_exception_name(exc)} (its traceback could not be formatted)"
    return text[-protocol.MAX_STRING :]


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class _State:
    def __init__(self) -> None:
        self.estimator: Any = None
        # A pipeline that starts with a text vectorizer was fitted on a 1-D sequence of documents.
        self.documents = False
        # Columns the model encodes as categories itself, and the dtype it was fitted on (None:
        # categories unknown, the values' own); empty for every other model.
        self.categorical: dict[str, pd.CategoricalDtype | None] = {}
        # The version compiled to ONNX and verified (at upload, or handed over with the artifact).
        self.engine: compiled.Engine | None = None
        self.engine_detail: str | None = None

    def handle(
        self, header: dict[str, Any], arrays: list[np.ndarray], fds: list[int], out: list[np.ndarray]
    ) -> dict[str, Any]:
        op = header.get("op")
        if op == "load":
            return self.load(header, fds)
        if op == "predict":
            return self.predict(header, arrays, out)
        if op == "compile":
            return self.compile(header, arrays, out)
        if op == "ping":
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    # -- load and describe ---------------------------------------------------------------------
    def load(self, header: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        from model_store.features import (
            FeatureSpec,
            check_declared_schema,
            first_step,
            infer_feature_schema,
            is_text_vectorizer,
            native_categories,
            positional_feature_schema,
        )
        from model_store.loader import load_artifact

        graph_features = header.get("onnx")  # the schema's feature names, in order, with a graph
        if not (isinstance(graph_features, list) and all(isinstance(n, str) for n in graph_features)):
            graph_features = None
        with_graph = graph_features is not None
        if self.estimator is not None or len(fds) != (2 if with_graph else 1):
            raise ValueError("a runner loads exactly one artifact (and its graph), each handed over as a descriptor")
        with os.fdopen(os.dup(fds[0]), "rb") as file:
            loaded = load_artifact(
                file, header.get("trusted_modules", ()), header.get("format"), header.get("max_model_bytes")
            )
        estimator = loaded.estimator
        try:
            names = getattr(estimator, "feature_names_in_", None)
            feature_names = [str(n) for n in names] if names is not None else None
            n_features = getattr(estimator, "n_features_in_", None)
            schema = header.get("schema")
            features = None
            if schema == "declared":
                declared = [FeatureSpec.from_json(f) for f in header["features"]]
                features = check_declared_schema(declared, estimator)
            elif schema == "infer":
                features = infer_feature_schema(estimator)
            elif schema == "positional":
                features = positional_feature_schema(estimator)
            documents = is_text_vectorizer(first_step(estimator))
            categorical = {name: _categorical_dtype(c) for name, c in native_categories(estimator).items()}
            _one_thread(estimator)
            if documents and features is not None and len(features) != 1:
                raise InvalidArtifact(
                    f"The model starts with a text vectorizer ({type(first_step(estimator)).__name__}): it takes one "
                    f"feature of type string, the documents; the declared schema has {len(features)}."
                )
        except InvalidArtifact:
            raise
        except Exception as exc:  # noqa: BLE001 - the artifact's own attributes ran
            raise InvalidArtifact(
                f"The loaded {loaded.estimator_name} cannot be inspected ({_exception_name(exc)}): is it a fitted "
                "scikit-learn model?"
            ) from None
        self.estimator = estimator
        self.documents = documents
        self.categorical = categorical
        if graph_features is not None:
            self._open_graph(fds[1], header.get("max_model_bytes"), graph_features)
        return {
            "ok": True,
            "facts": {
                "format": loaded.format,
                "estimator": loaded.estimator_name,
                "has_predict_proba": loaded.has_predict_proba,
                "classes": [protocol.json_scalar(c) for c in loaded.classes] if loaded.classes is not None else None,
                "library_versions": loaded.library_versions,
                "feature_names": feature_names,
                "n_features": n_features if type(n_features) is int else None,
                "engines": self.engines(),
            },
            # The protocol carries data only: the specs cross as the contract's JSON.
            "features": [f.to_json() for f in features] if features is not None else None,
        }

    def engines(self) -> list[str]:
        return ["sklearn", "onnx"] if self.engine is not None else ["sklearn"]

    def _open_graph(self, fd: int, limit: Any, names: list[str]) -> None:
        """Open the version's verified graph (handed over by the web worker with the artifact);
        a graph that is refused or does not open leaves the runner with scikit-learn only (its
        facts say so), not without its model."""
        limit = limit if type(limit) is int and limit > 0 else MAX_REQUEST_BYTES
        try:
            with os.fdopen(os.dup(fd), "rb") as file:
                if os.fstat(file.fileno()).st_size > limit:
                    raise compiled.GraphRefused("it is larger than MAAS_MAX_MODEL_BYTES")
                data = file.read()
            session = compiled.open_session(data)
            self.engine = compiled.Engine.from_session(session, names, hasattr(self.estimator, "classes_"))
        except MemoryError:
            raise
        except compiled.GraphRefused as exc:
            self.engine, self.engine_detail = None, f"its ONNX graph is refused: {exc}"
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
            self.engine, self.engine_detail = None, f"its ONNX graph cannot be opened ({_exception_name(exc)})"

    # -- compile (at upload) -------------------------------------------------------------------
    def compile(self, header: dict[str, Any], arrays: list[np.ndarray], out: list[np.ndarray]) -> dict[str, Any]:
        """Compile the loaded model to ONNX and verify it on the batches of checked rows sent;
        answers the graph's bytes (a uint8 array) or why there is none."""
        if self.estimator is None:
            raise ValueError("compile before load")
        features = header["features"]
        batches = []
        for batch in header["batches"]:
            columns = self._columns(batch, arrays)
            batches.append((self._model_input(columns, header.get("frame")), columns))
        try:
            data, engine = compiled.compile_model(self.estimator, features, batches, self._sklearn)
        except compiled.NotCompiled as exc:
            self.engine, self.engine_detail = None, str(exc)[: protocol.MAX_STRING]
            return {"ok": True, "onnx": None, "detail": self.engine_detail}
        self.engine, self.engine_detail = engine, None
        out.append(np.frombuffer(data, dtype=np.uint8))
        return {"ok": True, "onnx": {"array": len(out) - 1}, "detail": None}

    # -- predict -------------------------------------------------------------------------------
    def _columns(self, batch: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["rows"]
        return {name: _column(v) for name, v in protocol.unpack_columns(batch["columns"], arrays, rows).items()}

    def _model_input(self, columns: dict[str, np.ndarray], frame: list[str] | None) -> Any:
        if self.documents:  # the one column, as the sequence of documents the vectorizer was fitted on
            (model_input,) = columns.values()
            return model_input
        return assemble(columns, list(columns), frame, self.categorical)

    def _sklearn(self, model_input: Any, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if probabilities:
            final, final_input = _final_step(self.estimator, model_input)
            return np.asarray(final.predict(final_input)), np.asarray(
                final.predict_proba(final_input), dtype=np.float64
            )
        return np.asarray(self.estimator.predict(model_input)), None

    def predict(self, header: dict[str, Any], arrays: list[np.ndarray], out: list[np.ndarray]) -> dict[str, Any]:
        if self.estimator is None:
            raise ValueError("predict before load")
        columns = self._columns(header, arrays)
        asked = header.get("engine", "auto")
        feed = None
        if asked in ("auto", "onnx") and self.engine is not None:
            feed = self.engine.feed(columns)
            if feed is None and asked == "onnx":
                raise _Failed(
                    "failed",
                    ValueError("the ONNX engine does not take missing values: ask for engine 'auto' or 'sklearn'"),
                )
        elif asked == "onnx":
            raise ValueError("this runner has no ONNX engine")
        keys = None
        try:
            if feed is not None:
                assert self.engine is not None
                engine = "onnx"
                predictions, proba = self.engine.run(feed)
                if not header.get("probabilities"):
                    proba = None
            else:
                engine = "sklearn"
                predictions, proba = self._sklearn(
                    self._model_input(columns, header.get("frame")), bool(header.get("probabilities"))
                )
            if proba is not None:
                keys = [str(c) for c in np.asarray(_last_step(self.estimator).classes_).tolist()]
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's code, not ours: report it narrowly
            raise _Failed("failed", exc) from None
        reply: dict[str, Any] = {"ok": True, "engine": engine, "predictions": protocol.pack_values(predictions, out)}
        if proba is not None:
            if proba.ndim != 2 or proba.shape[0] != len(predictions) or proba.shape[1] != len(keys or ()):
                raise _Failed("failed", ValueError("predict_proba's shape does not match the classes"))
            out.append(proba)
            reply["probabilities"] = {"keys": keys, "array": len(out) - 1}
        return reply


def _column(values: Any) -> np.ndarray:
    """A column as the model gets it: a missing value in an object column is NaN, as pandas has it."""
    if isinstance(values, np.ndarray):
        return values
    column = np.empty(len(values), dtype=object)
    column[:] = values
    missing = np.equal(column, None)  # type: ignore[call-overload]  # elementwise `is None` on objects
    if missing.any():
        column[missing] = math.nan
    return column


def _one_thread(estimator: Any, depth: int = 0) -> None:
    """Runners compute on one thread (OMP_NUM_THREADS=1, pool.py). A model saved with n_jobs (a
    RandomForest's n_jobs=2, LightGBM's wrapper that turns None into a thread count of its own)
    asks joblib for the CPU count, which reads cgroup files under /sys that a runner may not open
    (PermissionError), and would start workers: every step (pipelines, column transformers and
    their parts) gets n_jobs=1, the runners' thread count, instead of more access. The results do
    not depend on it."""
    if depth > 20:
        return
    if isinstance(getattr(estimator, "n_jobs", None), (int, type(None))) and hasattr(estimator, "n_jobs"):
        try:
            estimator.n_jobs = 1
        except Exception:  # noqa: BLE001 - a read-only attribute: the model keeps its own
            pass
    parts = [s for _, s in getattr(estimator, "steps", ())]
    parts += [t for _, t, *_ in getattr(estimator, "transformers_", ()) if not isinstance(t, str)]
    parts += [t for _, t in getattr(estimator, "transformer_list", ())]
    for part in parts:
        _one_thread(part, depth + 1)


def _categorical_dtype(categories: list[Any] | None) -> pd.CategoricalDtype | None:
    if categories is None:
        return None
    return pd.CategoricalDtype([c for c in categories if not pd.isna(c)])  # missing is no category


def assemble(
    columns: dict[str, np.ndarray],
    order: list[str],
    frame: list[str] | None,
    categorical: dict[str, pd.CategoricalDtype | None] | None = None,
) -> Any:
    """The model's input: a DataFrame in the fitted column order for models fitted on one, else a
    2-D array (one dtype when the columns share it, objects otherwise). The columns in `categorical`
    get the category dtype the model was fitted with (LightGBM and XGBoost refuse others)."""
    if frame is not None:
        if categorical:
            with_dtypes = {
                name: pd.Categorical(columns[name], dtype=categorical[name]) if name in categorical else columns[name]
                for name in frame
            }
            return pd.DataFrame(with_dtypes, copy=False)
        return pd.DataFrame({name: columns[name] for name in frame}, copy=False)
    typed = [columns[name] for name in order]
    if len(typed) == 1 or len({a.dtype for a in typed}) == 1:
        return np.column_stack(typed)
    return np.column_stack([a.astype(object) for a in typed])


def _last_step(estimator: Any) -> Any:
    from sklearn.pipeline import Pipeline

    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator


def _final_step(estimator: Any, model_input: Any) -> tuple[Any, Any]:
    """A pipeline's last step and the input transformed by the steps before it, as its predict and
    predict_proba would each do: asked for both, the transforms then run once, not twice."""
    from sklearn.pipeline import Pipeline

    while isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        model_input = estimator[:-1].transform(model_input)
        estimator = estimator[-1]
    return estimator, model_input
