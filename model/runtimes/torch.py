"""PyTorch runtime: FP16 with channels_last and CUDA graphs on CUDA, FP32 on CPU."""

from __future__ import annotations

import threading

import numpy as np

from model.config import TORCH_GRAPHS
from model.preprocess import finish_output_torch, normalize_batch_torch
from model.runtimes.base import Runtime
from model.specs import ModelSpec


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
