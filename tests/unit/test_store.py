"""The artifact store on real files, the estimator cache, and schema inference."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from model_store.errors import (
    ArtifactTooLarge,
    ArtifactUnavailable,
    InvalidArtifact,
    StoreWriteFailed,
)
from model_store.features import FeatureSpec, FeatureType, check_declared_schema, infer_feature_schema
from model_store.store import ArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    s = ArtifactStore(tmp_path / "store")
    s.init()
    return s


def test_put_is_content_addressed(store: ArtifactStore) -> None:
    data = b"x" * 3_000_000
    stored = store.put(io.BytesIO(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size_bytes == len(data)
    assert stored.created and stored.path.read_bytes() == data
    assert stored.path == store.objects / stored.sha256[:2] / stored.sha256
    again = store.put(io.BytesIO(data))
    assert not again.created and again.path == stored.path
    assert list(store.tmp.iterdir()) == []


def test_put_over_the_limit_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactTooLarge):
        store.put(io.BytesIO(b"y" * 5000), max_bytes=4999)
    assert list(store.tmp.iterdir()) == [] and list(store.objects.rglob("*")) == []


def test_opened_detects_damage_and_loss(store: ArtifactStore) -> None:
    stored = store.put(io.BytesIO(b"model bytes"))
    with store.opened(stored.sha256) as f:
        assert f.read() == b"model bytes"
    stored.path.write_bytes(b"model bytez")
    with pytest.raises(ArtifactUnavailable, match="damaged"), store.opened(stored.sha256):
        pass
    stored.path.unlink()
    with pytest.raises(ArtifactUnavailable, match="missing"), store.opened(stored.sha256):
        pass


def test_opened_file_stays_on_the_bytes_that_were_checked(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put(io.BytesIO(b"model bytes"))
    with store.opened(stored.sha256) as f:
        # Another file renamed over the artifact after the check is not what a runner reads.
        swapped = tmp_path / "swapped"
        swapped.write_bytes(b"other bytes")
        os.replace(swapped, stored.path)
        assert f.read() == b"model bytes"
    assert stored.path.read_bytes() == b"other bytes"
    with pytest.raises(ArtifactUnavailable):
        store.path_for("../../etc/passwd")


# -- schema inference -----------------------------------------------------------------------
def test_a_spool_written_in_order_is_hashed_as_it_arrives(store: ArtifactStore) -> None:
    payload = os.urandom(3 << 20)
    spool = store.spool()
    for start in range(0, len(payload), 65536):  # as werkzeug's parser writes a part
        spool.write(payload[start : start + 65536])
    assert spool.arrived_sha256() == hashlib.sha256(payload).hexdigest()
    stored = store.put(spool)
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert stored.path.read_bytes() == payload
    spool.close()

    rewritten = store.spool()
    rewritten.write(b"first version of the bytes")
    rewritten.seek(0)
    rewritten.write(b"FIRST")  # written again: what arrived first is no longer what is there
    assert rewritten.arrived_sha256() is None
    expected = b"FIRST version of the bytes"
    assert store.put(rewritten).sha256 == hashlib.sha256(expected).hexdigest()
    rewritten.close()


def test_infers_column_transformer_encoders(credit_pipeline: Any) -> None:
    schema = infer_feature_schema(credit_pipeline)
    assert [f.name for f in schema] == ["age", "income", "gender", "region"]
    assert schema[0] == FeatureSpec("age", FeatureType.NUMBER)
    assert schema[0].to_json() == {
        "name": "age",
        "type": "number",
        "required": True,
        "allowed": None,
        "minimum": None,
        "maximum": None,
        "accepts_unseen": False,
    }
    assert schema[2].type is FeatureType.STRING and schema[2].allowed == ("female", "male")
    assert schema[3].allowed == ("east", "north", "south")


def test_infers_imputed_and_ordinal_columns() -> None:
    frame = pd.DataFrame(
        {
            "size": [1.0, np.nan, 3.0, 4.0],
            "grade": ["a", "b", "a", "c"],
            "flag": [1, 2, 1, 2],
        }
    )
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", SimpleImputer(), ["size"]),
                ("grade", make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["grade"]),
                ("flag", OneHotEncoder(), [2]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, [0, 1, 0, 1])
    schema = {f.name: f for f in infer_feature_schema(model)}
    assert schema["size"].type is FeatureType.NUMBER and schema["size"].required is False
    assert schema["grade"].allowed == ("a", "b", "c") and schema["grade"].required is False
    assert schema["flag"].type is FeatureType.INTEGER and schema["flag"].allowed == (1, 2)


def test_inference_needs_feature_names(numpy_model: Any) -> None:
    with pytest.raises(InvalidArtifact, match="feature_names_in_"):
        infer_feature_schema(numpy_model)


def test_declared_schema_checked_against_model(numpy_model: Any, regressor: Any) -> None:
    def declared(*names: str) -> list[FeatureSpec]:
        return [FeatureSpec.from_json({"name": n}) for n in names]

    ok = check_declared_schema(declared("a", "b", "c"), numpy_model)
    assert ok[0].type is FeatureType.NUMBER and ok[0].required is True
    with pytest.raises(InvalidArtifact, match="expects 3"):
        check_declared_schema(declared("a"), numpy_model)
    with pytest.raises(InvalidArtifact, match="repeat"):
        check_declared_schema(declared("x1", "x1"), regressor)
    with pytest.raises(InvalidArtifact, match="missing x2"):
        check_declared_schema(declared("x1"), regressor)


def test_a_spooled_upload_is_linked_into_place_not_copied(store: ArtifactStore) -> None:
    spool = store.spool()
    spool.write(b"spooled model bytes")
    stored = store.put(spool, max_bytes=1000)
    assert stored.created and stored.sha256 == hashlib.sha256(b"spooled model bytes").hexdigest()
    assert os.stat(stored.path).st_ino == os.fstat(spool.fileno()).st_ino  # the same file: no copy
    assert [p.name.startswith("upload-") and p.name.endswith(".part") for p in store.tmp.iterdir()] == [True]
    spool.close()
    assert list(store.tmp.iterdir()) == []
    assert stored.path.read_bytes() == b"spooled model bytes"

    again = store.spool()
    again.write(b"spooled model bytes")
    assert not store.put(again).created  # identical bytes: the stored file is kept
    again.close()
    too_big = store.spool()
    too_big.write(b"x" * 1001)
    with pytest.raises(ArtifactTooLarge):
        store.put(too_big, max_bytes=1000)
    too_big.close()
    assert list(store.tmp.iterdir()) == []


def test_a_spool_whose_name_was_taken_is_copied_into_place(store: ArtifactStore) -> None:
    """`maas store gc` removed the name of an upload's spool (the upload stalled past the grace
    period) while the request still holds the file open: the link fails, the bytes are copied."""
    spool = store.spool()
    spool.write(b"bytes of a slow upload" * 1000)
    spool.path.unlink()
    stored = store.put(spool)
    assert stored.created and stored.path.read_bytes() == b"bytes of a slow upload" * 1000
    assert stored.sha256 == hashlib.sha256(stored.path.read_bytes()).hexdigest()
    assert os.stat(stored.path).st_ino != os.fstat(spool.fileno()).st_ino  # a copy
    assert list(store.tmp.iterdir()) == []
    spool.close()
    assert store.put(io.BytesIO(b"bytes of a slow upload" * 1000)).created is False


def test_a_spool_that_cannot_be_hard_linked_is_copied_into_place(store: ArtifactStore) -> None:
    """A file system without hard links (SMB/CIFS, many FUSE) refuses os.link with EPERM or
    ENOTSUP. Here the kernel's own EPERM: the spool is made immutable (chattr +i, root only)."""
    spool = store.spool()
    spool.write(b"bytes on a file system without hard links")
    spool.flush()
    made = subprocess.run(["chattr", "+i", str(spool.path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        spool.close()
        pytest.skip(f"chattr +i is not possible here (it needs root): {made.stderr.strip()}")
    try:
        with pytest.raises(PermissionError):
            os.link(spool.path, store.root / "probe")
        stored = store.put(spool)
    finally:
        subprocess.run(["chattr", "-i", str(spool.path)], check=True)
    assert stored.created and stored.path.read_bytes() == b"bytes on a file system without hard links"
    assert os.stat(stored.path).st_ino != os.fstat(spool.fileno()).st_ino
    spool.close()
    assert list(store.tmp.iterdir()) == []


def test_spool_makes_tmp_again_when_it_was_removed(store: ArtifactStore) -> None:
    shutil.rmtree(store.tmp)
    with store.spool() as spool:
        spool.write(b"model bytes")
        assert store.put(spool).path.read_bytes() == b"model bytes"
    assert list(store.tmp.iterdir()) == []


def test_a_store_that_cannot_take_the_bytes_says_so(store: ArtifactStore) -> None:
    """OSError of the file system while storing is StoreWriteFailed (a 503), not an OSError."""
    shutil.rmtree(store.tmp)
    store.tmp.write_text("a file where the store's tmp/ directory should be")
    with pytest.raises(StoreWriteFailed, match=r"cannot take the artifact \(Not a directory\)"):
        store.spool()
    with pytest.raises(StoreWriteFailed, match=r"cannot take the artifact \(File exists\)"):
        store.put(io.BytesIO(b"model bytes"))
    assert list(store.objects.rglob("*")) == []


def test_writes_the_file_system_refuses_while_spooling_are_store_errors(store: ArtifactStore) -> None:
    """EFBIG past RLIMIT_FSIZE (Python ignores SIGXFSZ), as a full disk's ENOSPC would be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with store.spool() as spool:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
        try:
            with pytest.raises(StoreWriteFailed, match=r"cannot take the artifact \(File too large\)"):
                for _ in range(4):
                    spool.write(b"x" * 64 * 1024)
                spool.flush()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(store.tmp.iterdir()) == []


def _syscalls(*python: str) -> list[str]:
    """The file system calls of `python -c`, with the paths of descriptors (strace -f -y)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    with tempfile.TemporaryDirectory() as out:
        trace = Path(out) / "trace"
        result = subprocess.run(
            [
                "strace",
                "-f",
                "-y",
                "-o",
                str(trace),
                "-e",
                "trace=mkdir,mkdirat,fsync,link,linkat,rename,renameat,renameat2",
                sys.executable,
                "-c",
                "\n".join(python),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0 and "ptrace" in result.stderr:
            pytest.skip(f"strace cannot trace here: {result.stderr.strip()}")
        assert result.returncode == 0, result.stderr
        return [line.split(None, 1)[1] for line in trace.read_text().splitlines() if " " in line]


def test_a_new_shard_directory_is_made_durable_in_objects(store: ArtifactStore) -> None:
    """After a power loss, a committed version's file must still be reachable: its name in its
    shard, and the shard's name in objects/, are fsynced before put() returns."""
    data = b"bytes in a shard of their own"
    shard = store.path_for(hashlib.sha256(data).hexdigest()).parent
    for code in (f"store.put(io.BytesIO({data!r}))", f"s = store.spool(); s.write({data!r}); store.put(s); s.close()"):
        if shard.exists():
            shutil.rmtree(shard)
        calls = _syscalls(
            "import io",
            "from model_store.store import ArtifactStore",
            f"store = ArtifactStore({str(store.root)!r})",
            code,
        )
        made = next(i for i, c in enumerate(calls) if c.startswith("mkdir") and f'"{shard}"' in c)
        placed = next(i for i, c in enumerate(calls) if i > made and c.startswith(("link", "rename")))
        synced = [c.split("<", 1)[1].split(">", 1)[0] for c in calls[placed:] if c.startswith("fsync(")]
        assert str(shard) in synced and str(store.objects) in synced, (code, calls[made:])
