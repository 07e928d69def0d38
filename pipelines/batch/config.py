"""JobConfig: what one `matting run` does, validated before Ray starts.

Apart from job.py so that the command line (which derives its flags from these fields) and the
tests can build and check a config without importing Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.config import RuntimeConfig
from pipelines.batch.execution import EXECUTORS
from pipelines.batch.gpu_path import GPU_PATH_SETTINGS
from pipelines.batch.state import JobFingerprint
from pipelines.storage import check_disjoint
from postproc import PostprocParams
from postproc.decode import DEFAULT_MAX_PIXELS


# Images per inference call by executor. In this process on CPU one at a time: ONNX Runtime's u2netp
# INT8 took 328 ms per image at batch 1 and 363 at batch 8 on one thread (bench/RESULTS.md), and a
# batch of one is out soonest. Ray's actors keep 8: each batch is a task and two object-store trips.
BATCH_SIZE_DEFAULT = {"ray": 8, "local": 1}


@dataclass
class JobConfig:
    # Each field's metadata carries its command-line help: `matting run` and `demo` derive their flags
    # from them (pipelines/cli/flags.py); validation stays in __post_init__.
    source: str = field(metadata={"positional": True, "help": "the catalog: a folder or an s3:// prefix"})
    dest: str = field(metadata={"positional": True, "help": "where cut-outs and the manifest go (folder or s3:// "
                                                            "prefix; never inside SOURCE)"})
    # The model and how to run it (model/config.py). Its threads: intra-op threads per CPU actor,
    # default its CPU share (plan_pool); its weights may be remote (each actor fetches them once).
    inference: RuntimeConfig = field(default_factory=RuntimeConfig, metadata={"cli": False})
    # Where the stages run (pipelines/batch/execution.py: choose_executor).
    executor: str = field(default="auto", metadata={
        "choices": EXECUTORS,
        "help": "ray: a Ray Data pipeline (a cluster, or a local Ray instance); local: every stage in this process, "
                "CPU inference, no Ray start; auto: local when no cluster is named (--address, RAY_ADDRESS) and "
                "inference runs on CPU, else ray"})
    # Decode and post-process on the inference GPU (pipelines/batch/gpu_path.py): auto = on GPU pools where
    # the parameters allow; on = also on CPU tensors (tests, bench); off = the CPU path everywhere.
    gpu_path: str = field(default="auto", metadata={
        "choices": GPU_PATH_SETTINGS,
        "help": "decode JPEGs and post-process on the inference GPU (auto: on GPU pools, without refinement or "
                "decontamination, where torchvision is installed; docs/operations.md)"})
    batch_size: int | None = field(default=None, metadata={
        "help": "images per inference call (default: 8 on Ray; 1 in this process, where ONNX Runtime on CPU runs "
                "fastest per image one at a time and the first cut-out comes soonest)"})
    # Inference actors; default: one per GPU, else per CPU (≤ 4), never more than batches (plan_pool).
    actors: int | None = field(default=None, metadata={
        "help": "inference actors (in this process: sessions, each on its own thread): one per GPU by default; on "
                "CPU one per CPU, at most 4; never more than the job's batches"})
    actor_cpus: float | None = field(default=None, metadata={  # default: see plan_pool
        "help": "on Ray: CPUs each inference actor reserves (default on GPUs 1; on CPU all but one CPU shared out, "
                "at most 1 each)"})
    decode_cpus: float = field(default=0.5, metadata={
        "help": "on Ray: CPUs each read/decode and render task reserves (must differ from --actor-cpus)"})
    s3_endpoint: str | None = field(default=None, metadata={
        "env": "MATTING_S3_ENDPOINT",
        "help": "S3-compatible endpoint URL, e.g. http://127.0.0.1:9000 (credentials from the AWS variables; "
                "default $MATTING_S3_ENDPOINT)"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={
        "flag": "--max-megapixels", "scale": 1e6, "help": "refuse larger images, in megapixels"})
    # Larger inputs get an error row instead of being read.
    max_bytes: int = field(default=200_000_000, metadata={
        "flag": "--max-megabytes", "scale": 1e6, "help": "refuse larger input files, in megabytes"})
    params: PostprocParams = field(default_factory=PostprocParams, metadata={"cli": False})
    run_name: str | None = field(default=None, metadata={
        "help": "suffix of this run's manifest folder (default: random)"})
    incremental: bool = field(default=False, metadata={
        "help": "process only inputs that are new or changed, or whose model or parameters changed"})
    prune: bool = field(default=False, metadata={"help": "remove outputs whose inputs are gone from SOURCE"})
    input_manifest: str | None = field(default=None, metadata={
        "metavar": "FILE",
        "help": "Parquet or CSV with a column of keys or URIs under SOURCE, instead of listing SOURCE"})
    stall_timeout_s: float = field(default=900.0, metadata={
        "flag": "--stall-timeout", "metavar": "SECONDS",
        "help": "stop (resumably) when no image finishes for this long, e.g. the GPU nodes are gone"})
    manifest_flush_rows: int = field(default=1000, metadata={
        "help": "rows per manifest part file: what a killed driver can lose and a rerun redoes (parts are also "
                "written every 10 s)"})
    # The decoded background picture ((h, w, 3) uint8) when params.background_image is set.
    background: np.ndarray | None = field(default=None, metadata={"cli": False})

    def __post_init__(self) -> None:
        if not isinstance(self.inference, RuntimeConfig):
            raise TypeError(f"inference must be a RuntimeConfig, got {type(self.inference).__name__}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be at least 1, got {self.actors}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.executor == "local" and self.inference.device == "cuda":
            raise ValueError("--executor local runs inference on this machine's CPUs; for --device cuda use "
                             "--executor ray (or auto)")
        if self.gpu_path not in GPU_PATH_SETTINGS:
            raise ValueError(f"gpu_path must be one of {', '.join(GPU_PATH_SETTINGS)}, got {self.gpu_path!r}")
        if not 0 < self.decode_cpus <= 64:
            raise ValueError(f"decode_cpus must be in (0, 64], got {self.decode_cpus}")
        if self.actor_cpus is not None and not 0 < self.actor_cpus <= 64:
            raise ValueError(f"actor_cpus must be in (0, 64], got {self.actor_cpus}")
        if self.actor_cpus == self.decode_cpus:
            raise ValueError("decode_cpus must differ from actor_cpus: Ray fuses maps with equal resources into "
                             "the inference actor, which would serialise decoding with inference")
        if (self.params.background_image is None) != (self.background is None):
            raise ValueError("params.background_image and background go together: decode the image named by "
                             "background_image and pass its pixels as background")
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise ValueError("max_pixels and max_bytes must be positive")
        if self.stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be positive, got {self.stall_timeout_s}")
        if self.prune and self.input_manifest:
            raise ValueError("--prune needs a full listing of SOURCE; it cannot be combined with --input-manifest")
        check_disjoint(self.source, self.dest)  # DEST == SOURCE would overwrite inputs: refused before any I/O

    def batch_size_for(self, executor: str) -> int:
        """`batch_size`, or the executor's default (BATCH_SIZE_DEFAULT)."""
        return self.batch_size or BATCH_SIZE_DEFAULT[executor]

    def batches(self, inputs: int | None, executor: str) -> int | None:
        """How many inference calls `inputs` images make on `executor` (None when the count is unknown)."""
        return max(1, -(-inputs // self.batch_size_for(executor))) if inputs is not None else None

    @property
    def model_version(self) -> str:
        """What the manifest records as the model: TTA is part of it (it changes every output)."""
        return self.inference.model_version

    def fingerprint(self) -> JobFingerprint:
        return JobFingerprint(self.source.rstrip("/"), self.model_version, self.params.params_hash(), self.incremental)
