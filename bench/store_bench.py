"""Upload throughput of the model store: the local directory against an S3 endpoint.

What it measures is the store's own path of an upload, as the server runs it: the upload's bytes
already spooled to local disk by the request parser (ArtifactStore.spool / S3Store.spool), then
put(): the directory store hashes the spool and links it into place (fsynced); the S3 store hashes
it and sends it in multipart parts under its sha256 (two parts in flight), then keeps it in its
local cache. The S3 endpoint is moto's standalone server on this machine, over real HTTP (unless
--endpoint names another), so its figure includes moto's own CPU on the same cores.

Rounds alternate directory and S3 so that both see the same machine; each put is of new bytes
(a fresh random payload per round: nothing is found already stored). Prints MB/s per round, the
medians, their ratio, and the peak RSS this process gained during the S3 puts (the parts in memory).

With --http it also times whole uploads over HTTP, as an admin sends them: two `maas serve`
(2 workers, SQLite), one on a directory and one on a bucket of the same moto server, each sent
the same artifacts in alternation: a KNeighborsClassifier (brute force: it keeps its training
rows, so its file is --mb large) fitted anew each round. The time is the request's, from the first
byte sent to the 201: the safety scan, the load and the example's prediction in a runner are in it
for both, and the store's part is what differs.

    python bench/store_bench.py [--mb 200] [--rounds 3] [--http] [--endpoint URL --bucket NAME]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_store.s3 import S3Store
from model_store.store import CHUNK_BYTES, ArtifactStore, ModelStore, Spool
from tests.support.s3 import CREDENTIALS, S3Endpoint, moto_server


def fill_spool(store: ModelStore, size: int, seed: int) -> Spool:
    """A spool of `size` random bytes, as the request parser leaves an upload."""
    spool = store.spool()
    block = os.urandom(CHUNK_BYTES)
    written = 0
    while written < size:
        # A different block each MiB (cheap): no two rounds or chunks share bytes.
        chunk = (seed.to_bytes(8, "little") + written.to_bytes(8, "little")) + block[16:]
        spool.write(chunk[: size - written])
        written += len(chunk)
    spool.flush()
    spool.seek(0)
    return spool


def timed_put(store: ModelStore, size: int, seed: int) -> float:
    spool = fill_spool(store, size, seed)
    try:
        started = time.perf_counter()
        stored = store.put(spool)
        elapsed = time.perf_counter() - started
        assert stored.created and stored.size_bytes == size
    finally:
        spool.close()
    return elapsed


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(endpoint: S3Endpoint, bucket: str | None, mb: int, rounds: int) -> None:
    size = mb << 20
    with tempfile.TemporaryDirectory(prefix="maas-store-bench-") as work:
        directory = ArtifactStore(Path(work) / "store")
        directory.init()
        s3 = S3Store(
            f"s3://{bucket or endpoint.new_bucket()}/bench",
            cache_dir=Path(work) / "cache",
            cache_bytes=4 * size,
            endpoint_url=endpoint.url,
        )
        s3.init()
        results: dict[str, list[float]] = {"directory": [], "s3": []}
        rss_before = maxrss_mb()
        timed_put(s3, 8 << 20, seed=10_000)  # the client's first connection, outside the figures
        for i in range(rounds):
            for name, store in (("directory", directory), ("s3", s3)):
                seconds = timed_put(store, size, seed=2 * i + (name == "s3"))
                results[name].append(size / (1 << 20) / seconds)
                rate = results[name][-1]
                print(f"round {i + 1}: {name:9} {mb} MB in {seconds:6.2f} s = {rate:7.1f} MB/s", flush=True)
        rss_gain = maxrss_mb() - rss_before
    local, remote = statistics.median(results["directory"]), statistics.median(results["s3"])
    print()
    print(f"| store | MB/s (median of {rounds} puts of {mb} MB) |")
    print("|---|---:|")
    print(f"| local directory | {local:.1f} |")
    print(f"| S3 ({'moto, same machine' if bucket is None else endpoint.url}) | {remote:.1f} |")
    print(f"\nS3 / directory: {remote / local:.2f}x")
    print(f"peak RSS gained by this process over all puts: {rss_gain:.0f} MB (the S3 parts in memory, at most)")


def knn_artifact(path: Path, mb: int, seed: int) -> None:
    """A fitted KNeighborsClassifier whose joblib file is about `mb` MB (its training rows)."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.neighbors import KNeighborsClassifier

    rows = (mb << 20) // (10 * 8)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 10)), columns=[f"f{i}" for i in range(10)])
    model = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(frame, frame["f0"] > 0)
    joblib.dump(model, path)


def run_http(endpoint: S3Endpoint, mb: int, rounds: int) -> None:
    import requests

    from tests.support import ADMIN, ADMIN_TOKEN
    from tests.support.live import environment, launch

    with tempfile.TemporaryDirectory(prefix="maas-store-bench-http-") as work:
        root = Path(work)
        common = {"MAAS_ADMIN_TOKEN": ADMIN_TOKEN, "MAAS_PREDICT_TIMEOUT": "60", "XDG_RUNTIME_DIR": work}
        envs = {
            "directory": environment(
                MAAS_DATABASE_URL=f"sqlite:///{root / 'directory.db'}", MAAS_STORE_DIR=str(root / "store"), **common
            ),
            "s3": environment(
                MAAS_DATABASE_URL=f"sqlite:///{root / 's3.db'}",
                MAAS_STORE_URL=f"s3://{endpoint.new_bucket()}/bench",
                MAAS_STORE_CACHE_DIR=str(root / "cache"),
                **endpoint.environment(),
                **common,
            ),
        }
        servers = {}
        try:
            for name, env in envs.items():
                (root / f"cwd-{name}").mkdir()
                servers[name] = launch(env=env, cwd=root / f"cwd-{name}", log=root / f"{name}.log")
            for server in servers.values():
                server.wait_ready()
            results: dict[str, list[float]] = {"directory": [], "s3": []}
            artifact = root / "knn.joblib"
            for i in range(rounds):
                knn_artifact(artifact, mb, seed=i)
                size_mb = artifact.stat().st_size / (1 << 20)
                for name, server in servers.items():
                    with artifact.open("rb") as f:
                        started = time.perf_counter()
                        answer = requests.post(
                            f"{server.url}/api/admin/models/knn/versions",
                            files={"file": ("knn.joblib", f, "application/octet-stream")},
                            headers=ADMIN,
                            timeout=600,
                        )
                        seconds = time.perf_counter() - started
                    assert answer.status_code == 201, answer.text[:500]
                    results[name].append(size_mb / seconds)
                    print(f"HTTP round {i + 1}: {name:9} {size_mb:.0f} MB in {seconds:6.2f} s", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    local, remote = statistics.median(results["directory"]), statistics.median(results["s3"])
    print(f"\n| whole upload over HTTP | MB/s (median of {rounds}) |")
    print("|---|---:|")
    print(f"| maas serve, directory store | {local:.1f} |")
    print(f"| maas serve, S3 store (moto, same machine) | {remote:.1f} |")
    print(f"\nS3 / directory, whole upload: {remote / local:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint", help="an S3 endpoint URL instead of a moto server started here")
    parser.add_argument("--bucket", help="with --endpoint: an existing bucket to write to")
    parser.add_argument("--http", action="store_true", help="also time whole uploads through `maas serve`")
    args = parser.parse_args()
    if args.endpoint:
        run(S3Endpoint(args.endpoint), args.bucket, args.mb, args.rounds)
        return
    os.environ.update({k: os.environ.get(k, v) for k, v in CREDENTIALS.items()})
    with tempfile.TemporaryDirectory(prefix="maas-moto-") as logs, moto_server(Path(logs) / "moto.log") as endpoint:
        run(endpoint, None, args.mb, args.rounds)
        if args.http:
            print()
            run_http(endpoint, args.mb, args.rounds)


if __name__ == "__main__":
    main()
