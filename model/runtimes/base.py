"""The Runtime interface and what every runtime decides the same way: device and precision.

Every runtime takes a batch of N RGB uint8 images already resized to the spec's input size,
shape (N, H, W, 3), and returns N alpha maps in [0, 1], shape (N, H, W), float32, in one call.
Normalisation follows the model's own spec (model/preprocess.py), so callers never hard-code mean/std.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from model.config import DEVICES, RuntimeConfig, int8_available
from model.preprocess import finish_output, normalize_batch
from model.specs import ModelSpec

log = logging.getLogger(__name__)


NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version")


def cuda_ruled_out() -> bool:
    """True when CUDA surely cannot run here, found without importing torch (seconds) or touching a
    GPU: torch is not installed, or the machine shows no NVIDIA driver. False means only "maybe":
    cuda_usable() says for sure."""
    import importlib.util
    import os

    return importlib.util.find_spec("torch") is None or not any(os.path.exists(p) for p in NVIDIA_DEVICE_FILES)


def cuda_usable() -> tuple[bool, str]:
    """Whether torch can run a kernel on a GPU here, and why not when it cannot."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no driver, no visible device, or a CPU build of torch)"
    try:
        torch.zeros(1, device="cuda").add_(1)
    except RuntimeError as e:  # a visible but broken device
        return False, f"a CUDA test kernel failed: {e}"
    return True, ""


@dataclass
class Runtime:
    spec: ModelSpec
    device: str
    precision: str
    name: str

    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.preprocess.input_size

    def describe(self) -> str:
        return (f"model={self.spec.name} version={self.spec.version} runtime={self.name} device={self.device} "
                f"precision={self.precision}")

    def predict(self, images: np.ndarray) -> np.ndarray:
        raw = self._run(normalize_batch(images, self.spec.preprocess))
        return finish_output(raw, self.spec.preprocess)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"  # no torch import, no CUDA probe: a CPU worker does not pay for them
    ok, why = cuda_usable()
    if device == "cuda" and not ok:
        raise RuntimeError(f"--device cuda was asked for but CUDA is not usable here: {why}. "
                           "Use --device auto to fall back to CPU, or run on a GPU node.")
    if device == "auto":
        return "cuda" if ok else "cpu"
    return device


def resolve_precision(cfg: RuntimeConfig, device: str, runtime: str) -> str:
    """`auto`: FP16 on CUDA; on CPU INT8 where the model's INT8 meets its quality bound (spec.int8_ok),
    the CPU has fast integer dot products (model.quantize.cpu_has_fast_int8) and the INT8 file is
    already built (model.quantize.int8_built: never calibrated at start), else FP32."""
    if cfg.precision != "auto":
        return cfg.precision
    if device == "cuda":
        return "fp16"
    if runtime == "onnxruntime" and cfg.spec.int8_ok and int8_available():
        from model.quantize import cpu_has_fast_int8, int8_built

        if cpu_has_fast_int8():
            if int8_built(cfg.spec, cfg.weights):
                return "int8"
            _log_int8_not_built(cfg.spec.name)
    return "fp32"


@functools.lru_cache(maxsize=None)
def _log_int8_not_built(name: str) -> None:
    """Once per model and process: the user can have INT8 for one set-up command."""
    log.info("running %s in FP32: this CPU has fast INT8, but the INT8 file is not built; "
             "`matting weights int8 %s` builds it once (minutes), then `auto` runs INT8", name, name)
