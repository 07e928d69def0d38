"""The Runtime interface and what every runtime decides the same way: device and precision.

Every runtime takes a batch of N RGB uint8 images already resized to the spec's input size,
shape (N, H, W, 3), and returns N alpha maps in [0, 1], shape (N, H, W), float32, in one call.
Normalisation follows the model's own spec (model/preprocess.py), so callers never hard-code mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.config import DEVICES, RuntimeConfig, int8_available
from model.preprocess import finish_output, normalize_batch
from model.specs import ModelSpec


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
    """`auto`: FP16 on CUDA; on CPU INT8 where the model's INT8 meets its quality bound (spec.int8_ok) and
    the CPU has fast integer dot products (model.quantize.cpu_has_fast_int8), else FP32."""
    if cfg.precision != "auto":
        return cfg.precision
    if device == "cuda":
        return "fp16"
    if runtime == "onnxruntime" and cfg.spec.int8_ok and int8_available():
        from model.quantize import cpu_has_fast_int8

        if cpu_has_fast_int8():
            return "int8"
    return "fp32"
