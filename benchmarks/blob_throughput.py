"""Blob put/get throughput of each store for one 100 MB blob, beside a plain file copy.

Streams the blob in (``put_stream`` from a file) and out (``read_into`` a file) on the
folder store, PostgreSQL (chunked rows) and S3 (SeaweedFS), each verifying the digest, and
prints MB/s beside ``shutil.copyfile`` of the same file. Servers: the ones named by
GUARDRAILS_TEST_POSTGRES_DSN and GUARDRAILS_TEST_S3_ENDPOINT, else started here with
.ci/postgres.sh and .ci/seaweedfs.sh on 127.0.0.1 and stopped at the end. Short mode:
GUARDRAILS_BENCH_N=8 moves an 8 MB blob.

    python benchmarks/blob_throughput.py
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from guardrails.blobs import FileBlobStore, PostgresBlobStore, S3BlobStore

ROOT = Path(__file__).resolve().parents[1]
MB = int(os.environ.get("GUARDRAILS_BENCH_N", "100"))


@contextlib.contextmanager
def _server(script: str, env_name: str) -> Iterator[str]:
    if os.environ.get(env_name):
        yield os.environ[env_name]
        return
    directory = Path(tempfile.mkdtemp(prefix=f"guardrails-bench-{script}-", dir="/tmp"))
    result = subprocess.run(["bash", str(ROOT / ".ci" / f"{script}.sh"), "start", str(directory)],
                            capture_output=True, text=True, timeout=600, check=True)
    try:
        yield result.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(ROOT / ".ci" / f"{script}.sh"), "stop", str(directory),
                        "immediate"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def _rate(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return MB / (time.perf_counter() - start)


def _store_rates(store: object, source: Path, target: Path) -> tuple[float, float]:
    digest = ""

    def put() -> None:
        nonlocal digest
        with source.open("rb") as handle:
            digest = store.put_stream(handle)  # type: ignore[attr-defined]

    def get() -> None:
        with target.open("wb") as handle:
            store.read_into(digest, handle)  # type: ignore[attr-defined]

    return _rate(put), _rate(get)


def main() -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory() as folder, \
            _server("postgres", "GUARDRAILS_TEST_POSTGRES_DSN") as dsn, \
            _server("seaweedfs", "GUARDRAILS_TEST_S3_ENDPOINT") as endpoint:
        source, target = Path(folder) / "blob", Path(folder) / "out"
        with source.open("wb") as handle:
            for _ in range(MB):
                handle.write(os.urandom(1 << 20))
        copy = _rate(lambda: shutil.copyfile(source, target))
        import boto3

        bucket = "guardrails-bench"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        with contextlib.suppress(Exception):
            s3.create_bucket(Bucket=bucket)
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        stores = [("file", FileBlobStore(Path(folder) / "blobs")),
                  ("postgresql", PostgresBlobStore(dsn, schema=schema)),
                  ("s3 (seaweedfs)", S3BlobStore(f"s3://{bucket}/{uuid.uuid4().hex}/",
                                                 endpoint=endpoint))]
        print(f"{MB} MB blob, streamed and verified     put MB/s   get MB/s")
        print(f"{'plain file copy':<36} {copy:>9.0f} {copy:>10.0f}")
        for name, store in stores:
            put, get = _store_rates(store, source, target)
            print(f"{name:<36} {put:>9.0f} {get:>10.0f}")
        stores[1][1].close()  # type: ignore[attr-defined]
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
