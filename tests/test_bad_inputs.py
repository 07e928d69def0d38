"""Every kind of bad input gets exactly one manifest row (a correct output or a clear reason),
the job never crashes, and nothing lands outside DEST. Run on S3, where keys may hold `..`."""

from __future__ import annotations

import boto3
import cv2
import numpy as np
import pytest

from badinputs import MAX_BYTES, MAX_PIXELS, generate
from pipelines.batch.job import JobConfig, run_job
from pipelines.manifest import read_run
from pipelines.storage import open_location

pytestmark = pytest.mark.timeout(600)


def test_corpus_has_at_least_twenty_kinds():
    corpus = generate()
    assert len(corpus) >= 20
    assert {"ok", "empty", "corrupt", "unsupported_format", "too_many_pixels", "too_large",
            "unsafe_key", "hidden"} <= {outcome for _, outcome in corpus.values()}


def test_every_bad_input_gets_one_row_and_nothing_escapes_dest(s3_server, ray_s3):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="bad")
    corpus = generate()
    for key, (data, _) in corpus.items():
        s3.put_object(Bucket="bad", Key=f"in/{key}", Body=data)
    s3.put_object(Bucket="bad", Key="in/_manifests/run/part-00000.parquet", Body=b"PAR1")  # ours: never listed

    result = run_job(JobConfig(source="s3://bad/in", dest="s3://bad/out", s3_endpoint=s3_server, batch_size=4,
                               max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS))
    rows = read_run(open_location("s3://bad/out", s3_server), result.run_id).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(corpus)
    for row in rows:
        expected = corpus[row["source_key"]][1]
        got = "ok" if row["status"] == "ok" else row["error_reason"]
        assert got == expected, (row["source_key"], row["error"])
        if expected != "ok":
            assert row["error"] and not row["output_key"]
    for row in (r for r in rows if r["status"] == "ok"):
        body = s3.get_object(Bucket="bad", Key=f"out/{row['output_key']}")["Body"].read()
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (row["height"], row["width"]) and img.shape[2] == 4
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bad")["Contents"]]
    outside = [k for k in keys if not k.startswith(("in/", "out/"))]
    assert outside == [] and not any(".." in k.split("/") for k in keys if k.startswith("out/"))
    by_key = {r["source_key"]: r for r in rows}
    assert (by_key["shop/item.jpg"]["output_key"], by_key["shop/item.webp"]["output_key"]) == (
        "shop/item.jpg.png", "shop/item.webp.png")
    assert by_key["_DSC0001.JPG"]["output_key"] == "_DSC0001.png" and by_key[".DS_Store"]["status"] == "skipped"
    assert (by_key["exif-rotated.jpg"]["width"], by_key["exif-rotated.jpg"]["height"]) == (
        by_key["photo.bmp"]["height"], by_key["photo.bmp"]["width"])  # orientation applied
