"""A Python client of a remote maas server, over its HTTP API (the contract in API.md).

    from serving.client import Client
    client = Client("http://127.0.0.1:5050", token="...")
    client.predict("credit-default", frame).predictions

Only `requests` (and requests-toolbelt, to stream uploads) are imported here: no Flask, SQLAlchemy
or scikit-learn, and pandas only when a DataFrame is given or asked for.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_URL", "Client", "MaasError", "Prediction", "ServerUnreachable", "frame_to_columns", "server_url"]

DEFAULT_URL = "http://127.0.0.1:5050"
DEFAULT_TIMEOUT_S = 60.0
PAGE_SIZE = 1000  # the contract's largest page

# (bytes sent so far, bytes in all): called as an upload streams.
ProgressCallback = Callable[[int, int], None]


class MaasError(Exception):
    """The server refused or failed a request: its status and its own message and `errors` detail.

    `status` is None when no answer came at all (ServerUnreachable)."""

    def __init__(self, status: int | None, message: str, errors: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.status}: {self.message}"


class ServerUnreachable(MaasError):
    """No HTTP answer: connection refused, DNS, timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


@dataclass(frozen=True)
class Prediction:
    """What a prediction answered: one prediction per row, in the rows' order.

    Iterating, indexing and len() go to `predictions`; `to_frame()` is a DataFrame of them (with
    one `probability_<class>` column per class when probabilities were asked for), indexed like
    the DataFrame that was sent."""

    model: str
    version: int
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = None
    engine: str | None = None
    index: Any = None  # the index of the DataFrame sent, if one was

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.predictions)

    def __getitem__(self, row: int) -> Any:
        return self.predictions[row]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        frame = pd.DataFrame({"prediction": self.predictions}, index=self.index)
        if self.probabilities is not None:
            probabilities = pd.DataFrame(self.probabilities, index=self.index)
            frame = frame.join(probabilities.add_prefix("probability_"))
        return frame


def frame_to_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A DataFrame as the contract's columnar `data`: numpy scalars as Python ones, NaN, None, NA
    and NaT as null, timestamps as ISO 8601 strings (the contract has no time type)."""
    import pandas as pd

    def cell(value: Any) -> Any:
        if hasattr(value, "item") and not isinstance(value, str | bytes):  # a numpy scalar in an object column
            value = value.item()
        if value is None or value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, datetime.date | datetime.time):  # pandas' Timestamp is a datetime
            return value.isoformat()
        return value

    return {str(column): [cell(v) for v in frame[column].tolist()] for column in frame.columns}


def _is_dataframe(data: Any) -> bool:
    # No import of pandas to find out: a DataFrame's class says so.
    return any(klass.__name__ == "DataFrame" and klass.__module__.startswith("pandas") for klass in type(data).__mro__)


class Client:
    """A maas server at `url` (else MAAS_URL, else http://127.0.0.1:5050).

    `url` must be http(s) with a host (ValueError otherwise). `token` is sent as
    `Authorization: Bearer <token>` on every request; without one, MAAS_ADMIN_TOKEN is used, else
    MAAS_API_TOKEN. The admin token is needed to push, alias and remove; it also opens
    reads and predictions on a server started with MAAS_API_TOKEN, so one token does for everything.
    Every method raises MaasError (the server's status and message) when the server refuses, and
    ServerUnreachable when it does not answer."""

    page_size = PAGE_SIZE  # items asked for per page when listing

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = server_url(url or os.environ.get("MAAS_URL") or DEFAULT_URL)
        token = token or os.environ.get("MAAS_ADMIN_TOKEN") or os.environ.get("MAAS_API_TOKEN")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- reading the registry ------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Every model (all pages), as the server lists them."""
        return self._all_pages("/api/models")

    def model(self, name: str) -> dict[str, Any]:
        """One model, with its version summaries (newest first)."""
        return self._json("GET", f"/api/models/{_segment(name)}")

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version summary of a model, newest first."""
        return self._all_pages(f"/api/models/{_segment(name)}/versions")

    def version(self, name: str, selector: int | str = "latest") -> dict[str, Any]:
        """One version in full (features, classes, example...); `selector` is a number, an alias or latest."""
        return self._json("GET", f"/api/models/{_segment(name)}/versions/{_segment(selector)}")

    # -- predicting ----------------------------------------------------------------------------
    def predict(
        self,
        name: str,
        data: Any,
        version: int | str | None = None,
        probabilities: bool = False,
        engine: str | None = None,
    ) -> Prediction:
        """Predict rows with a model's version (`latest` when None).

        `data` is a pandas DataFrame (sent columnar: NaN and None as null) or any `data` value of the
        contract: one record (a dict of scalars), a dict of columns, or a list of records. `engine`:
        auto (the server's default when None), sklearn or onnx; the answer's `engine` says which answered."""
        index = None
        if _is_dataframe(data):
            index = data.index
            data = frame_to_columns(data)
        body: dict[str, Any] = {"data": data, "return_probabilities": probabilities}
        if engine is not None:
            body["engine"] = engine
        answer = self._json("POST", f"{self._version_path(name, version)}/predict", json=body)
        return _prediction(answer, index)

    def predict_csv(
        self, name: str, csv_text: str | bytes, version: int | str | None = None, probabilities: bool = False
    ) -> Prediction:
        """Predict the rows of a CSV document (a header row of feature names), sent as text/csv."""
        body = csv_text.encode() if isinstance(csv_text, str) else csv_text
        answer = self._json(
            "POST",
            f"{self._version_path(name, version)}/predict",
            data=body,
            params={"return_probabilities": "true"} if probabilities else None,
            headers={"Content-Type": "text/csv; charset=utf-8", "Accept": "application/json"},
        )
        return _prediction(answer)

    # -- administering -------------------------------------------------------------------------
    def push(
        self,
        path: str | os.PathLike[str],
        name: str,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Upload an artifact as the next version of `name`: the version in full, as the server answers.

        `path` is a joblib, pickle or skops file, or an MLflow model directory of the sklearn flavor
        (its pickled model, its signature as `features` and its input example as `example`; what
        `metadata` gives wins). The file is streamed, never read whole; `progress(sent, total)` is
        called as it goes."""
        from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

        path = Path(path)
        meta: dict[str, Any] = {}
        if path.is_dir():
            from serving.client.mlflow_model import read_mlflow_model

            mlflow_model = read_mlflow_model(path)
            path = mlflow_model.artifact
            meta.update(mlflow_model.metadata)
        meta.update(metadata or {})
        if aliases:
            meta["aliases"] = [*meta.get("aliases", []), *aliases]
        with path.open("rb") as artifact:
            encoder = MultipartEncoder(
                fields={
                    "file": (path.name, artifact, "application/octet-stream"),
                    "metadata": (None, json.dumps(meta), "application/json"),
                }
            )
            callback = None
            if progress is not None:
                report = progress

                def callback(monitor: MultipartEncoderMonitor) -> None:
                    report(monitor.bytes_read, monitor.len)

            body = MultipartEncoderMonitor(encoder, callback)
            return self._json(
                "POST",
                f"/api/admin/models/{_segment(name)}/versions",
                data=body,
                headers={"Content-Type": body.content_type},
            )

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point `alias` at `version` (created or moved): the version in full."""
        return self._json(
            "PUT", f"/api/admin/models/{_segment(name)}/aliases/{_segment(alias)}", json={"version": version}
        )

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version (409 while an alias points to it)."""
        self._request("DELETE", f"/api/admin/models/{_segment(name)}/versions/{_segment(version)}")

    # -- HTTP ----------------------------------------------------------------------------------
    def _version_path(self, name: str, version: int | str | None) -> str:
        return f"/api/models/{_segment(name)}/versions/{_segment('latest' if version is None else version)}"

    def _all_pages(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page: int | None = 1
        while page is not None:
            response = self._request("GET", path, params={"page": page, "page_size": self.page_size})
            items.extend(response.json())
            pagination = json.loads(response.headers.get("X-Pagination") or "{}")
            page = pagination.get("next_page")
        return items

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.url + path, **kwargs)
        except requests.ConnectionError as exc:
            raise ServerUnreachable(f"cannot reach the maas server at {self.url}: {_reason(exc)}") from exc
        except requests.Timeout as exc:
            raise ServerUnreachable(f"the maas server at {self.url} did not answer in {self.timeout:g} s") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response


def server_url(url: str) -> str:
    """`url` without its trailing slash; ValueError unless it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not the URL of a maas server: write e.g. {DEFAULT_URL}")
    return url.rstrip("/")


def _segment(value: object) -> str:
    """One path segment, percent-encoded (a name with a slash stays one segment and gets its 404)."""
    return quote(str(value), safe="")


def _reason(exc: requests.RequestException) -> str:
    # requests wraps urllib3's error, which wraps the socket's: the innermost says why in a few words.
    reason: BaseException = exc
    while reason.args and isinstance(reason.args[0], BaseException):
        reason = reason.args[0]
    return str(getattr(reason, "reason", None) or reason)


def _error(response: requests.Response) -> MaasError:
    """The contract's error body as a MaasError; a body of another shape keeps the status and its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return MaasError(response.status_code, body["message"], body.get("errors"))
    if isinstance(body, dict) and isinstance(body.get("error"), str):  # the V2 protocol's shape
        return MaasError(response.status_code, body["error"])
    text = response.text.strip()[:500] or response.reason
    return MaasError(response.status_code, f"{response.status_code} {response.reason}: {text}")


def _prediction(answer: dict[str, Any], index: Any = None) -> Prediction:
    """A predict route's JSON answer as a Prediction (`index`: the rows' DataFrame index, if any)."""
    return Prediction(
        model=answer["model"],
        version=answer["version"],
        predictions=answer["predictions"],
        probabilities=answer.get("probabilities"),
        engine=answer.get("engine"),
        index=index,
    )
