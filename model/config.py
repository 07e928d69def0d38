"""RuntimeConfig: how to run a model, as one frozen value validated in one place.

The batch job, Serve, eval, training (its teacher) and the benches build one RuntimeConfig at their
edge and pass it whole down to `create_runtime`; nothing below re-validates its choices. Model
names, paths and weights are checked here too, so a typo fails before Ray starts.

`weights` may name a remote object (`s3://…`): model/ never fetches it. The layer that owns storage
(pipelines.storage.localize_weights) copies it into the local cache first and hands model/ a
config whose `weights` is a local path (`create_runtime` refuses a remote one with that fix).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.specs import WEIGHTS_SUFFIXES, ModelSpec, get_spec
from model.tta import TTA_MODES, versioned

RUNTIMES = ("auto", "torch", "onnxruntime")
DEVICES = ("auto", "cpu", "cuda")
# auto: FP16 on CUDA; on CPU INT8 where the CPU has fast integer dot products and the model's INT8
# meets its quality bound (ModelSpec.int8_ok), else FP32 (issue 18).
PRECISIONS = ("auto", "fp32", "fp16", "int8")
TORCH_GRAPHS = ("auto", "eager", "cudagraphs", "compile")
# Short names users type → ONNX Runtime's provider names, in the order we prefer them on a GPU.
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
GPU_PROVIDERS = ("tensorrt", "cuda")
QUANTIZE_MODULE = "model.quantize"  # INT8 quantization (issue 18): int8_model_path, cpu_has_fast_int8


def parse_providers(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """'tensorrt,cuda' / ['CUDAExecutionProvider'] → ('tensorrt', 'cuda'); None stays None (automatic)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    by_long = {v.lower(): k for k, v in PROVIDERS.items()}
    out: list[str] = []
    for item in (str(i).strip().lower() for i in items if str(i).strip()):
        short = item if item in PROVIDERS else by_long.get(item)
        if short is None:
            raise ValueError(f"unknown ONNX Runtime provider {item!r}; known: {', '.join(PROVIDERS)}")
        if short not in out:
            out.append(short)
    if not out:
        raise ValueError("--providers is empty; name at least one of " + ", ".join(PROVIDERS))
    return tuple(out)


def is_remote(path: str | os.PathLike | None) -> bool:
    """A URI (s3://bucket/key, …) that the storage layer must fetch before model/ can read it."""
    return path is not None and "://" in str(path)


def int8_available() -> bool:
    """Whether this build has INT8 quantization (model/quantize.py); found without importing it."""
    if QUANTIZE_MODULE in sys.modules:
        return sys.modules[QUANTIZE_MODULE] is not None
    return importlib.util.find_spec(QUANTIZE_MODULE) is not None


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class RuntimeConfig:
    """Which model, which weights, and how to run them: the one config every caller passes whole."""

    # Each field's metadata carries its command-line help and choices: `matting run`, `demo`, `eval`
    # derive their flags from them (pipelines/cli/flags.py).
    model: str = field(default="u2netp", metadata={
        "metavar": "NAME|PATH", "help": "a registered model (`matting models` lists them) or a .safetensors/.onnx "
                                       "file with its spec (in its metadata or a .spec.json beside it)"})
    # Other weights for the model: a local file, or a URI the storage layer fetches.
    weights: str | None = field(default=None, metadata={
        "help": "weights file or s3:// URI instead of the packaged cache"})
    runtime: str = field(default="auto", metadata={
        "help": "auto: torch FP16 on CUDA, onnxruntime on CPU", "choices": RUNTIMES})
    device: str = field(default="auto", metadata={
        "help": "cuda fails at start where CUDA is not usable; auto falls back to CPU", "choices": DEVICES})
    precision: str = field(default="auto", metadata={
        "help": "auto: FP16 on CUDA; on CPU INT8 where the CPU has fast integer dot products and the model's INT8 "
                "holds its quality, else FP32", "choices": PRECISIONS})
    # Intra-op threads on CPU (None: the runtime's default; the batch job: each actor's CPU share).
    threads: int | None = field(default=None, metadata={
        "help": "intra-op threads for CPU inference (default: in `matting run`, the CPUs each inference actor "
                "reserves, at least 1; elsewhere the runtime's own)"})
    # ONNX Runtime providers in order; each one named must start.
    providers: tuple[str, ...] | None = field(default=None, metadata={
        "help": "ONNX Runtime providers in order, e.g. tensorrt,cuda or cpu; each must start (default on a GPU: "
                "TensorRT → CUDA → CPU, whichever this build has)"})
    trt_cache_dir: str | None = field(default=None, metadata={
        "help": "TensorRT engine cache folder on each inference node (default ~/.cache/unet-matting/trt-engines)"})
    torch_graph: str = field(default="auto", metadata={
        "help": "how torch launches the model on CUDA: auto = CUDA graphs (captured once per batch shape); "
                "compile = torch.compile, 30-45 s per shape", "choices": TORCH_GRAPHS})
    # Overrides of the spec's PreprocessSpec fields, e.g. (("resize", "area"),): `matting eval` compares
    # input filters side by side with them (--model u2netp:resize=area); the job and Serve use the spec's own.
    preprocess: tuple[tuple[str, object], ...] = field(default=(), metadata={"cli": False})
    tta: str = field(default="none", metadata={
        "help": "test-time augmentation: flip also runs each image mirrored and averages the two (2× the "
                "inference per image; gain and cost in bench/RESULTS.md)", "choices": TTA_MODES})

    def __post_init__(self) -> None:
        model = str(self.model)
        if model.endswith(WEIGHTS_SUFFIXES):  # a checkpoint named by its path: other processes need it absolute
            model = str(Path(model).expanduser().resolve())
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "preprocess", tuple((str(k), v) for k, v in dict(self.preprocess).items()))
        self.spec  # unknown names fail here with the valid list; a path must carry its spec; bad overrides too
        if self.weights is not None:
            weights = str(self.weights)
            if not is_remote(weights):
                p = Path(weights).expanduser().resolve()
                if not p.is_file():
                    raise FileNotFoundError(f"weights file {p} does not exist")
                weights = str(p)
            object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "providers", parse_providers(self.providers))
        if self.trt_cache_dir is not None:
            object.__setattr__(self, "trt_cache_dir", str(Path(self.trt_cache_dir).expanduser()))
        _choice("runtime", self.runtime, RUNTIMES)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("torch_graph", self.torch_graph, TORCH_GRAPHS)
        _choice("tta", self.tta, TTA_MODES)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a whole number of at least 1, got {self.threads!r}")
        if self.torch_graph == "cudagraphs" and self.device == "cpu":
            raise ValueError("torch_graph='cudagraphs' needs device cuda; on CPU use eager or compile")
        if self.providers is not None:
            gpu = any(p in GPU_PROVIDERS for p in self.providers)
            if self.runtime == "torch":
                raise ValueError("--providers selects ONNX Runtime providers; use --runtime onnxruntime or auto")
            if self.device == "cpu" and gpu:
                raise ValueError(f"--device cpu contradicts providers {','.join(self.providers)}; drop one of them")
            if self.device == "cuda" and not gpu:
                raise ValueError(f"--device cuda needs a GPU provider (tensorrt or cuda), "
                                 f"got {','.join(self.providers)}")
        if self.precision == "fp16" and self.runtime == "torch" and self.device == "cpu":
            raise ValueError("torch runs fp16 on CUDA only: use --device cuda, --runtime onnxruntime, or fp32")
        if self.precision == "int8":
            if not int8_available():
                raise ValueError("--precision int8 needs INT8 quantization (model/quantize.py), which this build "
                                 "does not have yet; use --precision auto or fp32")
            if self.runtime == "torch" or self.device == "cuda" or (
                    self.providers and any(p in GPU_PROVIDERS for p in self.providers)):
                raise ValueError("--precision int8 runs on CPU through ONNX Runtime: drop --runtime torch, "
                                 "--device cuda or GPU providers (or use --precision fp16 on a GPU)")

    @property
    def spec(self) -> ModelSpec:
        spec = get_spec(self.model)
        if not self.preprocess:
            return spec
        return dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, **dict(self.preprocess)))

    @property
    def model_version(self) -> str:
        """What a manifest records as the model: TTA is part of it (it changes every output)."""
        return versioned(self.spec.version, self.tta)

    @property
    def remote_weights(self) -> bool:
        return is_remote(self.weights)

    def replace(self, **changes) -> RuntimeConfig:
        """A copy with `changes`, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_model_arg(cls, arg: str, **fields) -> RuntimeConfig:
        """'u2netp' (the registry's weights), 'u2netp=path/w.onnx' (that architecture with other weights) or
        'path/w.safetensors' (the file's own spec), as --model takes them in run, eval and Serve."""
        name, sep, weights = str(arg).partition("=")
        name = name.strip()
        if sep:
            return cls(model=name, weights=weights.strip(), **fields)
        return cls(model=name, **fields)
