"""create_runtime: one RuntimeConfig in, a loaded runtime out (device, runtime and precision picked here)."""

from __future__ import annotations

import logging
import os

from model.config import GPU_PROVIDERS, RuntimeConfig
from model.runtimes.base import Runtime, resolve_device, resolve_precision
from model.runtimes.onnx import OnnxRuntime
from model.runtimes.torch import TorchRuntime

log = logging.getLogger(__name__)


def create_runtime(config: RuntimeConfig | str = "u2netp", **fields) -> Runtime:
    """Pick device, runtime and precision for `config` and load the model: CUDA FP16 through torch when a
    GPU is usable, else ONNX Runtime on CPU (FP32, or INT8 where `auto` finds it holds its quality).

    `config` is a RuntimeConfig (what every caller passes), or a model name or path with
    RuntimeConfig's fields as keywords (a shorthand for tests and notebooks). ONNX Runtime is the CPU
    default because it measured faster than torch there (bench/RESULTS.md); torch checkpoints run on
    it too, through an in-memory export. Weights must be local: remote ones are fetched by the storage
    layer first (pipelines.storage.localize_weights).
    """
    if isinstance(config, RuntimeConfig):
        cfg = config.replace(**fields) if fields else config
    else:
        cfg = RuntimeConfig(model=str(config), **fields)
    spec = cfg.spec
    if cfg.remote_weights:
        raise ValueError(f"weights {cfg.weights} are remote: model/ reads local files only; fetch them first "
                         "(pipelines.storage.localize_weights, as the job and eval do)")
    if cfg.providers is not None:
        gpu = any(p in GPU_PROVIDERS for p in cfg.providers)
        device = "cuda" if gpu else "cpu"
        precision = resolve_precision(cfg, device, "onnxruntime")
        # ONNX Runtime, not torch, decides whether its providers can start: no torch CUDA check.
        rt: Runtime = OnnxRuntime(spec, device, weights=cfg.weights, threads=cfg.threads, providers=cfg.providers,
                                  trt_cache_dir=cfg.trt_cache_dir, precision=precision)
    else:
        # INT8 runs on CPU only (RuntimeConfig refuses it with cuda): no CUDA probe for it.
        device = "cpu" if cfg.precision == "int8" else resolve_device(cfg.device)
        runtime = cfg.runtime
        if runtime == "auto":
            # On CPU ONNX Runtime, for torch checkpoints too (exported in memory once per process):
            # it measured 2.4× torch's speed for unet-small and 2.4× for u2netp (docs/models.md).
            runtime = "torch" if device == "cuda" else "onnxruntime"
        precision = resolve_precision(cfg, device, runtime)
        if runtime == "torch":
            rt = TorchRuntime(spec, device, weights=cfg.weights, threads=cfg.threads, precision=precision,
                              graph=cfg.torch_graph)
        else:
            rt = OnnxRuntime(spec, device, weights=cfg.weights, threads=cfg.threads,
                             trt_cache_dir=cfg.trt_cache_dir, precision=precision)
    log.info("loaded %s (pid %d)", rt.describe(), os.getpid())
    return rt
