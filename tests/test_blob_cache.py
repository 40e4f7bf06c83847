"""The local blob cache in front of a remote store: verified on read, bounded, never an authority.

The remote stores are real: SeaweedFS S3 and PostgreSQL on 127.0.0.1, started by the fixtures;
a TCP relay between the cache and S3 takes the store down on demand.
"""

from __future__ import annotations

import io
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from net_fault import FaultyRelay

import guardrails as gr
from guardrails.blobs import (
    BlobIntegrityError,
    BlobStoreUnavailable,
    CachedBlobStore,
    FileBlobStore,
    PostgresBlobStore,
    S3BlobStore,
    StreamingBlobStore,
)


@pytest.fixture
def relay(s3_endpoint: str) -> Iterator[FaultyRelay]:
    """A relay in front of the S3 server: ``drop()`` takes the store down for the cache."""
    port = urllib.parse.urlsplit(s3_endpoint).port
    assert port is not None
    relay = FaultyRelay(port)
    yield relay
    relay.close()


@pytest.fixture
def s3(relay: FaultyRelay, s3_url: str) -> S3BlobStore:
    return S3BlobStore(s3_url, endpoint=f"http://127.0.0.1:{relay.port}", timeout=1)


@pytest.fixture(params=["s3", "postgres"])
def remote(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each remote store, fresh and empty."""
    if request.param == "s3":
        yield request.getfixturevalue("s3")
        return
    dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    store = PostgresBlobStore(dsn, schema=schema)
    yield store
    store.close()


def _rot(cache: CachedBlobStore, digest: str, data: bytes = b"rotten") -> Path:
    """Alter a cache entry behind the cache's back (a bad disk, another process, an attacker)."""
    path = cache.root / digest.split(":", 1)[1]
    path.write_bytes(data)
    return path


def test_the_cache_is_a_streaming_blob_store(remote: Any, tmp_path: Path) -> None:
    assert isinstance(CachedBlobStore(remote, tmp_path / "cache"), StreamingBlobStore)


def test_a_blob_is_fetched_once_then_read_from_the_folder(remote: Any, tmp_path: Path) -> None:
    """The first read fetches from the store; later reads (get or streamed) hit the folder."""
    digest = remote.put(b"weights" * 1000)
    cache = CachedBlobStore(remote, tmp_path / "cache")
    assert cache.get(digest) == b"weights" * 1000
    sink = io.BytesIO()
    cache.read_into(digest, sink)
    assert cache.get(digest) == sink.getvalue() == b"weights" * 1000
    assert (cache.misses, cache.hits) == (1, 2)
    assert cache.cached() == [digest]


def test_a_cached_blob_is_served_while_the_store_is_down(s3: S3BlobStore, relay: FaultyRelay,
                                                         tmp_path: Path) -> None:
    """A follower that fetched a state's weights once loads them again with S3 unreachable."""
    digest = s3.put(b"promoted weights")
    cache = CachedBlobStore(s3, tmp_path / "cache")
    cache.get(digest)
    relay.drop()
    assert cache.get(digest) == b"promoted weights"


def test_a_corrupted_entry_is_refetched_never_served(remote: Any, tmp_path: Path) -> None:
    """An entry that no longer matches its digest is deleted and fetched again from the store."""
    digest = remote.put(b"good weights")
    cache = CachedBlobStore(remote, tmp_path / "cache")
    cache.get(digest)
    _rot(cache, digest)
    assert cache.get(digest) == b"good weights"
    _rot(cache, digest, b"good weightz")
    sink = io.BytesIO()
    cache.read_into(digest, sink)
    assert sink.getvalue() == b"good weights"
    assert cache.corrupt == 2 and (cache.root / digest.split(":", 1)[1]).read_bytes() == (
        b"good weights")


def test_a_corrupted_entry_with_the_store_down_fails_naming_blob_and_store(
        s3: S3BlobStore, relay: FaultyRelay, tmp_path: Path) -> None:
    """With no good copy anywhere reachable the read fails; the rotten bytes never come out."""
    digest = s3.put(b"good weights")
    cache = CachedBlobStore(s3, tmp_path / "cache")
    cache.get(digest)
    _rot(cache, digest)
    relay.drop()
    with pytest.raises(BlobStoreUnavailable) as info:
        cache.get(digest)
    assert digest in str(info.value) and s3.bucket in str(info.value)
    assert cache.cached() == []


def test_a_blob_corrupted_in_the_store_is_not_cached(s3: S3BlobStore, s3_endpoint: str,
                                                     tmp_path: Path) -> None:
    """The store's own bytes are verified on the way in: a bad blob leaves no entry behind."""
    digest = s3.put(b"good weights")
    s3_server.client(s3_endpoint).put_object(Bucket=s3.bucket, Key=s3.prefix + digest[7:],
                                             Body=b"rotten")
    cache = CachedBlobStore(s3, tmp_path / "cache")
    with pytest.raises(BlobIntegrityError, match=digest):
        cache.get(digest)
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_folder_stays_within_its_bound_least_recently_used_first(
        remote: Any, tmp_path: Path) -> None:
    """Past max_bytes the least recently used entries go; the one just read stays."""
    blobs = [remote.put(bytes([i]) * 400) for i in range(4)]
    cache = CachedBlobStore(remote, tmp_path / "cache", max_bytes=1000)
    cache.get(blobs[0])
    cache.get(blobs[1])
    os.utime(cache.root / blobs[1][7:], (1, 1))  # used long ago
    os.utime(cache.root / blobs[0][7:], (2, 2))
    cache.get(blobs[2])
    assert cache.cached() == sorted([blobs[0], blobs[2]])
    cache.get(blobs[0])  # a hit makes it recent
    cache.get(blobs[3])
    assert cache.cached() == sorted([blobs[0], blobs[3]])


def test_a_blob_larger_than_the_bound_passes_through_uncached(remote: Any,
                                                              tmp_path: Path) -> None:
    digest = remote.put(b"x" * 5000)
    cache = CachedBlobStore(remote, tmp_path / "cache", max_bytes=1000)
    assert cache.get(digest) == b"x" * 5000
    assert list(cache.root.iterdir()) == []


def test_a_malformed_digest_touches_no_file(tmp_path: Path) -> None:
    """A name that is not a digest is never found and never becomes a path."""
    outside = tmp_path / "secret"
    outside.write_bytes(b"do not serve")
    cache = CachedBlobStore(FileBlobStore(tmp_path / "store"), tmp_path / "cache")
    for name in ("../secret", "sha256:../../secret", "sha256:" + "A" * 64):
        with pytest.raises(KeyError):
            cache.get(name)
    assert list(cache.root.iterdir()) == []


def test_writes_and_membership_are_the_stores(remote: Any, tmp_path: Path) -> None:
    """put goes to the store; a blob deleted from the store is gone from the cache too."""
    cache = CachedBlobStore(remote, tmp_path / "cache")
    digest = cache.put(b"new weights")
    assert digest in remote and remote.get(digest) == b"new weights"
    cache.get(digest)
    cache.delete(digest)
    assert digest not in cache and cache.cached() == []


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=st.lists(st.integers(0, 7), min_size=1, max_size=30),
       bound=st.integers(1, 3000), rotten=st.sets(st.integers(0, 7)))
def test_any_reads_are_correct_and_bounded(tmp_path_factory: pytest.TempPathFactory,
                                           reads: list[int], bound: int,
                                           rotten: set[int]) -> None:
    """For any reads, bound and rotted entries: every read returns the stored bytes and the
    folder never holds more than the bound."""
    root = tmp_path_factory.mktemp("cache")
    store = FileBlobStore(root / "store")
    data = [bytes([i]) * (100 * (i + 1)) for i in range(8)]
    digests = [store.put(d) for d in data]
    cache = CachedBlobStore(store, root / "cache", max_bytes=bound)
    for step, i in enumerate(reads):
        if step == len(reads) // 2:
            for j in rotten:
                if (cache.root / digests[j][7:]).exists():
                    _rot(cache, digests[j])
        assert cache.get(digests[i]) == data[i]
        assert sum(p.stat().st_size for p in cache.root.iterdir()) <= bound


def _guard(tmp_path: Path, blobs: str) -> gr.Guard:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "1"}\n')
    (tmp_path / "guardrails.toml").write_text(
        '[canaries]\nfiles = ["cases.jsonl"]\n[blobs]\n' + blobs)
    return gr.Guard.from_config(tmp_path / "guardrails.toml")


def test_the_configuration_puts_a_cache_in_front_of_a_remote_store(tmp_path: Path) -> None:
    """[blobs] cache_dir (relative to the configuration) and cache_max_bytes wrap the store."""
    store = _guard(tmp_path, 'url = "s3://bucket/p/"\nendpoint = "http://127.0.0.1:1"\n'
                   'cache_dir = "cache"\ncache_max_bytes = 4096\n').blob_store
    assert isinstance(store, CachedBlobStore) and isinstance(store.store, S3BlobStore)
    assert (store.root, store.max_bytes, store.url) == (tmp_path / "cache", 4096, "s3://bucket/p/")


def test_a_cache_for_a_local_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(gr.ConfigError, match="cache_dir applies to a remote"):
        _guard(tmp_path, 'url = "blobs"\ncache_dir = "cache"\n')
