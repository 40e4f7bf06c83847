"""``[blobs]`` and ``[canaries.dask]`` in guardrails.toml: which store, which backend."""

from __future__ import annotations

from pathlib import Path

import pytest

import guardrails as gr
from guardrails.blobs import FileBlobStore, S3BlobStore

BASE = '[canaries]\nfiles = ["cases.jsonl"]\n'


def _guard(tmp_path: Path, extra: str) -> gr.Guard:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "1"}\n')
    (tmp_path / "guardrails.toml").write_text(BASE + extra)
    return gr.Guard.from_config(tmp_path / "guardrails.toml")


def test_without_blobs_the_ledger_folder_is_the_store(tmp_path: Path) -> None:
    """No [blobs]: the folder [ledger] blobs, relative to the configuration, as before."""
    store = _guard(tmp_path, "").blob_store
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / ".guardrails" / "blobs"


def test_a_relative_folder_url_is_resolved_from_the_configuration(tmp_path: Path) -> None:
    """[blobs] url = "shared/blobs" names a folder beside guardrails.toml."""
    store = _guard(tmp_path, '[blobs]\nurl = "shared/blobs"\n').blob_store
    assert isinstance(store, FileBlobStore) and store.root == (tmp_path / "shared/blobs").resolve()


def test_an_s3_url_opens_the_s3_store_with_its_endpoint(tmp_path: Path) -> None:
    """[blobs] url = "s3://..." with endpoint gives an S3BlobStore (nothing is contacted yet)."""
    store = _guard(tmp_path, '[blobs]\nurl = "s3://bucket/p/"\nendpoint = "http://127.0.0.1:1"\n'
                   ).blob_store
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint) == ("bucket", "p/", "http://127.0.0.1:1")


def test_canaries_dask_reaches_the_run_settings(tmp_path: Path) -> None:
    """[canaries.dask] becomes RunSettings.dask, with the blob store's URL and options."""
    guard = _guard(tmp_path, '[canaries.dask]\nscheduler = "tcp://127.0.0.1:8786"\n'
                   'build = "pkg.mod:build"\n[blobs]\nurl = "s3://b/p/"\n'
                   'endpoint = "http://127.0.0.1:1"\n')
    dask = guard.canary_run.dask
    assert dask is not None
    assert (dask.scheduler, dask.build, dask.blobs) == ("tcp://127.0.0.1:8786", "pkg.mod:build",
                                                        "s3://b/p/")
    assert dask.blob_options == {"endpoint": "http://127.0.0.1:1"}


@pytest.mark.parametrize(("extra", "match"), [
    ('[blobs]\nurl = "ftp://x/y"\n', "unknown scheme"),
    ('[blobs]\nurl = "mysql://app:hunter2@db/x"\n', r"unknown scheme 'mysql://'; use file://"),
    ('[blobs]\nurl = "s3://b/p"\nregion = "x"\nschema = "y"\n', "postgresql:// blob store only"),
    ('[blobs]\nurl = "blobs"\nendpoint = "http://x"\n', "s3:// blob store only"),
    ('[canaries.dask]\nscheduler = "tcp://x:1"\nbuild = "nocolon"\n', "package.module:callable"),
    ('[blobs]\nurll = "x"\n', "did you mean 'url'"),
    ('[sandbox]\nmode = "process"\n[canaries.dask]\nscheduler = "tcp://x:1"\nbuild = "a:b"\n',
     "outside the process sandbox"),
])
def test_mistakes_are_config_errors_naming_the_fix(tmp_path: Path, extra: str, match: str) -> None:
    """A wrong scheme, an option of another store, a bad build or a typo: a ConfigError."""
    with pytest.raises(gr.ConfigError, match=match):
        _guard(tmp_path, extra)


def test_canaries_ray_reaches_the_run_settings(tmp_path: Path) -> None:
    """[canaries.ray] becomes RunSettings.ray, with the blob store's URL and options."""
    guard = _guard(tmp_path, '[canaries.ray]\naddress = "10.0.0.5:6379"\n'
                   'build = "pkg.mod:build"\n[blobs]\nurl = "s3://b/p/"\n'
                   'endpoint = "http://127.0.0.1:1"\n')
    ray = guard.canary_run.ray
    assert ray is not None and guard.canary_run.dask is None
    assert (ray.address, ray.build, ray.blobs, ray.blob_options) == (
        "10.0.0.5:6379", "pkg.mod:build", "s3://b/p/", {"endpoint": "http://127.0.0.1:1"})


def test_two_clusters_at_once_are_refused(tmp_path: Path) -> None:
    """[canaries.dask] and [canaries.ray] together: which one would review is unclear."""
    with pytest.raises(gr.ConfigError, match="keep one"):
        _guard(tmp_path, '[canaries.dask]\nscheduler = "tcp://127.0.0.1:8786"\n'
               'build = "pkg.mod:build"\n[canaries.ray]\naddress = "auto"\n'
               'build = "pkg.mod:build"\n')


def test_canaries_ray_refuses_the_process_sandbox(tmp_path: Path) -> None:
    with pytest.raises(gr.ConfigError, match=r"\[canaries.ray\] runs candidates"):
        _guard(tmp_path, '[canaries.ray]\naddress = "auto"\nbuild = "pkg.mod:build"\n'
               '[sandbox]\nmode = "process"\n')


@pytest.mark.parametrize(("extra", "named"), [
    ('[blobs]\nurl = "mysql://app:hunter2@db/x"\n', "mysql://"),
    ('[blobs]\nurl = "postgresql://app:hunter2@db/x"\nendpoint = "http://x"\n', "endpoint"),
    ('[ledger]\npath = "ledger.db"\ntimeout = "postgresql://app:hunter2@db/x"\n', "***"),
], ids=["unknown scheme", "option of another store", "a URL where a number goes"])
def test_a_refused_setting_is_named_without_echoing_a_password(
        tmp_path: Path, extra: str, named: str) -> None:
    """The error names what is wrong and the fix; a URL's password never reaches it."""
    with pytest.raises(gr.ConfigError) as refused:
        _guard(tmp_path, extra)
    assert named in str(refused.value) and "hunter2" not in str(refused.value)
