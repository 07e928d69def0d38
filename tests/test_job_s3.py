"""The batch job against a real S3 server (moto's server mode on a loopback port)."""

from __future__ import annotations

import boto3
import pytest

from catalog import catalog, check_outputs
from pipelines.batch.job import JobConfig, run_job
from pipelines.manifest import read_manifest
from pipelines.storage import open_location

pytestmark = pytest.mark.timeout(600)


def test_s3_catalog_gives_one_row_per_input_and_valid_cutouts(s3_server, ray_s3):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="catalog")
    files = catalog(30)
    for key, data in files.items():
        s3.put_object(Bucket="catalog", Key=f"in/{key}", Body=data)

    result = run_job(JobConfig(source="s3://catalog/in", dest="s3://catalog/out", s3_endpoint=s3_server,
                               batch_size=4))

    assert (result.images, result.ok, result.errors) == (len(files), 30, 3)
    assert result.manifest_uri.startswith("s3://catalog/out/_manifests/")
    rows = read_manifest(open_location("s3://catalog/out", s3_server), result.run_id).to_pylist()
    check_outputs(files, rows, lambda key: s3.get_object(Bucket="catalog", Key=f"out/{key}")["Body"].read())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="catalog", Prefix="out/")["Contents"]]
    outputs = [k for k in listed if "/_manifests/" not in k]
    assert len(outputs) == 30  # cut-outs only for the good inputs, nothing half-written beside them


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_transient_s3_failures_are_retried(s3_server, ray_s3, executor):
    """Every third request to S3 fails with 503 SlowDown: listing, reads and writes all retry, on Ray's
    workers and on this process's threads (which share one S3 client)."""
    from faulty_proxy import FaultyProxy

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="flaky")
    files = {k: v for k, v in catalog(6).items() if k.startswith("photos/")}
    for key, data in files.items():
        s3.put_object(Bucket="flaky", Key=f"in/{key}", Body=data)
    with FaultyProxy(s3_server, every=3) as proxy:
        result = run_job(JobConfig(source="s3://flaky/in", dest=f"s3://flaky/out-{executor}", s3_endpoint=proxy.url,
                                   batch_size=3, executor=executor))
    assert result.executor == executor
    assert proxy.injected >= 5, proxy.injected
    rows = read_manifest(open_location(f"s3://flaky/out-{executor}", s3_server), result.run_id).to_pylist()
    failed = [(r["source_key"], r["error_reason"], r["error"]) for r in rows if r["status"] != "ok"]
    assert (result.images, result.ok, result.errors) == (6, 6, 0), failed
    check_outputs(files, rows,
                  lambda key: s3.get_object(Bucket="flaky", Key=f"out-{executor}/{key}")["Body"].read())
