"""``guardrails blobs verify`` and ``guardrails blobs gc`` against a real S3-compatible store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3_server
import structlog
from click.testing import CliRunner, Result

import guardrails as gr
from guardrails._cli import main
from guardrails.blobs import S3BlobStore
from guardrails.testing import DictClient

CONFIG = """
[constraints]
frozen = ["/prompt"]

[canaries]
files = ["cases.jsonl"]

[blobs]
url = "{url}"
endpoint = "{endpoint}"
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, s3_url: str
            ) -> Path:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "1"}\n'
                                          '{"id": "b", "input": "b", "expect": "2"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG.format(url=s3_url, endpoint=s3_endpoint))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _store(project: Path) -> S3BlobStore:
    guard = gr.Guard.from_config(project / "guardrails.toml")
    assert isinstance(guard.blob_store, S3BlobStore)
    return guard.blob_store


def _promote(project: Path) -> tuple[str, str]:
    """A guard serving weights v1, then an accepted update to v2; returns both digests."""
    guard = gr.Guard.from_config(project / "guardrails.toml")
    store = guard.blob_store
    assert store is not None
    v1, v2 = store.put(b"weights v1"), store.put(b"weights v2")
    client = DictClient({"prompt": "p", "answers": {"a": "1", "b": "2"}, "default": "?",
                         "weights": gr.blob_ref(v1)})
    guarded = guard.wrap(client)
    client.queue({"op": "replace", "path": "/weights", "value": gr.blob_ref(v2)})
    assert guarded.self_improve().accepted
    return v1, v2


def _overwrite(store: S3BlobStore, digest: str, data: bytes) -> None:
    s3_server.client(store.endpoint).put_object(
        Bucket=store.bucket, Key=store.prefix + digest.split(":")[1], Body=data)


def test_verify_passes_when_every_blob_is_intact(project: Path) -> None:
    """Exit 0 and a count when every blob of every accepted state reads back intact."""
    _promote(project)
    result = run("blobs", "verify")
    assert result.exit_code == 0, result.output
    assert "ok: 2 blobs checked in S3 blob store" in result.output


def test_verify_names_an_altered_blob_and_the_store(project: Path) -> None:
    """An altered blob fails verification (exit 1), named with its store and states."""
    v1, _ = _promote(project)
    _overwrite(_store(project), v1, b"rotten")
    result = run("blobs", "verify", "--json")
    assert result.exit_code == 1
    # A ledger watcher left by an earlier test may log a line beside the JSON.
    report, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{\n"):])
    assert [p["digest"] for p in report["problems"]] == [v1]
    assert report["problems"][0]["problem"] == "altered"
    assert "S3 blob store" in report["problems"][0]["message"]


def test_verify_finds_a_missing_blob(project: Path) -> None:
    """A blob of an accepted state that the store lost fails verification."""
    _, v2 = _promote(project)
    _store(project).delete(v2)
    result = run("blobs", "verify")
    assert result.exit_code == 1 and f"missing: blob {v2}" in result.output


def test_gc_dry_run_lists_only_unreferenced_blobs(project: Path) -> None:
    """--dry-run lists old unreferenced blobs, never a referenced one, and deletes nothing."""
    v1, v2 = _promote(project)
    stray = _store(project).put(b"stray upload")
    result = run("blobs", "gc", "--dry-run", "--grace", "0")
    assert result.exit_code == 0, result.output
    assert f"would delete {stray}" in result.output
    assert v1 not in result.output and v2 not in result.output
    assert stray in _store(project)


def test_gc_keeps_young_blobs(project: Path) -> None:
    """A blob younger than the grace period is kept (it may belong to a proposal in flight)."""
    _promote(project)
    stray = _store(project).put(b"just uploaded")
    result = run("blobs", "gc", "--dry-run")
    assert result.exit_code == 0 and stray not in result.output


def test_gc_deletes_only_unreferenced_blobs(project: Path) -> None:
    """Without --dry-run the stray blob goes; every referenced blob stays and still verifies."""
    v1, v2 = _promote(project)
    store = _store(project)
    stray = store.put(b"stray upload")
    assert run("blobs", "gc", "--grace", "0").exit_code == 0
    assert stray not in store and v1 in store and v2 in store
    assert run("blobs", "verify").exit_code == 0


def test_two_blob_stores_in_one_configuration_are_refused(project: Path) -> None:
    """[blobs] url and [ledger] blobs together: exit 3 saying which to keep."""
    config = project / "guardrails.toml"
    config.write_text(config.read_text() + '\n[ledger]\nblobs = "elsewhere"\n')
    result = run("blobs", "verify")
    assert result.exit_code == 3 and "remove [ledger] blobs" in result.output


def test_an_option_of_another_store_is_refused(project: Path) -> None:
    """schema is for PostgreSQL only: an s3:// store with it is a configuration error."""
    config = project / "guardrails.toml"
    config.write_text(config.read_text().replace("[blobs]\n", '[blobs]\nschema = "x"\n'))
    result = run("blobs", "verify")
    assert result.exit_code == 3 and "schema applies to a postgresql://" in result.output




def test_verify_reads_the_store_not_the_local_cache(project: Path) -> None:
    """With [blobs] cache_dir, a blob the store lost fails verification even though this
    host's cache still holds a good copy."""
    config = project / "guardrails.toml"
    config.write_text(config.read_text() + 'cache_dir = "blob-cache"\n')
    _, v2 = _promote(project)
    cache = gr.Guard.from_config(config).blob_store
    assert isinstance(cache, gr.CachedBlobStore)
    cache.get(v2)
    cache.store.delete(v2)
    assert cache.get(v2) == b"weights v2"  # the cache still serves it
    result = run("blobs", "verify")
    assert result.exit_code == 1 and v2 in result.output
