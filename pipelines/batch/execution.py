"""Where a job's stages run: the executor (Ray Data, or this process), the inference pool's layout, and
the stall both executors stop on. No Ray import here: a local run never pays for it.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model.config import GPU_PROVIDERS, RuntimeConfig

if TYPE_CHECKING:
    from ray.data import ActorPoolStrategy

    from pipelines.batch.config import JobConfig

log = logging.getLogger(__name__)

EXECUTORS = ("auto", "ray", "local")


class JobStalled(RuntimeError):
    """No result arrived for `stall_timeout_s`: capacity is gone and did not come back."""


def until_stalled(results: queue.Queue, stall_timeout_s: float, status: Callable[[], str], cause: str) -> Iterator:
    """The items of `results` as they arrive; JobStalled when none arrives for `stall_timeout_s`.

    Both executors consume their results through this: a job never waits silently. Every fifth of
    the timeout without a result, a warning says so with `status()` (the cluster's capacity, or
    where this process stands); the error says `cause` and that a rerun finishes the rest.
    """
    last = time.monotonic()
    warn_every = max(stall_timeout_s / 5, 5.0)
    while True:
        try:
            item = results.get(timeout=min(warn_every, stall_timeout_s))
        except queue.Empty:
            idle = time.monotonic() - last
            if idle >= stall_timeout_s:
                raise JobStalled(f"no result for {idle:.0f} s ({status()}). {cause} Rows finished so far are in the "
                                 "manifest: run the same command again to finish the rest.") from None
            log.warning("no result for %.0f s (stall timeout %.0f s): %s", idle, stall_timeout_s, status())
            continue
        last = time.monotonic()
        yield item


def choose_executor(cfg: JobConfig, address: str | None = None) -> str:
    """"ray" or "local" for `cfg.executor`; `auto` runs in this process when nothing asks for Ray:
    no cluster named (`address`, RAY_ADDRESS: a job submitted to a Ray cluster always has it), no
    Ray instance already started in this process (a notebook's, a test's), and inference surely on
    CPU (a GPU takes the GPU path, which runs in Ray's actors). On one machine's CPUs a local Ray
    instance adds 9-15 s of start-up before the first cut-out (bench/RESULTS.md) and buys process
    isolation: a worker that dies is restarted and its task retried (docs/operations.md)."""
    if cfg.executor != "auto":
        return cfg.executor
    if address or os.environ.get("RAY_ADDRESS"):
        return "ray"
    ray = sys.modules.get("ray")  # never imported for this question: the import alone costs seconds
    if ray is not None and ray.is_initialized():
        return "ray"
    return "local" if runs_on_cpu(cfg.inference) else "ray"


def runs_on_cpu(rc: RuntimeConfig) -> bool:
    """Whether inference surely runs on CPU, decided without importing torch."""
    from model.runtimes.base import cuda_ruled_out

    if rc.device == "cpu":
        return True
    if rc.device == "cuda" or (rc.providers and any(p in GPU_PROVIDERS for p in rc.providers)):
        return False
    return cuda_ruled_out()


# Where a container's CPU quota lives: cgroup v2 ("QUOTA PERIOD" or "max PERIOD"), then v1 (µs each, -1: none).
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1_QUOTA = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_quota(cpu_max: str = CGROUP_CPU_MAX, v1: tuple[str, str] = CGROUP_V1_QUOTA) -> float | None:
    """CPUs a container's quota allows (e.g. 2.0 for `docker run --cpus 2`), None when there is none."""
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota, period = (int(Path(f).read_text()) for f in v1)
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity (taskset, cpuset), capped by a container's CPU quota,
    which the affinity does not show (a 2-CPU container on a 64-core host sees 64)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


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
        from ray.data import ActorPoolStrategy

        if self.gpus:
            # GPU nodes come and go (autoscaling, node loss): start one per GPU, keep at least one.
            return ActorPoolStrategy(min_size=1, max_size=self.size, initial_size=self.size)
        # A CPU pool is fixed: Ray's pool autoscaler never grew a CPU pool past one actor on a
        # 2-CPU node (bench/RESULTS.md), so --actors N would silently mean one.
        return ActorPoolStrategy(size=self.size)


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
    batches = cfg.batches(inputs, "ray")

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


@dataclass(frozen=True)
class LocalPlan:
    """How the in-process executor lays out one machine's CPUs (pipelines/batch/in_process.py)."""

    sessions: int  # inference sessions, each on its own thread
    threads: int  # intra-op threads per session
    workers: int  # threads that read, decode, post-process, encode and write


def plan_local(cfg: JobConfig, *, cpus: int, inputs: int | None = None) -> LocalPlan:
    """One single-threaded session per CPU (at most CPU_ACTORS_DEFAULT_MAX; `--actors` overrides), never
    more than the job has batches; the CPUs split evenly between the sessions' intra-op threads
    (`--threads` overrides). Nothing is reserved for Ray's tasks: there are none. The I/O and
    post-processing threads spend most of their time in code that releases the GIL (file and S3
    reads, OpenCV, zlib), so there are a few more of them than CPUs."""
    batches = cfg.batches(inputs, "local")
    sessions = cfg.actors or max(1, min(cpus, CPU_ACTORS_DEFAULT_MAX))
    if batches is not None:
        sessions = min(sessions, batches)
    threads = cfg.inference.threads or max(1, cpus // sessions)
    return LocalPlan(sessions, threads, workers=max(2, min(2 * cpus, 16)))
