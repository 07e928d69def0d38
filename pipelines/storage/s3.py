"""S3 and S3-compatible stores (MinIO, Ceph, R2, …): s3://bucket/prefix.

The one S3 set-up: region, endpoint and retry policy are decided in S3Settings and given to both
clients this backend uses, pyarrow's (reads, writes, Ray Data, Parquet) and boto3's (listing, which
it streams a page at a time where pyarrow returns the whole listing at once). Every other layer
reaches S3 through a Location, never through a client of its own.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from pyarrow import fs as pafs

from pipelines.storage.base import ListedInput, Location, listed

log = logging.getLogger(__name__)
T = TypeVar("T")

S3_KEY_MAX = 1024  # bytes
# Attempts per request inside either SDK, for transient 5xx and throttling (standard mode: jittered backoff).
SDK_ATTEMPTS = 8
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


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and how hard to retry: the standard AWS environment variables, optionally an
    S3-compatible endpoint (--s3-endpoint http://127.0.0.1:9000)."""

    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint and "://" not in self.endpoint:
            raise ValueError(f"--s3-endpoint must be a URL such as http://127.0.0.1:9000, got {self.endpoint!r}")

    @property
    def region(self) -> str:
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    def arrow(self) -> pafs.S3FileSystem:
        kwargs: dict = {"region": self.region,
                        # Transient 5xx and throttling: retry with backoff instead of failing the row.
                        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=SDK_ATTEMPTS)}
        if self.endpoint:
            scheme, _, host = self.endpoint.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        return pafs.S3FileSystem(**kwargs)

    def boto3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            config=Config(retries={"max_attempts": SDK_ATTEMPTS, "mode": "standard"}))


def s3_filesystem(endpoint: str | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem with our settings (S3Settings.arrow)."""
    return S3Settings(endpoint).arrow()


def boto3_client(endpoint: str | None):
    """boto3's S3 client with our settings (S3Settings.boto3)."""
    return S3Settings(endpoint).boto3()


@dataclass(frozen=True)
class S3Location(Location):
    scheme = "s3"

    @classmethod
    def open(cls, uri: str, create: bool = False, s3_endpoint: str | None = None, **options) -> S3Location:
        root = uri[len("s3://"):].strip("/")
        if not root:
            raise ValueError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        return cls(uri.rstrip("/"), s3_filesystem(s3_endpoint), root,
                   tuple(sorted({**options, "s3_endpoint": s3_endpoint}.items())))

    def retrying(self, op: Callable[[], T], what: str) -> T:
        return retry_transient(op, what)

    def key_problem(self, key: str) -> str:
        return "" if len(self.path(key).encode()) <= S3_KEY_MAX else "output_name_too_long"

    def list_inputs(self) -> Iterator[ListedInput]:
        bucket, _, prefix = self.root.partition("/")
        prefix = prefix + "/" if prefix else ""
        pages = boto3_client(self.s3_endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:  # 1,000 keys a page: the driver never holds the whole listing
            for obj in page.get("Contents", []):
                # Folder markers ("a/") are not inputs; _manifests/ at the top is ours.
                item = listed(obj["Key"][len(prefix):], int(obj["Size"]), obj["ETag"].strip('"'))
                if item is not None:
                    yield item
