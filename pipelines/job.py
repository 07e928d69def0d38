"""The batch job: list → read → decode → infer (actor pool) → post-process and write, plus a manifest.

`build_dataset` builds the lazy Ray Data chain; `run_job` does the I/O around it: listing,
consuming the results and writing the manifest in the driver.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import ray
from ray.data import ActorPoolStrategy

from model.specs import get_spec
from pipelines.manifest import ManifestWriter, new_run_id
from pipelines.stages import Predictor, decode_input, read_input, render_output
from pipelines.storage import Location, list_inputs, open_location
from postproc import PostprocParams
from postproc.decode import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)


@dataclass
class JobConfig:
    source: str
    dest: str
    model: str = "u2netp"
    runtime: str = "auto"
    device: str = "auto"
    weights: str | None = None
    providers: str | None = None  # ONNX Runtime providers, e.g. "tensorrt,cuda"; each must start
    trt_cache_dir: str | None = None  # where TensorRT keeps built engines (on each inference node)
    batch_size: int = 8
    actors: int | None = None  # inference actors; default: one per GPU, else one
    actor_cpus: float = 1.0  # CPUs each inference actor reserves
    threads: int | None = None  # intra-op threads per CPU actor (default: the runtime's)
    decode_cpus: float = 0.5  # CPUs each read/decode task reserves
    s3_endpoint: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    params: PostprocParams = field(default_factory=PostprocParams)
    run_id: str | None = None
    manifest_flush_rows: int = 1000

    def __post_init__(self) -> None:
        get_spec(self.model)  # unknown names fail here, with the valid list
        from model.runtime import parse_providers

        parse_providers(self.providers)  # unknown provider names fail here, before Ray starts
        if self.providers and self.runtime == "torch":
            raise ValueError("--providers selects ONNX Runtime providers; use --runtime onnxruntime or auto")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be at least 1, got {self.actors}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.runtime not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"runtime must be auto, torch or onnxruntime, got {self.runtime!r}")
        if not 0 < self.decode_cpus <= 64 or self.decode_cpus == self.actor_cpus:
            raise ValueError("decode_cpus must be in (0, 64] and differ from actor_cpus (equal shares fuse "
                             "decoding into the inference actor)")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be positive")


@dataclass
class JobResult:
    run_id: str
    manifest_uri: str
    images: int
    ok: int
    errors: int
    seconds: float
    errors_by_reason: dict

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"done: {self.images} images, {self.ok} ok, {self.errors} errors in {self.seconds:.1f} s, "
                f"{self.images_per_second:.2f} images/s; manifest {self.manifest_uri}")


def inference_resources(cfg: JobConfig) -> tuple[int, float]:
    """(pool size, GPUs per actor): one actor per GPU where the cluster has GPUs."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if cfg.device == "cuda" and gpus == 0:
        raise RuntimeError("--device cuda was asked for but the Ray cluster has no GPU resources; "
                           "use --device auto to run on CPU")
    if gpus and cfg.device != "cpu":
        return cfg.actors or gpus, 1.0
    return cfg.actors or 1, 0.0


def build_dataset(cfg: JobConfig, source: Location, dest: Location, items: list[dict]) -> ray.data.Dataset:
    spec = get_spec(cfg.model)
    pool, gpus = inference_resources(cfg)
    blocks = max(1, math.ceil(len(items) / cfg.batch_size))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    # Reading and decoding ask for a different CPU share than the actors on purpose: Ray fuses
    # maps with identical resources into the actor, which would serialise decoding with inference.
    ds = ds.map(read_input, fn_kwargs={"source": source}, num_cpus=cfg.decode_cpus)
    ds = ds.map(decode_input, fn_kwargs={"input_size": spec.preprocess.input_size, "max_pixels": cfg.max_pixels},
                num_cpus=cfg.decode_cpus)
    ds = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"model": cfg.model, "runtime": cfg.runtime, "device": cfg.device,
                               "weights": cfg.weights, "s3_endpoint": cfg.s3_endpoint, "threads": cfg.threads,
                               "providers": cfg.providers, "trt_cache_dir": cfg.trt_cache_dir},
        compute=ActorPoolStrategy(min_size=1, max_size=pool),
        batch_size=cfg.batch_size,
        batch_format="numpy",
        num_gpus=gpus,
        num_cpus=cfg.actor_cpus,
    )
    return ds.map(render_output, fn_kwargs={"dest": dest, "params": cfg.params, "model_name": spec.name,
                                            "model_version": spec.version})


def check_weights(cfg: JobConfig) -> None:
    """Missing weights fail now, in the driver, not in every actor after the job started."""
    from model import weights

    if cfg.weights is None or not str(cfg.weights).startswith("s3://"):
        weights.resolve(get_spec(cfg.model), cfg.weights)


def run_job(cfg: JobConfig) -> JobResult:
    """Run on the Ray instance already initialised by the caller."""
    check_weights(cfg)
    source = open_location(cfg.source, cfg.s3_endpoint)
    dest = open_location(cfg.dest, cfg.s3_endpoint, create=True)
    run_id = cfg.run_id or new_run_id()
    t0 = time.perf_counter()
    items = [{"key": k, "size": s} for k, s in list_inputs(source, exclude=dest)]
    writer = ManifestWriter(dest, run_id, flush_rows=cfg.manifest_flush_rows)
    if items:
        for batch in build_dataset(cfg, source, dest, items).iter_batches(batch_format="pyarrow", batch_size=None):
            writer.add(batch)
    writer.flush()
    seconds = time.perf_counter() - t0
    if writer.rows != len(items):  # the invariant every other guarantee rests on
        raise RuntimeError(f"manifest has {writer.rows} rows for {len(items)} inputs")
    return JobResult(run_id, dest.uri_of(writer.prefix), len(items), writer.status.get("ok", 0),
                     writer.status.get("error", 0), seconds, dict(writer.reasons))


def init_ray(address: str | None = None, **kwargs) -> None:
    """Connect to `address` / RAY_ADDRESS, else start a local instance in this process."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if not ray.is_initialized():
        ray.init(address=address, **kwargs)
