"""Job metrics through Ray's metrics API: the Ray dashboard and Prometheus show them while a job runs.

Exported from the worker that finishes each row: images done by status, errors by reason, and
seconds per stage as histograms. Outside Ray (stages called as plain functions) they are no-ops.
"""

from __future__ import annotations

import functools
import sys

STAGES = ("read", "decode", "infer", "postprocess", "encode", "write")
# Seconds: from a cached 7 ms JPEG decode to a multi-second CPU inference of a batch.
BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


@functools.lru_cache(maxsize=1)
def _instruments():
    from ray.util import metrics

    return (
        metrics.Counter("matting_images_total", "Inputs finished by the batch job", tag_keys=("status",)),
        metrics.Counter("matting_errors_total", "Inputs that failed, by reason", tag_keys=("reason",)),
        metrics.Histogram("matting_stage_seconds", "Seconds per image in each stage", boundaries=BOUNDARIES,
                          tag_keys=("stage",)),
    )


def record_row(row: dict) -> None:
    ray = sys.modules.get("ray")  # a run in this process (pipelines/batch/in_process.py) never imports Ray
    if ray is None or not ray.is_initialized():
        return
    images, errors, stage_seconds = _instruments()
    images.inc(1, tags={"status": row["status"]})
    if row["status"] == "error":
        errors.inc(1, tags={"reason": row["error_reason"] or "unknown"})
    if row["status"] == "ok" and not row.get("reused"):
        for stage in STAGES:
            stage_seconds.observe(row[f"t_{stage}"], tags={"stage": stage})
