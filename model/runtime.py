"""Runtimes: run a registered model on a batch of images, on CPU (FP32) or CUDA (FP16).

Every runtime takes a batch of N RGB uint8 images already resized to the spec's input size,
shape (N, H, W, 3), and returns N alpha maps in [0, 1], shape (N, H, W), float32, in one call.
Normalisation follows the model's own spec, so callers never hard-code mean/std.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import weights as weights_mod
from model.config import (DEVICES, GPU_PROVIDERS, PROVIDERS, RUNTIMES, TORCH_GRAPHS, RuntimeConfig,  # noqa: F401
                          int8_available, parse_providers)
# The preprocessing contract lives in model/preprocess.py as numpy/torch twins; re-exported here.
from model.preprocess import finish_output, finish_output_torch, normalize_batch, normalize_batch_torch
from model.specs import ModelSpec

log = logging.getLogger(__name__)


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


class TorchRuntime(Runtime):
    """PyTorch: FP16 with channels_last on CUDA (or FP32 when asked, for comparison), FP32 on CPU.

    On CUDA, `graph` picks how the network is launched: "eager" (one kernel launch per layer),
    "cudagraphs" (each input shape captured once and replayed: U²-Netp's ~300 small kernels cost
    more to launch than to run at small batches) or "compile" (torch.compile, Inductor's fused
    kernels; 30-45 s of compilation per new shape). "auto" is CUDA graphs on CUDA and eager on CPU:
    on an H200 graphs ran U²-Netp FP16 at 3.7× eager's speed at batch 1 and 1.35× at batch 8 (320²),
    never slower, where torch.compile gained less (bench/RESULTS.md). On CUDA, `predict` uploads
    uint8 images and normalises and finishes on the GPU: a quarter of the float32 bytes cross the bus.
    """

    def __init__(self, spec: ModelSpec, device: str, weights=None, threads: int | None = None,
                 precision: str | None = None, graph: str = "auto", max_graphs: int = 8):
        import torch

        from model.factory import create_model

        precision = precision or ("fp16" if device == "cuda" else "fp32")
        if precision not in ("fp16", "fp32") or (precision == "fp16" and device != "cuda"):
            raise ValueError(f"torch runs fp16 on cuda and fp32 anywhere, not {precision} on {device}")
        if graph not in TORCH_GRAPHS:
            raise ValueError(f"graph must be one of {TORCH_GRAPHS}, got {graph!r}")
        if graph == "auto":
            graph = "cudagraphs" if device == "cuda" else "eager"
        if graph == "cudagraphs" and device != "cuda":
            raise ValueError("graph='cudagraphs' needs device cuda; on CPU use eager or compile")
        super().__init__(spec, device, precision, "torch")
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        net = create_model(spec, weights=weights)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes per job: pick the fastest conv algorithms once
            net = net.to("cuda", memory_format=torch.channels_last).to(self.dtype)
        self.graph = graph
        self.net = torch.compile(net) if graph == "compile" else net
        self._graphs: dict[tuple[int, ...], tuple] = {}  # input shape → (graph, static input, static output)
        self._pool = None
        self._graph_lock = threading.Lock()
        self.max_graphs = max_graphs
        self._torch = torch

    def describe(self) -> str:
        return f"{super().describe()} graph={self.graph}"

    def _forward(self, t):
        """The network on a tensor already on the device, in the model's dtype and layout."""
        if self.graph != "cudagraphs":
            return self.net(t)
        with self._graph_lock:  # one replay at a time: the static buffers are shared
            key = tuple(t.shape)
            if key not in self._graphs:
                bigger = sorted(k for k in self._graphs if k[1:] == key[1:] and k[0] > key[0])
                if len(self._graphs) >= self.max_graphs and bigger:
                    # Cache full: a partial batch replays a captured larger one, zero-padded.
                    pad = t.new_zeros((bigger[0][0] - key[0], *key[1:]))
                    padded = self._torch.cat([t, pad]).contiguous(memory_format=self._torch.channels_last)
                    return self._replay(tuple(padded.shape), padded)[:key[0]]
                self._capture(t)
            return self._replay(key, t)

    def _replay(self, key: tuple[int, ...], t):
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(t)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, t) -> None:
        torch = self._torch
        if len(self._graphs) >= self.max_graphs:
            self._graphs.pop(next(iter(self._graphs)))  # the oldest shape first
        static_in = t.clone().contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN autotuning, lazy allocations
            for _ in range(2):
                self.net(static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # One memory pool for every captured shape: safe because replays never overlap (the lock)
        # and each output is copied out before the next replay.
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.net(static_in)
        self._graphs[tuple(t.shape)] = (graph, static_in, static_out)

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self.device == "cuda":
                t = t.to("cuda", non_blocking=True).to(self.dtype).contiguous(memory_format=torch.channels_last)
            return self._forward(t).float().cpu().numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.device != "cuda":
            return super().predict(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
        torch = self._torch
        pre = self.spec.preprocess
        with torch.inference_mode():
            # The twins of normalize_batch/finish_output (model/preprocess.py), run on the GPU.
            x = torch.from_numpy(np.ascontiguousarray(images)).to("cuda", non_blocking=True)
            pred = self._forward(normalize_batch_torch(x, pre, self.dtype))
            return finish_output_torch(pred, pre).cpu().numpy()


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
        model_bytes = self._graph(spec, weights, "fp16" if fp16_graph else "int8" if precision == "int8" else "fp32")
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
        self.session = ort.InferenceSession(model_bytes, opts, providers=[PROVIDERS[p] for p in wanted],
                                            provider_options=options)
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
            data = dynamic_onnx(path)
            if kind == "fp32":
                return data
            import onnx

            proto = onnx.load_from_string(data)
            if any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer):
                if kind == "int8":
                    raise ValueError(f"{path} is an FP16 graph; INT8 is built from FP32 weights")
                return data  # already an FP16 file (matting export --fp16)
        if kind == "int8":
            return dynamic_onnx(_int8_file(spec, path, weights))
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
        return self.session.run(None, {self.input_name: x})[0]


def _export_in_memory(spec: ModelSpec, weights):
    """Torch-only weights (safetensors, .pt) → an FP32 ONNX graph, once per process."""
    from model.export import torch_to_onnx
    from model.factory import create_model

    log.info("exporting %s to ONNX in memory for onnxruntime", spec.name)
    return torch_to_onnx(create_model(spec, weights=weights), input_size=spec.preprocess.input_size, opset=17)


def _int8_file(spec: ModelSpec, path: Path | None, weights) -> Path:
    """The INT8 graph for these FP32 weights, from model.quantize (issue 18), which builds it once,
    checksums and caches it: `int8_model_path(spec, fp32_onnx_path) -> Path`."""
    if not int8_available():  # RuntimeConfig refuses int8 first; this is for direct callers
        raise RuntimeError("precision int8 needs model/quantize.py, which this build does not have")
    from model.quantize import int8_model_path

    if path is not None and path.suffix == ".onnx":
        return Path(int8_model_path(spec, path))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="matting-fp32-") as tmp:
        fp32 = Path(tmp) / f"{spec.name}-fp32.onnx"
        fp32.write_bytes(_export_in_memory(spec, weights).SerializeToString())
        return Path(int8_model_path(spec, fp32))


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
        from model.quantize import cpu_has_fast_int8, int8_obtainable

        # Only where the INT8 file is built or can be built here (a fresh install has no photos).
        if cpu_has_fast_int8() and int8_obtainable(cfg.spec, cfg.weights):
            return "int8"
    return "fp32"


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
