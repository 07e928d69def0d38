"""Sources and sinks: local folders and S3 prefixes behind one pyarrow filesystem interface.

Every write is atomic: a local file is written beside its target and renamed over it; an S3
object only becomes visible when its upload completes. A reader never sees half a file.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Iterator

from pyarrow import fs as pafs


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

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key) if self.root else key

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def read(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.path(key)) as f:
            return f.read()

    def write_atomic(self, key: str, data: bytes) -> None:
        path = self.path(key)
        parent = posixpath.dirname(path)
        if self.is_s3:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        if parent:
            self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.partial")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File


def open_location(uri: str, s3_endpoint: str | None = None, create: bool = False) -> Location:
    if uri.startswith("s3://"):
        root = uri[len("s3://"):].strip("/")
        if not root:
            raise ValueError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        return Location(uri.rstrip("/"), s3_filesystem(s3_endpoint), root)
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
    return any(part.startswith((".", "_")) for part in key.split("/"))


def list_inputs(loc: Location, exclude: Location | None = None) -> Iterator[tuple[str, int]]:
    """(key, size) of every file under the location, keys relative to it, sorted.

    `exclude` skips a destination nested inside the source, so a rerun never eats its own output.
    """
    skip_prefix = None
    if exclude is not None and exclude.uri != loc.uri and exclude.root.startswith(loc.root.rstrip("/") + "/"):
        skip_prefix = exclude.root[len(loc.root.rstrip("/")) + 1:] + "/"
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.root, recursive=True))
    prefix_len = len(loc.root.rstrip("/")) + 1 if loc.root else 0
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        key = info.path[prefix_len:]
        if _hidden(key) or (skip_prefix and key.startswith(skip_prefix)):
            continue
        yield key, int(info.size or 0)


def output_key(source_key: str, extension: str) -> str:
    """`photos/a/b.jpg` → `photos/a/b.png`. Refuses keys that could escape the destination."""
    parts = source_key.split("/")
    if source_key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe key {source_key!r}: empty, '.' or '..' path components are refused")
    stem, _ = posixpath.splitext(source_key)
    return stem + extension
