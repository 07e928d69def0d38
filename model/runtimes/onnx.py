"""ONNX Runtime: TensorRT (FP16) → CUDA (FP16 graph) → CPU (FP32 or INT8), or the providers asked for.

Torch-only weights run here too, exported to ONNX in memory once per process (model/export.py);
INT8 graphs come from model/quantize.py's cache.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model import weights as weights_mod
from model.config import GPU_PROVIDERS, PROVIDERS, int8_available
from model.runtimes.base import Runtime
from model.specs import ModelSpec

log = logging.getLogger(__name__)


def dynamic_onnx(source: Path | bytes) -> bytes:
    """The model (a file or its bytes) with batch, height and width made symbolic, so one call runs N images.

    U²-Net's graph computes its resize targets from runtime shapes, so only the declared
    input/output dimensions pin the batch to 1.
    """
    import onnx

    m = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    for value in [*m.graph.input, *m.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for i, sym in ((0, "batch"), (2, "height"), (3, "width")):
            if len(dims) > i:
                dims[i].dim_param = sym
    return m.SerializeToString()


def default_trt_cache_dir() -> Path:
    return weights_mod.weights_dir().parent / "trt-engines"


class OnnxRuntime(Runtime):
    """ONNX Runtime with TensorRT (FP16) → CUDA (FP16 graph) → CPU (FP32), or the providers asked for.

    Asking for a provider explicitly makes it a requirement: one that this onnxruntime build
    lacks, or that it lists but cannot start (onnxruntime-gpu lists CUDA even with no GPU, and
    falls back silently), is an error naming the providers the session really got.
    """

    def __init__(self, spec: ModelSpec, device: str, weights=None, threads: int | None = None,
                 providers: Sequence[str] | None = None, trt_cache_dir: str | os.PathLike | None = None,
                 trt_max_batch: int = 32, trt_input_size: tuple[int, int] | None = None,
                 precision: str | None = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if providers is None:
            if device == "cuda" and PROVIDERS["cuda"] not in available:
                raise RuntimeError("--device cuda with --runtime onnxruntime needs onnxruntime-gpu: "
                                   "pip install 'unet-matting[gpu]'")
            # On a GPU: TensorRT when this build has it, then CUDA, then CPU for what neither takes.
            wanted = [*(p for p in GPU_PROVIDERS if PROVIDERS[p] in available), "cpu"] if device == "cuda" else ["cpu"]
            required = ["cuda"] if device == "cuda" else ["cpu"]
        else:
            wanted = required = list(providers)
            missing = [p for p in wanted if PROVIDERS[p] not in available]
            if missing:
                raise RuntimeError(f"ONNX Runtime provider(s) {', '.join(missing)} asked for but not available in "
                                   f"this onnxruntime build (available: {', '.join(available)}). TensorRT and CUDA "
                                   "need onnxruntime-gpu (pip install 'unet-matting[gpu]') and a GPU.")
        gpu = any(p in GPU_PROVIDERS for p in wanted)
        if gpu and hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from the nvidia-* wheels (or from torch, when it was imported first):
            # without this the CUDA provider looks only on the system's library path.
            ort.preload_dlls(msvc=False)
        precision = precision or ("fp16" if gpu else "fp32")
        if precision not in ("fp16", "fp32", "int8") or (precision == "int8" and gpu):
            raise ValueError(f"onnxruntime runs fp32 and fp16, and int8 on CPU; not {precision!r} on {wanted}")
        # TensorRT builds its own FP16 engine from the FP32 graph; the CUDA and CPU providers run
        # what they are given, so FP16 there means the FP16 graph (float32 inputs and outputs kept).
        fp16_graph = precision == "fp16" and wanted[0] != "tensorrt"
        super().__init__(spec, "cuda" if gpu else "cpu", precision, "onnxruntime")
        kind = "fp16" if fp16_graph else "int8" if precision == "int8" else "fp32"
        model_bytes = self._graph(spec, weights, kind)
        if gpu:  # TensorRT's profile spans batch sizes; on GPUs torch is imported anyway, onnx costs nothing more
            model_bytes = dynamic_onnx(model_bytes)
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        self.threads = threads
        if threads:
            opts.intra_op_num_threads = threads
        h, w = trt_input_size or spec.preprocess.input_size
        options = []
        for p in wanted:
            if p == "tensorrt":
                cache = Path(trt_cache_dir) if trt_cache_dir else default_trt_cache_dir()
                cache.mkdir(parents=True, exist_ok=True)
                name = self._input_name(model_bytes)
                options.append({"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                                "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                                "trt_timing_cache_path": str(cache),
                                # One engine for every batch size up to trt_max_batch at one input size.
                                "trt_profile_min_shapes": f"{name}:1x3x{h}x{w}",
                                "trt_profile_opt_shapes": f"{name}:{min(8, trt_max_batch)}x3x{h}x{w}",
                                "trt_profile_max_shapes": f"{name}:{trt_max_batch}x3x{h}x{w}"})
            else:
                options.append({})
        self._session_args = (opts, [PROVIDERS[p] for p in wanted], options)
        self.session = ort.InferenceSession(model_bytes, opts, providers=self._session_args[1],
                                            provider_options=options)
        # A graph that declares a fixed input (U²-Netp's file: 1×3×320×320) runs as it is until a call
        # needs another shape (a batch of 8, another input size): then once with symbolic dimensions
        # (_run). Rewriting it up front costs importing onnx, 0.6 s of every CPU session's start
        # (bench/RESULTS.md, start-up), for a batch of one that never needs it.
        shape = self.session.get_inputs()[0].shape
        self._fixed_shape = tuple(shape) if all(isinstance(d, int) for d in shape) else None
        self._graph_source = (spec, weights, kind)  # to read the graph again then, rather than hold its bytes
        self._reshape_lock = threading.Lock()
        active = self.session.get_providers()
        # onnxruntime-gpu lists CUDA even where it cannot start it: trust only the session.
        failed = [p for p in required if PROVIDERS[p] not in active]
        if failed:
            hint = ("TensorRT needs the TensorRT 10 libraries (libnvinfer.so.10, e.g. pip install tensorrt-cu13-libs) "
                    "on the library path" if "tensorrt" in failed else "is a GPU visible to this process?")
            raise RuntimeError(f"ONNX Runtime could not start provider(s) {', '.join(failed)} "
                               f"(session providers: {', '.join(active)}; ONNX Runtime's log above says why): {hint}")
        self.provider = next(k for k, v in PROVIDERS.items() if v == active[0])
        if self.session.get_modelmeta().custom_metadata_map.get("precision") == "fp16":
            self.precision = "fp16"  # an FP16 file from `matting export --fp16`, on whatever provider
        self.input_name = self.session.get_inputs()[0].name
        log.info("onnxruntime session providers: %s (first: %s)", ", ".join(active), self.provider)

    @staticmethod
    def _input_name(model_bytes: bytes) -> str:
        import onnx

        return onnx.load_from_string(model_bytes).graph.input[0].name

    @staticmethod
    def _graph(spec: ModelSpec, weights, kind: str) -> bytes:
        """The ONNX graph to run: `kind` fp32, fp16 (the FP16 graph) or int8 (model.quantize's file).

        The weights file itself when it is ONNX, else exported from torch here, in memory.
        """
        path = weights_mod.resolve(spec, weights) if (weights is not None or spec.weights) else None
        proto = None
        if path is not None and path.suffix == ".onnx":
            if kind == "fp32":
                return path.read_bytes()
            if kind == "int8" and _int8_ready(spec, path):  # built from this very file: it was no FP16 graph
                return _int8_file(spec, path, weights).read_bytes()
            data = path.read_bytes()
            import onnx

            proto = onnx.load_from_string(data)
            if any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer):
                if kind == "int8":
                    raise ValueError(f"{path} is an FP16 graph; INT8 is built from FP32 weights")
                return data  # already an FP16 file (matting export --fp16)
        if kind == "int8":
            return _int8_file(spec, path, weights).read_bytes()
        if proto is None:
            # Torch-only weights (safetensors, .pt): export in memory once per process.
            proto = _export_in_memory(spec, weights)
            if kind == "fp32":
                return proto.SerializeToString()
        from model.export import to_fp16

        return to_fp16(proto)[0].SerializeToString()

    def describe(self) -> str:
        threads = f" threads={self.threads or 'all'}" if self.provider == "cpu" else ""
        return f"{super().describe()} provider={self.provider}{threads}"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._fixed_shape is not None and tuple(x.shape) != self._fixed_shape:
            self._make_dynamic(x.shape)
        return self.session.run(None, {self.input_name: x})[0]

    def _make_dynamic(self, shape: tuple[int, ...]) -> None:
        """The session again, from the graph with symbolic batch, height and width (once per runtime)."""
        import onnxruntime as ort

        with self._reshape_lock:
            if self._fixed_shape is None:
                return
            log.info("the graph declares input %s; %s asked for: running it with symbolic dimensions from now on",
                     self._fixed_shape, tuple(shape))
            opts, providers, options = self._session_args
            self.session = ort.InferenceSession(dynamic_onnx(self._graph(*self._graph_source)), opts,
                                                providers=providers, provider_options=options)
            self._fixed_shape = None


def _export_in_memory(spec: ModelSpec, weights):
    """Torch-only weights (safetensors, .pt) → an FP32 ONNX graph, once per process."""
    from model.export import torch_to_onnx
    from model.factory import create_model

    log.info("exporting %s to ONNX in memory for onnxruntime", spec.name)
    return torch_to_onnx(create_model(spec, weights=weights), input_size=spec.preprocess.input_size, opset=17)


def _int8_ready(spec: ModelSpec, path: Path) -> bool:
    if not int8_available():
        return False
    from model.quantize import int8_built

    return int8_built(spec, path)


def _int8_file(spec: ModelSpec, path: Path | None, weights) -> Path:
    """The INT8 graph for these FP32 weights, from model.quantize (issue 18), which builds it once,
    checksums and caches it: `int8_model_path(spec, fp32_onnx_path) -> Path`."""
    if not int8_available():  # RuntimeConfig refuses int8 first; this is for direct callers
        raise RuntimeError("precision int8 needs model/quantize.py, which this build does not have")
    from model.quantize import int8_model_path

    if path is not None:
        # An ONNX file or a checkpoint: the cache is keyed by that file, as `matting weights int8 NAME`
        # builds it and quantize.int8_built looks for it (quantize exports a checkpoint itself).
        return Path(int8_model_path(spec, path))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="matting-fp32-") as tmp:
        fp32 = Path(tmp) / f"{spec.name}-fp32.onnx"
        fp32.write_bytes(_export_in_memory(spec, weights).SerializeToString())
        return Path(int8_model_path(spec, fp32))
