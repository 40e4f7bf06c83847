"""The blob stores behind one protocol: content-addressed, write-once, every read verified.

Each behaviour runs on the local folder, on PostgreSQL and on a real S3-compatible server
(SeaweedFS on 127.0.0.1), all started by the fixtures.
"""

from __future__ import annotations

import io
import pickle
import socket
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest
import s3_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.blobs import (
    BlobIntegrityError,
    BlobStoreUnavailable,
    FileBlobStore,
    PostgresBlobStore,
    S3BlobStore,
    StreamingBlobStore,
    open_blob_store,
)

MiB = 1 << 20


def _pg_url(dsn: str, schema: str) -> PostgresBlobStore:
    return PostgresBlobStore(dsn, schema=schema, chunk_size=256 * 1024)


@pytest.fixture(params=["file", "postgres", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty store of each kind."""
    if kind == "file":
        yield FileBlobStore(tmp_path / "blobs")
    elif kind == "postgres":
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
        pg = _pg_url(dsn, schema)
        yield pg
        pg.close()
    else:
        endpoint, url = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_url")
        yield S3BlobStore(url, endpoint=endpoint, part_size=5 * MiB)


def _corrupt(kind: str, store: Any, digest: str, request: pytest.FixtureRequest) -> None:
    """Alter a stored blob behind the store's back (bit rot, a bad disk, an operator)."""
    hex_part = digest.split(":", 1)[1]
    if kind == "file":
        (store.root / hex_part).write_bytes(b"rotten")
    elif kind == "postgres":
        with pg_server.connect(request.getfixturevalue("postgres_dsn"), store.schema) as conn:
            conn.execute("UPDATE guardrails_blob_chunks SET data = 'rotten'::bytea "
                         "WHERE digest = %s AND seq = 0", (digest,))
    else:
        s3_server.client(store.endpoint).put_object(Bucket=store.bucket,
                                                    Key=store.prefix + hex_part, Body=b"rotten")


def test_every_store_is_a_streaming_blob_store(store: Any) -> None:
    """Each store implements the whole shared-store protocol."""
    assert isinstance(store, StreamingBlobStore)


def test_put_returns_the_digest_and_get_the_bytes(store: Any) -> None:
    """A blob is stored under the SHA-256 of its bytes and read back unchanged."""
    digest = store.put(b"weights v1")
    assert digest == gr.blob_digest(b"weights v1")
    assert store.get(digest) == b"weights v1"
    assert digest in store


def test_an_absent_blob_is_a_key_error(store: Any) -> None:
    """Reading a blob the store does not hold raises KeyError; it is not 'in' the store."""
    digest = gr.blob_digest(b"never stored")
    assert digest not in store
    with pytest.raises(KeyError):
        store.get(digest)
    with pytest.raises(KeyError):
        store.read_into(digest, io.BytesIO())


def test_a_malformed_digest_is_never_found(store: Any) -> None:
    """A digest that is not 'sha256:' and 64 hex digits names no blob (and no path or key)."""
    assert "sha256:../../etc/passwd" not in store
    with pytest.raises(KeyError):
        store.get("sha256:../../etc/passwd")


def test_put_is_idempotent(store: Any) -> None:
    """Storing the same bytes twice gives the same digest and one blob."""
    first, second = store.put(b"same"), store.put(b"same")
    assert first == second
    assert [info.digest for info in store.blobs()] == [first]


def test_a_corrupted_blob_is_refused_and_named(kind: str, store: Any,
                                              request: pytest.FixtureRequest) -> None:
    """Bytes that no longer match their digest raise BlobIntegrityError naming blob and store."""
    digest = store.put(b"good weights")
    _corrupt(kind, store, digest, request)
    for read in (lambda: store.get(digest), lambda: store.read_into(digest, io.BytesIO())):
        with pytest.raises(BlobIntegrityError) as info:
            read()
        assert digest in str(info.value) and info.value.store in str(info.value)
        assert info.value.digest == digest


def test_write_once_keeps_the_first_bytes(kind: str, store: Any,
                                          request: pytest.FixtureRequest) -> None:
    """A put never replaces an existing blob, even one that rotted: the rot stays detectable."""
    digest = store.put(b"original")
    _corrupt(kind, store, digest, request)
    if kind != "file":  # the folder store checks existence by name, like the others
        assert store.put(b"original") == digest
    with pytest.raises(BlobIntegrityError):
        store.get(digest)


def test_streamed_blobs_round_trip_in_chunks(store: Any) -> None:
    """A blob of several chunks (and, on S3, several upload parts) streams in and out intact."""
    if isinstance(store, S3BlobStore):
        store.multipart_threshold = 1  # force the multipart path on a small blob
    data = bytes(range(256)) * (11 * MiB // 256) + b"tail"
    digest = store.put_stream(io.BytesIO(data))
    assert digest == gr.blob_digest(data)
    sink = io.BytesIO()
    assert store.read_into(digest, sink) == len(data)
    assert sink.getvalue() == data


def test_blobs_lists_digest_size_and_age(store: Any) -> None:
    """blobs() lists every stored blob with its size and when it was stored."""
    digests = {store.put(b"a"), store.put(b"bb")}
    listed = {info.digest: info for info in store.blobs()}
    assert set(listed) == digests
    assert listed[gr.blob_digest(b"bb")].size == 2
    assert all(info.created > 1.6e9 for info in listed.values())


def test_delete_removes_a_blob(store: Any) -> None:
    """delete() removes one blob and leaves the others."""
    keep, drop = store.put(b"keep"), store.put(b"drop")
    store.delete(drop)
    assert drop not in store and keep in store


def test_a_store_pickles_as_its_url(store: Any) -> None:
    """A store unpickled elsewhere (a Dask worker) reopens the same store by its URL."""
    digest = store.put(b"shipped")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.url == store.url
    assert copy.get(digest) == b"shipped"


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_any_bytes_round_trip(store: Any, data: bytes) -> None:
    """For any bytes, get(put(b)) == b and read_into streams the same bytes."""
    digest = store.put(data)
    assert store.get(digest) == data
    sink = io.BytesIO()
    store.read_into(digest, sink)
    assert sink.getvalue() == data


def test_s3_refuses_a_conditional_put_of_an_existing_key(s3_endpoint: str) -> None:
    """The server itself refuses If-None-Match: * on an existing key (what write-once rests on)."""
    import botocore.exceptions

    s3, bucket = s3_server.client(s3_endpoint), s3_server.ensure_bucket(s3_endpoint)
    key = s3_server.new_prefix() + "k"
    s3.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"


def test_postgres_streams_without_holding_the_blob(postgres_dsn: str, pg_schema: str) -> None:
    """Reading a 48 MiB blob from PostgreSQL into a file never holds much of it in memory."""
    pg = _pg_url(postgres_dsn, pg_schema)
    data = bytes(range(256)) * (48 * MiB // 256)
    digest = pg.put_stream(io.BytesIO(data))
    del data
    tracemalloc.start()
    try:
        with open("/dev/null", "wb") as sink:
            pg.read_into(digest, sink)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pg.close()
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_postgres_down_is_named(postgres_dsn: str) -> None:
    """A PostgreSQL store that cannot be reached raises BlobStoreUnavailable naming it."""
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    pg = PostgresBlobStore(url, timeout=2)
    digest = gr.blob_digest(b"x")
    with pytest.raises(BlobStoreUnavailable) as info:
        pg.get(digest)
    assert digest in str(info.value) and "127.0.0.1" in str(info.value)


def test_s3_down_is_named() -> None:
    """An S3 store whose server is gone raises BlobStoreUnavailable naming blob and store."""
    s3_server.set_credentials()
    store = S3BlobStore("s3://gone/blobs", endpoint=f"http://127.0.0.1:{_closed_port()}",
                        timeout=1)
    digest = gr.blob_digest(b"x")
    for call in (lambda: store.get(digest), lambda: store.put(b"x")):
        with pytest.raises(BlobStoreUnavailable) as info:
            call()
        assert digest in str(info.value) and "s3://gone/blobs/" in str(info.value)


def test_a_missing_bucket_is_unavailable_not_absent(s3_endpoint: str) -> None:
    """Reading from a bucket that does not exist is a store problem, never 'the blob is absent'
    (a store that lost its bucket must not look like one that lost a blob)."""
    bucket = "missing-" + s3_server.new_prefix().strip("/")
    store = S3BlobStore(f"s3://{bucket}/x", endpoint=s3_endpoint)
    with pytest.raises(BlobStoreUnavailable, match=bucket):
        store.get(gr.blob_digest(b"x"))


@pytest.mark.parametrize(("url", "expected"), [
    ("file:///tmp/guardrails-blobs-test", FileBlobStore),
    ("blobs", FileBlobStore),
    ("postgresql://u@127.0.0.1/db", PostgresBlobStore),
    ("s3://bucket/prefix", S3BlobStore),
])
def test_open_blob_store_chooses_by_url(url: str, expected: type, tmp_path: Path) -> None:
    """The URL's scheme picks the store; a relative folder is resolved from the root."""
    store = open_blob_store(url, root=tmp_path)
    assert isinstance(store, expected)
    if url == "blobs":
        assert isinstance(store, FileBlobStore) and store.root == tmp_path / "blobs"


@pytest.mark.parametrize(("url", "options", "match"), [
    ("ftp://host/x", {}, "unknown scheme"),
    ("s3://", {}, "s3://BUCKET/PREFIX"),
    ("s3://b/p", {"schema": "x"}, "S3BlobStore"),
    ("blobs", {"endpoint": "x"}, "takes no options"),
])
def test_open_blob_store_explains_a_bad_url(url: str, options: dict[str, Any], match: str,
                                            tmp_path: Path) -> None:
    """An unknown scheme or an option the store does not take is a ConfigError saying so."""
    with pytest.raises(gr.ConfigError, match=match):
        open_blob_store(url, root=tmp_path, **options)


