"""The batch job's driver: plan what to process, hand it to an executor, write the manifest.

`run_job` does the I/O around the stages: planning (listing or an input manifest, the incremental
filter, resuming), then one executor runs read → decode → infer → post-process and write for every
planned input and hands each result row back for the manifest the driver writes:
- pipelines/batch/on_ray.py: a lazy Ray Data chain on a Ray cluster (or a local Ray instance);
- pipelines/batch/in_process.py: the same stages in this process's threads, for a CPU-only run
  that names no cluster: no Ray start, no worker processes (bench/startup.py).
Which one runs is `JobConfig.executor` (pipelines/batch/execution.py: choose_executor). This module
imports no Ray: a local run never pays for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipelines.batch.config import JobConfig
from pipelines.batch.execution import JobStalled, choose_executor
from pipelines.manifest import ManifestWriter, new_run_id
from pipelines.batch.planning import Plan, plan_inputs
from pipelines.batch.state import job_file, success_file, unfinished_run
from pipelines.storage import open_location

__all__ = ["JobConfig", "JobResult", "JobStalled", "run_job"]

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_id: str
    manifest_uri: str
    listed: int  # inputs found in SOURCE (or in the input manifest)
    skipped: int  # done before, with the same input, model and parameters
    images: int  # inputs this run processed
    ok: int
    errors: int
    pruned: int
    inferred: int  # rows that went through the model in this run
    seconds: float
    errors_by_reason: dict  # every reason, of errors and of skips (hidden files)
    resumed: bool = False
    skipped_by_rule: int = 0  # rows with status "skipped": hidden files, listed but not inputs
    executor: str = ""  # which executor ran the stages: "ray" or "local" (pipelines/batch/execution.py)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        extra = f", {self.skipped_by_rule} hidden skipped" if self.skipped_by_rule else ""
        extra += f", {self.skipped} unchanged skipped" if self.skipped else ""
        extra += f", {self.pruned} pruned" if self.pruned else ""
        extra += " (resumed)" if self.resumed else ""
        return (f"done: {self.images} images, {self.ok} ok, {self.errors} errors{extra} in {self.seconds:.1f} s, "
                f"{self.images_per_second:.2f} images/s; manifest {self.manifest_uri}")


def check_weights(cfg: JobConfig) -> None:
    """Missing weights fail now, in the driver, not in every actor after the job started."""
    from model import weights

    rc = cfg.inference
    if not rc.remote_weights:  # remote weights: each actor fetches them (pipelines.storage.localize_weights)
        weights.resolve(rc.spec, rc.weights)


def run_job(cfg: JobConfig, connect: Callable[[], None] | None = None, address: str | None = None) -> JobResult:
    """Run the job with the executor `cfg.executor` names, `auto` deciding by `address` (choose_executor).

    On Ray: the instance already initialised by the caller, or the one `connect` starts (e.g.
    on_ray.init_ray). `connect` runs on this thread (ray.init must: it installs signal handlers)
    while the inputs are listed and planned on another: neither needs the other, and on a small
    local job both take seconds (bench/startup.py). The job's seconds count from when Ray is ready.
    In this process (`local`), `connect` is not called.
    """
    check_weights(cfg)
    executor = choose_executor(cfg, address)
    log.info("executor: %s", executor)
    source = open_location(cfg.source, cfg.s3_endpoint)
    dest = open_location(cfg.dest, cfg.s3_endpoint, create=True)
    fingerprint = cfg.fingerprint()

    def prepare() -> tuple[str | None, str, ManifestWriter, Plan]:
        resumed_run = unfinished_run(dest, fingerprint)
        run_id = resumed_run or new_run_id(cfg.run_name)
        if resumed_run:
            log.warning("resuming unfinished run %s: inputs it already finished are skipped", run_id)
        else:
            dest.write_atomic(job_file(run_id), fingerprint.to_json().encode())
        writer = ManifestWriter(dest, run_id, flush_rows=cfg.manifest_flush_rows)
        return resumed_run, run_id, writer, plan_inputs(cfg, source, dest, run_id, resumed_run, writer)

    if connect is None or executor == "local":
        t0 = time.perf_counter()
        resumed_run, run_id, writer, plan = prepare()
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="matting-plan") as pool:
            planned = pool.submit(prepare)
            connect()
            t0 = time.perf_counter()
            resumed_run, run_id, writer, plan = planned.result()
    if plan.candidates:
        log.info("%d inputs listed, %d to process, %d unchanged", plan.listed, plan.candidates, plan.skipped)
        if executor == "local":
            from pipelines.batch.in_process import execute
        else:
            from pipelines.batch.on_ray import execute
        try:
            execute(cfg, source, dest, plan, writer)
        finally:  # stalled or failed: keep every finished row, so a rerun does only the rest
            writer.flush()
    writer.flush()
    processed = writer.rows - plan.pruned
    if processed != plan.candidates:  # the invariant every other guarantee rests on
        raise RuntimeError(f"manifest has {processed} rows for {plan.candidates} inputs")
    plan.cleanup()
    seconds = time.perf_counter() - t0
    result = JobResult(run_id, dest.uri_of(writer.prefix), plan.listed, plan.skipped, processed,
                       writer.status.get("ok", 0), writer.status.get("error", 0), plan.pruned, writer.inferred, seconds,
                       dict(writer.reasons), resumed=bool(resumed_run),
                       skipped_by_rule=writer.status.get("skipped", 0), executor=executor)
    dest.write_atomic(success_file(run_id), result.summary().encode())
    return result
