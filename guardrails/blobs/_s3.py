"""Blobs in S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph RGW, ...), via boto3.

A blob is the object ``PREFIX<64 hex digits>`` in one bucket. The bucket,
prefix, endpoint and credentials come from the URL ``s3://BUCKET/PREFIX``,
the ``endpoint`` and ``region`` options (``[blobs]`` in the configuration)
and boto3's usual sources: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
/ ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``~/.aws/credentials``, an instance role.

*Write-once.* Every write is conditional (``If-None-Match: *``): a store
refuses to replace an object that exists, and a refusal (412) means another
writer stored the same digest first, so its bytes (identical by
construction, and verified on every read anyway) stay. Blobs above
``multipart_threshold`` go up in parts, the completion conditional too.

*Streamed.* ``put_stream`` spools to a temporary file while hashing (the key
is the digest, known only at the end) and uploads from it; ``read_into``
copies the response body chunk by chunk.

boto3 is imported when a store is first used, never by ``import guardrails``.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any

from .._errors import ConfigError
from ._blobs import (
    _PREFIX,
    CHUNK_SIZE,
    BlobInfo,
    BlobStoreUnavailable,
    HashingSink,
    Spool,
    digest_hex,
    verified,
)

_MISSING = {"404", "NoSuchKey", "NotFound"}
_EXISTS = {"412", "PreconditionFailed"}
_CONFLICT = {"409", "ConditionalRequestConflict"}


def _modules() -> Any:
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise ConfigError(f"an S3 blob store needs boto3 ({exc}); install it with: "
                          "pip install 'guardrails-middleware[s3]'") from None
    return boto3, botocore


def _reopen(url: str, options: dict[str, Any]) -> S3BlobStore:
    return S3BlobStore(url, **options)


class S3BlobStore:
    """A ``StreamingBlobStore`` in an S3 bucket (``s3://BUCKET/PREFIX`` URL).

    ``endpoint``: the service URL for a store other than AWS (default: boto3's
    environment variables, else AWS). ``region``: default ``AWS_REGION`` or
    ``us-east-1``. The bucket must exist. Every failure to reach the service
    or a refused request raises ``BlobStoreUnavailable`` naming the blob and
    the store; credentials never appear in a message.
    """

    def __init__(self, url: str, *, endpoint: str | None = None, region: str | None = None,
                 timeout: float = 10.0, multipart_threshold: int = 1 << 30,
                 part_size: int = 64 << 20) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"{url!r} is not an S3 blob store URL; write it as s3://BUCKET/PREFIX")
        if part_size < 5 << 20:
            raise ConfigError(f"part_size {part_size} is below S3's minimum of 5 MiB")
        self._url = url
        self.bucket = parts.netloc
        prefix = parts.path.lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.endpoint = endpoint
        self.region = region
        self.timeout = timeout
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._options = {"endpoint": endpoint, "region": region, "timeout": timeout,
                         "multipart_threshold": multipart_threshold, "part_size": part_size}
        self._client: Any = None
        self._lock = threading.Lock()
        where = f" at {endpoint}" if endpoint else ""
        self.name = f"S3 blob store s3://{self.bucket}/{self.prefix}{where}"

    @property
    def url(self) -> str:
        return self._url

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._url, self._options))

    def __repr__(self) -> str:
        return f"S3BlobStore({self._url!r}, endpoint={self.endpoint!r})"

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                boto3, botocore = _modules()
                config = botocore.config.Config(
                    connect_timeout=self.timeout, read_timeout=max(self.timeout, 60.0),
                    retries={"mode": "standard", "max_attempts": 3})
                region = self.region or os.environ.get("AWS_REGION") or os.environ.get(
                    "AWS_DEFAULT_REGION") or "us-east-1"
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint, region_name=region, config=config)
            return self._client

    def _key(self, digest: str) -> str:
        return self.prefix + digest_hex(digest)

    def _unavailable(self, exc: BaseException, digest: str | None, action: str
                     ) -> BlobStoreUnavailable:
        what = f"blob {digest}" if digest else "the blob list"
        detail = _error_code(exc) or type(exc).__name__
        return BlobStoreUnavailable(
            f"{action} {what} failed: the {self.name} could not be used ({detail}: "
            f"{_short(exc)}); check that the service is up, the bucket exists and the "
            "credentials allow it", digest=digest, store=self.name)

    def _call(self, digest: str | None, action: str, method: str, **kwargs: Any) -> Any:
        _, botocore = _modules()
        try:
            return getattr(self._s3(), method)(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING and digest is not None:
                raise KeyError(digest) from None
            if code in _EXISTS | _CONFLICT:
                raise _Exists() from None
            raise self._unavailable(exc, digest, action) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._unavailable(exc, digest, action) from None

    # -- writing ------------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, source: IO[bytes]) -> str:
        with Spool(source) as spool:
            digest = spool.digest
            key = self._key(digest)
            try:
                if spool.size <= self.multipart_threshold:
                    self._call(digest, "storing", "put_object", Key=key, Body=spool.file,
                               IfNoneMatch="*", ContentLength=spool.size)
                else:
                    self._put_parts(digest, key, spool.file)
            except _Exists:
                pass  # write-once: the first writer's object stays
        return digest

    def _put_parts(self, digest: str, key: str, file: IO[bytes]) -> None:
        upload = self._call(digest, "storing", "create_multipart_upload", Key=key)["UploadId"]
        try:
            parts = []
            number = 1
            while chunk := file.read(self.part_size):
                etag = self._call(digest, "storing", "upload_part", Key=key, UploadId=upload,
                                  PartNumber=number, Body=chunk)["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
                number += 1
            self._call(digest, "storing", "complete_multipart_upload", Key=key, UploadId=upload,
                       MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            # Parts of an abandoned upload cost storage until aborted; best effort.
            with contextlib.suppress(Exception):
                self._call(digest, "aborting", "abort_multipart_upload", Key=key, UploadId=upload)
            raise

    # -- reading ------------------------------------------------------------------------------

    def get(self, digest: str) -> bytes:
        buffer = io.BytesIO()
        self._stream(digest, buffer)
        return verified(self.name, digest, buffer.getvalue())

    def read_into(self, digest: str, sink: IO[bytes]) -> int:
        hashing = HashingSink(sink)
        self._stream(digest, hashing)
        return hashing.check(self.name, digest)

    def _stream(self, digest: str, sink: Any) -> None:
        _, botocore = _modules()
        body = self._call(digest, "reading", "get_object", Key=self._key(digest))["Body"]
        try:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                sink.write(chunk)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._unavailable(exc, digest, "reading") from None
        finally:
            body.close()

    def blobs(self) -> Iterator[BlobInfo]:
        token: dict[str, str] = {}
        while True:
            page = self._call(None, "listing", "list_objects_v2", Prefix=self.prefix, **token)
            for item in page.get("Contents", ()):
                name = item["Key"][len(self.prefix):]
                try:
                    digest_hex(_PREFIX + name)
                except KeyError:
                    continue  # not ours: a bucket may hold other objects under the prefix
                yield BlobInfo(digest=_PREFIX + name, size=int(item["Size"]),
                               created=item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, digest: str) -> None:
        self._call(digest, "deleting", "delete_object", Key=self._key(digest))

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, str):
            return False
        try:
            key = self._key(digest)
        except KeyError:
            return False
        try:
            self._call(digest, "looking up", "head_object", Key=key)
        except KeyError:
            return False
        return True


class _Exists(Exception):
    """A conditional write was refused: the object is already there."""


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [""])[0][:200]
