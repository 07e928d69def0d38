"""Sources and sinks: local folders and S3 prefixes behind one pyarrow filesystem interface.

Every write is atomic: a local file is written beside its target and renamed over it; an S3
object only becomes visible when its upload completes. A reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from pyarrow import fs as pafs

log = logging.getLogger(__name__)
T = TypeVar("T")

# What Arrow's S3 errors say when a retry may succeed (the same list Ray Data retries its own writes on).
TRANSIENT_S3_ERRORS = ("AWS Error SLOW_DOWN", "AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION",
                       "AWS Error SERVICE_UNAVAILABLE", "HTTP status 503", "HTTP status 500")


def retry_transient(op: Callable[[], T], what: str, attempts: int = 5, base_delay_s: float = 0.2) -> T:
    """Run `op`, retrying transient S3 errors with jittered exponential backoff.

    The SDK already retries each request; this covers operations made of several requests, such as
    a multipart upload, which fail as a whole when one of their requests runs out of SDK retries
    (seen with a store answering every third request with 503 SlowDown).
    """
    for attempt in range(1, attempts):
        try:
            return op()
        except OSError as e:
            if not any(s in str(e) for s in TRANSIENT_S3_ERRORS):
                raise
            delay = base_delay_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.warning("%s: transient S3 error (attempt %d of %d), retrying in %.1f s: %s", what, attempt,
                        attempts, delay, str(e).splitlines()[0][:200])
            time.sleep(delay)
    return op()  # the last attempt: whatever it raises goes to the caller


def s3_filesystem(endpoint: str | None = None) -> pafs.S3FileSystem:
    """S3 through the standard AWS environment variables, optionally at an S3-compatible endpoint."""
    kwargs: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                    # Transient 5xx and throttling: retry with backoff instead of failing the row.
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=6)}
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if not sep:
            raise ValueError(f"--s3-endpoint must be a URL such as http://127.0.0.1:9000, got {endpoint!r}")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class Location:
    """A folder or an S3 prefix: `fs` plus the `root` path inside it."""

    uri: str
    fs: pafs.FileSystem
    root: str
    s3_endpoint: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key) if self.root else key

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def read(self, key: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(key)) as f:
                return f.read()

        return retry_transient(read, f"reading {self.uri_of(key)}") if self.is_s3 else read()

    def write_atomic(self, key: str, data: bytes) -> None:
        path = self.path(key)
        parent = posixpath.dirname(path)
        if self.is_s3:  # an S3 object becomes visible only when its upload completes

            def upload() -> None:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)

            retry_transient(upload, f"writing {self.uri_of(key)}")
            return
        if parent:
            self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.partial")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def delete(self, key: str) -> None:
        path = self.path(key)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)


def open_location(uri: str, s3_endpoint: str | None = None, create: bool = False) -> Location:
    if uri.startswith("s3://"):
        root = uri[len("s3://"):].strip("/")
        if not root:
            raise ValueError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        return Location(uri.rstrip("/"), s3_filesystem(s3_endpoint), root, s3_endpoint)
    if "://" in uri:
        raise ValueError(f"unsupported location {uri!r}: use a local folder or s3://bucket/prefix")
    path = os.path.abspath(os.path.expanduser(uri))
    if create:
        os.makedirs(path, exist_ok=True)
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"source folder {path} does not exist")
    return Location(path, pafs.LocalFileSystem(), path)


def _hidden(key: str) -> bool:
    # Ray's convention: components starting with '.' or '_' are metadata (our _manifests, temp files).
    # '.' and '..' are not hidden files: such keys get a row saying they are unsafe.
    return any(part.startswith((".", "_")) and part not in (".", "..") for part in key.split("/"))


@dataclass(frozen=True)
class ListedInput:
    key: str  # relative to the source location
    size: int
    etag: str  # S3 ETag, or the local file's mtime in ns: changes whenever the content is rewritten


def _iter_local(root: str) -> Iterator[ListedInput]:
    # os.walk streams folder by folder; sorting inside each folder keeps runs reproducible.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # deleted while we listed
                continue
            yield ListedInput(os.path.relpath(path, root).replace(os.sep, "/"), st.st_size, f"mtime:{st.st_mtime_ns}")


def boto3_client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint,
                        config=Config(retries={"max_attempts": 8, "mode": "standard"}))


def _iter_s3(loc: Location) -> Iterator[ListedInput]:
    bucket, _, prefix = loc.root.partition("/")
    prefix = prefix + "/" if prefix else ""
    pages = boto3_client(loc.s3_endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:  # 1,000 keys a page: the driver never holds the whole listing
        for obj in page.get("Contents", []):
            key = obj["Key"][len(prefix):]
            if key and not key.endswith("/"):
                yield ListedInput(key, int(obj["Size"]), obj["ETag"].strip('"'))


def list_inputs(loc: Location, exclude: Location | None = None) -> Iterator[ListedInput]:
    """Every file under the location, streamed, keys relative to it.

    `exclude` skips a destination nested inside the source, so a rerun never eats its own output.
    """
    skip_prefix = None
    if exclude is not None and exclude.uri != loc.uri and exclude.root.startswith(loc.root.rstrip("/") + "/"):
        skip_prefix = exclude.root[len(loc.root.rstrip("/")) + 1:] + "/"
    for item in (_iter_s3(loc) if loc.is_s3 else _iter_local(loc.root)):
        if _hidden(item.key) or (skip_prefix and item.key.startswith(skip_prefix)):
            continue
        yield item


def output_key(source_key: str, extension: str) -> str:
    """`photos/a/b.jpg` → `photos/a/b.png`. Refuses keys that could escape the destination."""
    parts = source_key.split("/")
    if source_key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe key {source_key!r}: empty, '.' or '..' path components are refused")
    stem, _ = posixpath.splitext(source_key)
    return stem + extension


def fetch_to_cache(uri: str, s3_endpoint: str | None = None) -> str:
    """A remote file (weights) copied once into the local weights cache, keyed by its URI: its local path.

    This layer owns storage; model/ reads local files only. Each node fetches its own copy once.
    """
    import hashlib
    import shutil

    from model.weights import weights_dir

    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or "://" not in parent:
        raise ValueError(f"{uri!r} names no file: use s3://bucket/path/to/weights.onnx")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = weights_dir() / "s3" / f"{digest}-{name}"
    if target.exists():
        return str(target)
    loc = open_location(parent, s3_endpoint)  # the one S3 set-up, with its retry policy
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")

    def copy() -> None:
        with loc.fs.open_input_stream(loc.path(name)) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)

    try:
        retry_transient(copy, f"fetching weights {uri}")
        os.replace(partial, target)  # a concurrent reader sees no file or the whole one
    finally:
        partial.unlink(missing_ok=True)
    return str(target)


def localize_weights(cfg, s3_endpoint: str | None = None):
    """`cfg` (a model.config.RuntimeConfig) with remote weights replaced by their local cached copy."""
    if not cfg.remote_weights:
        return cfg
    return cfg.replace(weights=fetch_to_cache(cfg.weights, s3_endpoint))
