"""The job on Ray Data: one lazy read → map → map_batches → map chain over a cluster (or a local Ray
instance), its results consumed under a stall watchdog.

`execute` is what pipelines.batch.job.run_job calls for `--executor ray`; pipelines/batch/in_process.py
is the same stages without Ray.
"""

from __future__ import annotations

import logging
import os
import queue
import threading

import ray

from pipelines.batch.config import JobConfig
from pipelines.batch.execution import PoolPlan, actor_config, plan_pool, until_stalled
from pipelines.batch.gpu_path import GpuPredictor, decode_or_defer, use_gpu_path
from pipelines.batch.planning import Plan
from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
from pipelines.logs import quiet_token_auth_notice
from pipelines.manifest import ManifestWriter
from pipelines.storage import Location, retry_transient

log = logging.getLogger(__name__)


def inference_resources(cfg: JobConfig, inputs: int | None = None) -> PoolPlan:
    """The pool for the cluster `ray` is connected to (see plan_pool)."""
    resources = ray.cluster_resources()
    return plan_pool(cfg, cpus=float(resources.get("CPU", 0)), gpus=int(resources.get("GPU", 0)), inputs=inputs)


def read_planned_chunk(row: dict, *, fs) -> list[dict]:
    """One Parquet chunk of planned inputs (pipelines.batch.planning) → its rows."""
    import pyarrow.parquet as pq

    table = retry_transient(lambda: pq.read_table(row["chunk"], filesystem=fs), f"reading {row['chunk']}")
    return table.to_pylist()


def build_dataset(cfg: JobConfig, source: Location, dest: Location, plan: Plan) -> ray.data.Dataset:
    spec = cfg.inference.spec
    pool = inference_resources(cfg, plan.candidates)
    # The planned chunks' paths, not read_parquet: its file-listing task costs a fresh worker and
    # seconds at start-up, and asks for a whole CPU whatever the read is given.
    ds = ray.data.from_items([{"chunk": path} for path in plan.input_files])
    ds = ds.flat_map(read_planned_chunk, fn_kwargs={"fs": dest.fs}, num_cpus=cfg.decode_cpus)
    # Small blocks keep every stage busy: a planned chunk holds thousands of keys.
    ds = ds.repartition(target_num_rows_per_block=cfg.batch_size_for("ray"))
    # Reading and decoding ask for a different CPU share than the actors on purpose: Ray fuses
    # maps with identical resources into the actor, which would serialise decoding with inference.
    ds = ds.map(read_input, fn_kwargs={"source": source, "max_bytes": cfg.max_bytes, "dest": dest,
                                       "naming": plan.naming},
                num_cpus=cfg.decode_cpus)
    # The GPU path defers baseline JPEGs to the actor's nvJPEG and post-processes them there.
    gpu = use_gpu_path(cfg.gpu_path, pool.gpus, cfg.params)
    gpu_kwargs = {"params": cfg.params, "max_pixels": cfg.max_pixels, "background": cfg.background} if gpu else {}
    ds = ds.map(decode_or_defer if gpu else decode_input,
                fn_kwargs={"preprocess": spec.preprocess, "max_pixels": cfg.max_pixels},
                num_cpus=cfg.decode_cpus)
    ds = ds.map_batches(
        GpuPredictor if gpu else Predictor,
        fn_constructor_kwargs={"config": actor_config(cfg, pool), "s3_endpoint": cfg.s3_endpoint, **gpu_kwargs},
        compute=pool.strategy(),
        batch_size=cfg.batch_size_for("ray"),
        batch_format="numpy",
        num_gpus=pool.gpus,
        num_cpus=pool.cpus,
    )
    # Rendering (post-processing, encoding, writing) takes the decode tasks' share, not a whole CPU.
    return ds.map(render_output, fn_kwargs={"dest": dest, "params": cfg.params, "model_name": spec.name,
                                            "model_version": cfg.model_version, "background": cfg.background,
                                            "upsample": spec.preprocess.upsample},
                  num_cpus=cfg.decode_cpus)


def capacity_report() -> str:
    total, free = ray.cluster_resources(), ray.available_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return (f"{nodes} live nodes; GPU {free.get('GPU', 0):g} free of {total.get('GPU', 0):g}, "
            f"CPU {free.get('CPU', 0):g} free of {total.get('CPU', 0):g}")


def consume(ds: ray.data.Dataset, writer: ManifestWriter, stall_timeout_s: float) -> None:
    """Stream result rows into the manifest; stop with JobStalled when nothing arrives for too long.

    With default settings Ray Data waits forever for an actor whose node is gone. The results
    are pumped from a daemon thread so the driver can notice, say so, and stop.
    """
    results: queue.Queue = queue.Queue(maxsize=8)

    def pump() -> None:
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                results.put(("rows", batch))
            results.put(("done", None))
        except BaseException as e:  # handed to the driver thread, which re-raises it
            results.put(("error", e))

    threading.Thread(target=pump, name="matting-results", daemon=True).start()
    cause = "The inference actors have no node to run on and capacity did not return."
    for kind, value in until_stalled(results, stall_timeout_s, capacity_report, cause):
        if kind == "error":
            raise value
        if kind == "done":
            return
        writer.add(value)


def init_ray(address: str | None = None, **kwargs) -> None:
    """Connect to `address` / RAY_ADDRESS, else start a local instance in this process.

    A local instance starts without the dashboard: its nine head modules are each a process that
    a 2-core machine starts for seconds before the job's first output, and that nobody reads
    during a local run (bench/startup.py). A cluster keeps whatever its operator started.
    `kwargs` (e.g. include_dashboard=True) override these choices.
    """
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if not ray.is_initialized():
        if address == "local":
            kwargs.setdefault("include_dashboard", False)
            quiet_token_auth_notice()
        ray.init(address=address, **kwargs)


def execute(cfg: JobConfig, source: Location, dest: Location, plan: Plan, writer: ManifestWriter) -> None:
    """Every planned input through the Ray Data chain, each result row into `writer`."""
    consume(build_dataset(cfg, source, dest, plan), writer, cfg.stall_timeout_s)
