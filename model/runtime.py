"""Runtimes: run a registered model on a batch of images, on CPU (FP32) or CUDA (FP16).

Every runtime takes a batch of N RGB uint8 images already resized to the spec's input size,
shape (N, H, W, 3), and returns N alpha maps in [0, 1], shape (N, H, W), float32, in one call.
Normalisation follows the model's own spec, so callers never hard-code mean/std.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import weights as weights_mod
from model.specs import MODEL_SPECS, ModelSpec, PreprocessSpec, get_spec

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")
DEVICES = ("auto", "cpu", "cuda")


def normalize_batch(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32, scaled and standardised as the spec says."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    x = images.astype(np.float32)
    if spec.input_scale == "max":
        peak = x.reshape(len(x), -1).max(axis=1).reshape(-1, 1, 1, 1)
        x /= np.maximum(peak, 1.0)  # an all-black image stays black instead of dividing by zero
    else:
        x /= 255.0
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def finish_output(pred: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, 1, H, W) raw output → (N, H, W) float32 alpha in [0, 1]."""
    pred = pred[:, 0].astype(np.float32)
    if spec.output_activation == "none":
        pred = 1.0 / (1.0 + np.exp(-pred))
    if spec.output_normalization == "minmax":
        lo = pred.reshape(len(pred), -1).min(axis=1).reshape(-1, 1, 1)
        hi = pred.reshape(len(pred), -1).max(axis=1).reshape(-1, 1, 1)
        pred = (pred - lo) / np.maximum(hi - lo, 1e-6)
    return np.clip(pred, 0.0, 1.0)


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
        return f"model={self.spec.name} version={self.spec.version} runtime={self.name} device={self.device} precision={self.precision}"

    def predict(self, images: np.ndarray) -> np.ndarray:
        raw = self._run(normalize_batch(images, self.spec.preprocess))
        return finish_output(raw, self.spec.preprocess)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchRuntime(Runtime):
    def __init__(self, spec: ModelSpec, device: str, weights=None, s3_endpoint=None, threads: int | None = None):
        import torch

        from model.factory import create_model

        precision = "fp16" if device == "cuda" else "fp32"
        super().__init__(spec, device, precision, "torch")
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        net = create_model(spec, weights=weights, s3_endpoint=s3_endpoint)
        if device == "cuda":
            net = net.to("cuda", memory_format=torch.channels_last).half()
        self.net = net
        self._torch = torch

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self.device == "cuda":
                t = t.to("cuda", non_blocking=True).half().contiguous(memory_format=torch.channels_last)
            return self.net(t).float().cpu().numpy()


def dynamic_onnx(path: Path) -> bytes:
    """The model with batch, height and width made symbolic, so one call runs N images.

    U²-Net's graph computes its resize targets from runtime shapes, so only the declared
    input/output dimensions pin the batch to 1.
    """
    import onnx

    m = onnx.load(str(path))
    for value in [*m.graph.input, *m.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for i, sym in ((0, "batch"), (2, "height"), (3, "width")):
            if len(dims) > i:
                dims[i].dim_param = sym
    return m.SerializeToString()


class OnnxRuntime(Runtime):
    def __init__(self, spec: ModelSpec, device: str, weights=None, s3_endpoint=None, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(spec, device, "fp32", "onnxruntime")
        path = weights_mod.resolve(spec, weights, s3_endpoint)
        if path.suffix != ".onnx":
            model = spec.name if spec.name in MODEL_SPECS else str(path)
            raise ValueError(f"the onnxruntime runtime needs an .onnx file, but {spec.name!r} has {path.name}: "
                             f"run it with --runtime torch, or export it with `matting export {model} "
                             f"--format onnx` and pass the .onnx file (with its spec) as the model")
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError("--device cuda with --runtime onnxruntime needs onnxruntime-gpu: "
                               "pip install 'unet-matting[gpu]'")
        self.session = ort.InferenceSession(dynamic_onnx(path), opts, providers=wanted)
        # onnxruntime-gpu lists CUDA even where it cannot start it: trust only the session.
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"onnxruntime could not start CUDA (session providers: {self.session.get_providers()})")
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    ok, why = cuda_usable()
    if device == "cuda" and not ok:
        raise RuntimeError(f"--device cuda was asked for but CUDA is not usable here: {why}. "
                           "Use --device auto to fall back to CPU, or run on a GPU node.")
    if device == "auto":
        return "cuda" if ok else "cpu"
    return device


def has_onnx_weights(spec: ModelSpec, weights: str | os.PathLike | None) -> bool:
    """Whether ONNX Runtime can run this model as given (a checkpoint needs `matting export` first)."""
    if weights is not None:
        return str(weights).endswith(".onnx")
    return spec.weights is not None and spec.weights.format == "onnx"


def create_runtime(model: str | ModelSpec = "u2netp", *, runtime: str = "auto", device: str = "auto",
                   weights: str | os.PathLike | None = None, s3_endpoint: str | None = None,
                   threads: int | None = None) -> Runtime:
    """Pick device and runtime: CUDA FP16 through torch when a GPU is usable, else ONNX Runtime FP32 on CPU.

    ONNX Runtime is the CPU default because it measured faster than torch there (bench/RESULTS.md);
    models whose weights are not ONNX (trained checkpoints) run on torch until exported.
    `model` is a registered name or a path to a weights file that carries its spec.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    spec = get_spec(model)
    dev = resolve_device(device)
    if runtime == "auto":
        runtime = "torch" if dev == "cuda" or not has_onnx_weights(spec, weights) else "onnxruntime"
    cls = TorchRuntime if runtime == "torch" else OnnxRuntime
    rt = cls(spec, dev, weights=weights, s3_endpoint=s3_endpoint, threads=threads)
    log.info("loaded %s (pid %d)", rt.describe(), os.getpid())
    return rt
