"""The batch job: list → read → decode → infer (actor pool) → post-process and write, plus a manifest.

`build_dataset` builds the lazy Ray Data chain; `run_job` does the I/O around it: planning what to
process (listing or an input manifest, the incremental filter, resuming), consuming the results
under a stall watchdog and writing the manifest in the driver.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ray
from ray.data import ActorPoolStrategy

from model.config import GPU_PROVIDERS, RuntimeConfig
from pipelines.logs import quiet_token_auth_notice
from pipelines.batch.config import JobConfig
from pipelines.batch.gpu_path import GpuPredictor, decode_or_defer, use_gpu_path
from pipelines.manifest import ManifestWriter, new_run_id
from pipelines.batch.planning import Plan, plan_inputs
from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
from pipelines.batch.state import job_file, success_file, unfinished_run
from pipelines.storage import Location, open_location, retry_transient

log = logging.getLogger(__name__)


class JobStalled(RuntimeError):
    """No result arrived for `stall_timeout_s`: capacity is gone and did not come back."""


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


TASK_CPUS = 1.0  # what Ray Data's own tasks (repartition) reserve: always left free
# Default CPU pool: one single-threaded actor per CPU, at most this many; each holds ~2.8 GB at batch 8
# (ONNX Runtime's arena). On 2 CPUs, two 1-thread actors beat one actor with 2 threads (bench/RESULTS.md).
CPU_ACTORS_DEFAULT_MAX = 4


@dataclass(frozen=True)
class PoolPlan:
    """How the inference pool is laid out: what `map_batches` is given."""

    size: int
    gpus: float  # per actor
    cpus: float  # per actor
    threads: int | None  # intra-op threads per CPU actor (None: the runtime's default, on GPUs)

    def strategy(self) -> ActorPoolStrategy:
        if self.gpus:
            # GPU nodes come and go (autoscaling, node loss): start one per GPU, keep at least one.
            return ActorPoolStrategy(min_size=1, max_size=self.size, initial_size=self.size)
        # A CPU pool is fixed: Ray's pool autoscaler never grew a CPU pool past one actor on a
        # 2-CPU node (bench/RESULTS.md), so --actors N would silently mean one.
        return ActorPoolStrategy(size=self.size)


def inference_resources(cfg: JobConfig, inputs: int | None = None) -> PoolPlan:
    """The pool for the cluster `ray` is connected to (see plan_pool)."""
    resources = ray.cluster_resources()
    return plan_pool(cfg, cpus=float(resources.get("CPU", 0)), gpus=int(resources.get("GPU", 0)), inputs=inputs)


def plan_pool(cfg: JobConfig, *, cpus: float, gpus: int, inputs: int | None = None) -> PoolPlan:
    """One actor per GPU where the cluster has GPUs; else `actors` CPU actors (default one per CPU, at most 4).

    Never more actors than the job has batches of `inputs` (when known): each batch goes to one
    actor, so a 5-image job at batch 8 starts one actor, not a pool that would load the model for
    nothing (and that Ray Data warns about).

    CPU actors share the CPUs with the read/decode and render tasks: by default together they
    reserve all but one CPU (at most 1 CPU each; none on a 1-CPU cluster), since Ray Data's own
    tasks (repartition) ask for a whole CPU and a pool that leaves less never starts them (a
    silent hang, seen with two actors on 2 CPUs). Each runs as many intra-op threads as CPUs it
    reserves, at least one, so that actors do not oversubscribe the cores they share; the OS, not
    Ray's accounting, then shares the cores.
    """
    actor_cpus = cfg.actor_cpus if cfg.actor_cpus is not None else 1.0
    device, threads = cfg.inference.device, cfg.inference.threads
    batches = max(1, -(-inputs // cfg.batch_size)) if inputs is not None else None

    def capped(size: int) -> int:
        return min(size, batches) if batches is not None else size

    if device == "cuda" and gpus == 0:
        if cfg.actors:  # an autoscaling GPU group may start from zero: wait, bounded by the stall timeout
            log.warning("no GPU in the cluster yet: %d GPU actors wait for the autoscaler (stall timeout %.0f s)",
                        cfg.actors, cfg.stall_timeout_s)
            return PoolPlan(capped(cfg.actors), 1.0, actor_cpus, threads)
        raise RuntimeError("--device cuda was asked for but the Ray cluster has no GPU resources; use --device "
                           "auto to run on CPU, or --actors N to wait for an autoscaler to add GPU nodes")
    if gpus and device != "cpu":
        return PoolPlan(capped(cfg.actors or gpus), 1.0, actor_cpus, threads)
    full = cfg.actors or max(1, min(int(cpus), CPU_ACTORS_DEFAULT_MAX))
    size = capped(full)
    if cfg.actor_cpus is None:
        share = round(min(1.0, max(cpus - TASK_CPUS, 0.0) / size), 2)
        # Equal shares would fuse decoding into the actor (see JobConfig), hence the nudge.
        actor_cpus = share - 0.01 if share == cfg.decode_cpus else share
    elif size * actor_cpus > cpus - TASK_CPUS:
        log.warning("%d CPU actors × %.2f CPUs leave less than one CPU free in this cluster's %g CPUs: Ray Data's "
                    "repartition tasks ask for a whole CPU, so the job waits for a node with room (an "
                    "autoscaler) or stalls. Lower --actors or --actor-cpus.", size, actor_cpus, cpus)
    if not threads:
        threads = max(1, round(actor_cpus))
        if size < full:  # a pool cut to the job's batches keeps the full pool's threads: no core idles
            full_share = cfg.actor_cpus if cfg.actor_cpus is not None else min(1.0, max(cpus - TASK_CPUS, 0.0) / full)
            threads = max(threads, max(1, round(full_share)) * full // size)
    return PoolPlan(size, 0.0, actor_cpus, threads)


def actor_config(cfg: JobConfig, pool: PoolPlan) -> RuntimeConfig:
    """The RuntimeConfig each inference actor gets: the job's, with the pool's threads, and device cpu
    for a CPU pool (its actors then skip torch's import and CUDA probe: seconds at start-up)."""
    rc = cfg.inference.replace(threads=pool.threads)
    gpu_providers = rc.providers is not None and any(p in GPU_PROVIDERS for p in rc.providers)
    if not pool.gpus and rc.device == "auto" and not gpu_providers:
        rc = rc.replace(device="cpu")
    return rc


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
    ds = ds.repartition(target_num_rows_per_block=cfg.batch_size)
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
        batch_size=cfg.batch_size,
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
    last = time.monotonic()
    warn_every = max(stall_timeout_s / 5, 5.0)
    while True:
        try:
            kind, value = results.get(timeout=min(warn_every, stall_timeout_s))
        except queue.Empty:
            idle = time.monotonic() - last
            if idle >= stall_timeout_s:
                raise JobStalled(f"no result for {idle:.0f} s ({capacity_report()}). The inference actors "
                                 "have no node to run on and capacity did not return. Rows finished so far "
                                 "are in the manifest: run the same command again to finish the rest.") from None
            log.warning("no result for %.0f s (stall timeout %.0f s): %s", idle, stall_timeout_s, capacity_report())
            continue
        if kind == "error":
            raise value
        if kind == "done":
            return
        writer.add(value)
        last = time.monotonic()


def check_weights(cfg: JobConfig) -> None:
    """Missing weights fail now, in the driver, not in every actor after the job started."""
    from model import weights

    rc = cfg.inference
    if not rc.remote_weights:  # remote weights: each actor fetches them (pipelines.storage.localize_weights)
        weights.resolve(rc.spec, rc.weights)


def run_job(cfg: JobConfig, connect: Callable[[], None] | None = None) -> JobResult:
    """Run on the Ray instance already initialised by the caller, or the one `connect` starts.

    `connect` (e.g. init_ray) runs on this thread (ray.init must: it installs signal handlers)
    while the inputs are listed and planned on another: neither needs the other, and on a small
    local job both take seconds (bench/startup.py). The job's seconds count from when Ray is ready.
    """
    check_weights(cfg)
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

    if connect is None:
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
        try:
            consume(build_dataset(cfg, source, dest, plan), writer, cfg.stall_timeout_s)
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
                       skipped_by_rule=writer.status.get("skipped", 0))
    dest.write_atomic(success_file(run_id), result.summary().encode())
    return result


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
