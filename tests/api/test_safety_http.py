"""The safety gate over the admin API, on SQLite and PostgreSQL: the whole hostile corpus, skops
files holding untrusted types, skops zip bombs, and MAAS_TRUSTED_MODULES.

Uploads go through the Flask test client (tests/test_serve_e2e.py does a few against a live
`maas serve`). The payloads would run in this very process, so a marker appearing here is a
payload that ran; the corpus's helper modules are put on sys.path so that an import payload
that got through really would run.
"""

from __future__ import annotations

import functools
import io
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from model_store.loader import (
    MAX_SKOPS_RATIO,
    MAX_SKOPS_UNCOMPRESSED_BYTES,
    SKOPS_RATIO_FLOOR,
)
from tests.estimators.fixture_models import PickyRegressor
from tests.estimators.hostile_types import WritesMarkerOnLoad
from tests.estimators.malicious import Case, build_corpus, payload_paths
from tests.support import REPO, model_count, store_files, upload

skops_io = pytest.importorskip("skops.io")

BOMB_BYTES = 256 << 20  # what each bomb inflates to
# Peak RSS may grow by this much while a bomb is refused: buffers, the upload, the zip directory.
# A check that inflated the bomb would grow by BOMB_BYTES.
RSS_ALLOWANCE = 48 << 20


def backend(app: Any) -> str:
    return app.extensions["maas"].settings.database_url.split(":")[0].split("+")[0]


def no_upload_files(app: Any) -> bool:
    tmp = Path(app.extensions["maas"].settings.store_dir) / "tmp"
    return not tmp.exists() or not any(tmp.iterdir())


def nothing_left(app: Any) -> None:
    assert store_files(app) == []
    assert no_upload_files(app)


# -- the corpus --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def payloads_can_import(corpus: list[Case], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process can import what the payloads import (evil modules, the nt stand-in)."""
    for path in payload_paths(corpus[0].path.parent):
        monkeypatch.syspath_prepend(str(path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:  # nothing the payloads imported outlives the test
        if name == "nt" or name.startswith("maas_evil_"):
            del sys.modules[name]


def test_every_hostile_artifact_is_refused_over_http(
    app: Any, client: Any, corpus: list[Case], credit_pipeline: Any, payloads_can_import: None
) -> None:
    good = upload(client, "credit", credit_pipeline)
    assert good.status_code == 201, good.json
    stored_before = store_files(app)
    refused = []
    for case in corpus:
        name = case.name.replace("_", "-").strip("-")
        r = upload(client, name, case.path.read_bytes(), filename=case.path.name)
        assert r.status_code == 422, (case.name, r.json)
        body = r.json
        assert body["code"] == 422 and body["status"] == "Unprocessable Entity", case.name
        assert body["message"].startswith("Artifact refused"), (case.name, body["message"])
        assert case.offending <= set(body["errors"]["artifact"]), (case.name, body["errors"])
        assert client.get(f"/api/models/{name}").status_code == 404, case.name
        again = upload(client, "credit", case.path.read_bytes())  # nor as a new version of a model
        assert again.status_code == 422, (case.name, again.json)
        refused.append(case.name)
    ran = [case.name for case in corpus if case.marker is not None and case.marker.exists()]
    markers = corpus[0].path.parent / "markers"
    assert ran == [] and list(markers.iterdir()) == []
    assert [m["name"] for m in client.get("/api/models").json] == ["credit"]
    assert client.get("/api/models/credit").json["latest_version"] == 1
    assert client.get("/api/models/credit/versions/2").status_code == 404
    assert store_files(app) == stored_before and no_upload_files(app)
    live = sum(1 for case in corpus if case.marker is not None)
    print(
        f"\n[{backend(app)}] hostile artifacts over HTTP: {len(corpus)} tried ({live} code-running), "
        f"{len(refused)} refused with 422 naming the offending globals, "
        f"{len(ran)} executed (markers found)"
    )


# -- skops: untrusted types ------------------------------------------------------------------------
def hostile_skops(path: Path, marker: Path, model: Any) -> Path:
    """A real pipeline whose FunctionTransformer carries an object that creates `marker` on load."""
    step = FunctionTransformer(kw_args={"hidden": WritesMarkerOnLoad(str(marker))})
    skops_io.dump(Pipeline([("hidden", step), ("model", model)]), path)
    return path


def test_skops_hostile_type_is_live(tmp_path: Path, credit_pipeline: Any) -> None:
    """Refusing the type is what stops it: skops told to trust the type does run its code."""
    marker = tmp_path / "skops-payload-ran"
    artifact = hostile_skops(tmp_path / "hostile.skops", marker, credit_pipeline)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, skops.io; skops.io.load(sys.argv[1], trusted=[sys.argv[2]])",
            str(artifact),
            "tests.estimators.hostile_types.WritesMarkerOnLoad",
        ],
        check=True,
        cwd=REPO,
        timeout=120,
    )
    assert marker.exists()


def test_skops_untrusted_type_is_refused_by_name_and_never_runs(
    app: Any, client: Any, tmp_path: Path, credit_pipeline: Any
) -> None:
    marker = tmp_path / "skops-payload-ran"
    artifact = hostile_skops(tmp_path / "hostile.skops", marker, credit_pipeline)
    r = upload(client, "hostile", artifact.read_bytes(), filename="model.skops")
    assert r.status_code == 422, r.json
    assert r.json["errors"]["artifact"] == ["tests.estimators.hostile_types.WritesMarkerOnLoad"]
    assert not marker.exists()
    assert model_count(client) == 0
    nothing_left(app)


@pytest.mark.parametrize(
    ("make", "offending"),
    [
        (lambda marker: FunctionTransformer(func=os.system), f"{os.system.__module__}.system"),
        (lambda marker: FunctionTransformer(func=eval), "builtins.eval"),
        (
            lambda marker: FunctionTransformer(kw_args={"dist": _exec_on_setstate(marker)}),
            "scipy.stats._continuous_distns.norm_gen",
        ),
    ],
    ids=["os.system", "builtins.eval", "scipy-setstate-exec"],
)
def test_skops_dangerous_references_are_refused(
    app: Any, client: Any, tmp_path: Path, credit_pipeline: Any, make: Callable[[str], Any], offending: str
) -> None:
    marker = tmp_path / "ran"
    payload = skops_io.dumps(Pipeline([("step", make(str(marker))), ("model", credit_pipeline)]))
    r = upload(client, "hostile", payload, filename="model.skops")
    assert r.status_code == 422, r.json
    assert offending in r.json["errors"]["artifact"], r.json
    assert not marker.exists()
    assert model_count(client) == 0
    nothing_left(app)


def _exec_on_setstate(marker: str) -> Any:
    from tests.estimators.malicious import _exec_on_setstate as make

    return make(marker)


# -- skops: zip bombs ------------------------------------------------------------------------------
def _deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of `size` zero bytes and its CRC, built without holding `size` bytes."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts, crc = [], 0
    for _ in range(size >> 20):
        parts.append(deflater.compress(zeros))
        crc = zlib.crc32(zeros, crc)
    parts.append(deflater.flush())
    return b"".join(parts), crc


def _zip(members: list[tuple[str, bytes, int, int, int]], overlap: int = 0) -> bytes:
    """A zip written by hand, so that headers can lie: (name, data, method, crc, declared size).

    `overlap` adds that many more central directory entries for the last member's data (each
    pointing at the same bytes, as overlapping-file zip bombs do).
    """
    body, central, count = b"", b"", 0

    def entry(name: bytes, data: bytes, method: int, crc: int, size: int, offset: int) -> bytes:
        return (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0,
                crc,
                len(data),
                size,
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )

    for name, data, method, crc, size in members:
        encoded = name.encode()
        offset = len(body)
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(encoded), 0)
        body += encoded + data
        central += entry(encoded, data, method, crc, size, offset)
        count += 1
    for i in range(overlap):
        central += entry(f"copy{i}.npy".encode(), data, method, crc, size, offset)
        count += 1
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
    return body + central + end


@pytest.fixture(scope="module")
def zeros_stream() -> tuple[bytes, int]:
    return _deflated_zeros(BOMB_BYTES)


def _schema() -> tuple[str, bytes, int, int, int]:
    """skops' own schema for {"w": <array>}, the array's member renamed big.npy: skops reads it."""
    archive = zipfile.ZipFile(io.BytesIO(skops_io.dumps({"w": np.zeros(1)})))
    [array] = [n for n in archive.namelist() if n.endswith(".npy")]
    data = archive.read("schema.json").replace(array.encode(), b"big.npy")
    return ("schema.json", data, zipfile.ZIP_STORED, zlib.crc32(data), len(data))


def bombs(stream: bytes, crc: int) -> dict[str, bytes]:
    small = 4096
    return {
        # honest headers: refused on the declared sizes alone
        "ratio": _zip([_schema(), ("big.npy", stream, zipfile.ZIP_DEFLATED, crc, BOMB_BYTES)]),
        "overlapping-entries": _zip(
            [_schema(), ("big.npy", stream, zipfile.ZIP_DEFLATED, crc, BOMB_BYTES)],
            overlap=MAX_SKOPS_UNCOMPRESSED_BYTES // BOMB_BYTES,
        ),
        # lying headers: the member declares 4 KiB and holds 256 MiB
        "lying-size": _zip([_schema(), ("big.npy", stream, zipfile.ZIP_DEFLATED, crc, small)]),
        # ... with the CRC of its first 4 KiB, so zipfile's own check passes
        "lying-size-and-crc": _zip(
            [_schema(), ("big.npy", stream, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(small)), small)]
        ),
        # the schema itself is the bomb
        "lying-schema": _zip([("schema.json", stream, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(small)), small)]),
    }


def peak_rss_growth(action: Callable[[], Any]) -> tuple[int, Any]:
    """(bytes by which this process's peak RSS rose above its RSS before `action`, its result)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        before = _status_kib("VmRSS")
        result = action()
        return (_status_kib("VmHWM") - before) << 10, result
    except OSError:  # not Linux: ru_maxrss only shows growth above the earlier peak
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = action()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) << 10, result


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def test_zipfile_itself_inflates_a_lying_member_whole(zeros_stream: tuple[bytes, int]) -> None:
    """Why declared sizes prove nothing: ZipFile.read of the 4 KiB liar returns 4 KiB, the CRC
    passes, and zipfile inflated all 256 MiB to get there (what skops would do)."""
    archive = zipfile.ZipFile(io.BytesIO(bombs(*zeros_stream)["lying-size-and-crc"]))
    growth, data = peak_rss_growth(lambda: archive.read("big.npy"))
    assert data == bytes(4096)
    assert growth > BOMB_BYTES // 2, growth
    print(f"\nzipfile.read of a member declaring 4 KiB: peak RSS +{growth >> 20} MiB")


def test_skops_zip_bombs_are_refused_without_inflating(app: Any, client: Any, zeros_stream: tuple[bytes, int]) -> None:
    stream, _ = zeros_stream
    assert BOMB_BYTES > SKOPS_RATIO_FLOOR and MAX_SKOPS_RATIO * len(stream) < BOMB_BYTES
    figures = []
    for kind, payload in bombs(*zeros_stream).items():
        growth, r = peak_rss_growth(functools.partial(upload, client, "bomb", payload, filename="model.skops"))
        assert r.status_code == 422, (kind, r.json)
        assert r.json["code"] == 422 and "skops file" in r.json["message"], (kind, r.json)
        assert growth < RSS_ALLOWANCE, (kind, growth)
        figures.append(f"{kind} +{growth >> 20} MiB")
    assert model_count(client) == 0
    nothing_left(app)
    print(
        f"\n[{backend(app)}] skops zip bombs of {BOMB_BYTES >> 20} MiB ({len(stream) >> 10} KiB deflated) "
        f"refused, peak RSS growth: {', '.join(figures)}"
    )


def test_a_legit_deflated_skops_model_still_loads(client: Any, credit_pipeline: Any, tmp_path: Path) -> None:
    """The member-by-member inflation check accepts what skops writes, compressed or not."""
    path = tmp_path / "model.skops"
    skops_io.dump(credit_pipeline, path, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    r = upload(client, "credit", path.read_bytes(), filename="model.skops")
    assert r.status_code == 201, r.json
    assert r.json["format"] == "skops"
    row = {"age": 35.0, "income": 42000.0, "gender": "male", "region": "north"}
    p = client.post("/api/predict", json={"model": "credit", "data": row})
    assert p.status_code == 200, p.json
    assert p.json["predictions"] == credit_pipeline.predict(pd.DataFrame([row])).tolist()


# -- MAAS_TRUSTED_MODULES --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["joblib", "skops"])
def test_trusted_modules_setting_lets_a_custom_class_through(make_app: Any, fmt: str) -> None:
    model = PickyRegressor().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    payload = skops_io.dumps(model) if fmt == "skops" else None

    def send(client: Any) -> Any:
        return upload(client, "picky", payload if payload is not None else model)

    strict = make_app()
    refused = send(strict.test_client())
    assert refused.status_code == 422, refused.json
    assert refused.json["errors"]["artifact"] == ["tests.estimators.fixture_models.PickyRegressor"]
    assert model_count(strict.test_client()) == 0

    client = make_app(trusted_modules=("tests",)).test_client()
    accepted = send(client)
    assert accepted.status_code == 201, accepted.json
    assert accepted.json["format"] == fmt
    assert accepted.json["estimator"] == "tests.estimators.fixture_models.PickyRegressor"
    p = client.post("/api/predict", json={"model": "picky", "data": {"a": [1, 2], "b": [3, 4]}})
    assert p.status_code == 200, p.json
    assert p.json["predictions"] == [4.0, 6.0]
    # trusting a module trusts it only: the same setting still refuses everything else
    hostile = upload(client, "evil", np.array([os.system], dtype=object).dumps())
    assert hostile.status_code == 422 and hostile.json["errors"]["artifact"] == [f"{os.system.__module__}.system"]
