"""Runtimes: run a registered model on a batch of images, on CPU (FP32, INT8) or CUDA (FP16).

    base.py     the Runtime interface; device and precision resolution
    torch.py    TorchRuntime
    onnx.py     OnnxRuntime (TensorRT, CUDA, CPU providers; INT8 on CPU)
    factory.py  create_runtime(RuntimeConfig): picks device, runtime and precision and loads the model

The preprocessing contract both runtimes follow lives in model/preprocess.py (numpy and torch twins).
Importing this package imports neither torch nor onnxruntime: each runtime does when it is built.
"""

from model.runtimes.base import Runtime, cuda_usable, resolve_device, resolve_precision
from model.runtimes.factory import create_runtime
from model.runtimes.onnx import OnnxRuntime, default_trt_cache_dir, dynamic_onnx
from model.runtimes.torch import TorchRuntime

__all__ = ["OnnxRuntime", "Runtime", "TorchRuntime", "create_runtime", "cuda_usable", "default_trt_cache_dir",
           "dynamic_onnx", "resolve_device", "resolve_precision"]
