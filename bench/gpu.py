"""Inference throughput per model and runtime: images/s at batch 1, 8, 32 and 320², 512² (a benchmark, not a test).

    python bench/gpu.py [--models u2netp ...] [--sizes 320 512] [--batches 1 8 32]
                        [--iters N] [--warmup N] [--quick] [--trt-cache DIR] [--json PATH]

Rows, each a runtime from model/runtime.py built the way a job builds it:
  GPU: torch FP32 (CUDA), torch FP16 (CUDA, channels_last), ORT CUDA FP16 (the FP16 graph of
       model/export.py), TensorRT FP16 (ORT's TensorRT provider, one engine per input size with
       a batch profile 1…32, engines cached in --trt-cache).
  CPU: torch FP32, ORT CPU FP32, ORT CPU FP16 (the same FP16 graph, to see what FP16 does on a CPU).
Rows that need a GPU print "skipped: no GPU" (or the provider's reason) where there is none.

Method: one random uint8 batch per (size, batch), normalised once as the model's spec says;
the timed call is the runtime's `_run` on that float32 batch: host→device copy, the model,
device→host copy — normalisation and post-processing excluded, so rows compare engines, not
numpy. `--warmup` untimed calls first (TensorRT builds or loads its engine in the first one;
reported as "first call s"), then `--iters` timed calls; images/s = batch × iters / seconds.
Without a GPU the run is short by default (--quick: batches 1 and 8, 2 timed calls after 1
warm-up); the machine may be shared, so load averages are printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/gpu.py` from anywhere

from model.runtime import OnnxRuntime, TorchRuntime, cuda_usable, normalize_batch  # noqa: E402
from model.specs import get_spec, list_models  # noqa: E402

# (label, needs a GPU, factory(spec, size, cache) → runtime)
ROWS = [
    ("torch FP32 CUDA", True, lambda spec, size, cache: TorchRuntime(spec, "cuda", precision="fp32")),
    ("torch FP16 CUDA", True, lambda spec, size, cache: TorchRuntime(spec, "cuda", precision="fp16")),
    ("ORT CUDA FP16", True, lambda spec, size, cache: OnnxRuntime(spec, "cuda", providers=("cuda",))),
    ("TensorRT FP16", True, lambda spec, size, cache: OnnxRuntime(
        spec, "cuda", providers=("tensorrt", "cuda"), trt_cache_dir=cache, trt_input_size=(size, size),
        trt_max_batch=32)),
    ("torch FP32 CPU", False, lambda spec, size, cache: TorchRuntime(spec, "cpu")),
    ("ORT CPU FP32", False, lambda spec, size, cache: OnnxRuntime(spec, "cpu", providers=("cpu",))),
    ("ORT CPU FP16", False, lambda spec, size, cache: OnnxRuntime(spec, "cpu", providers=("cpu",), precision="fp16")),
]


def gpu_reason() -> str | None:
    """None when a GPU is usable (by torch, or by onnxruntime-gpu), else why not."""
    ok, why = cuda_usable()
    if ok:
        return None
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None  # onnxruntime-gpu may still start; its rows say so if not
    return why


def measure(rt, spec, size: int, batch: int, iters: int, warmup: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = normalize_batch(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), spec.preprocess)
    t0 = time.perf_counter()
    for _ in range(max(warmup, 1)):
        rt._run(x)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        rt._run(x)
    seconds = time.perf_counter() - t0
    return {"images_per_s": batch * iters / seconds, "ms_per_batch": 1e3 * seconds / iters, "warmup_s": first}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list_models())
    p.add_argument("--sizes", nargs="+", type=int, default=[320, 512])
    p.add_argument("--batches", nargs="+", type=int)
    p.add_argument("--iters", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--quick", action="store_true", help="short run: batches 1 and 8, 2 timed calls, 1 warm-up")
    p.add_argument("--rows", nargs="+", help="only rows whose label contains one of these words (e.g. CPU TensorRT)")
    p.add_argument("--trt-cache", default=str(ROOT / "bench" / "out" / "trt-engines"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    no_gpu = gpu_reason()
    quick = args.quick or no_gpu is not None
    batches = args.batches or ([1, 8] if quick else [1, 8, 32])
    iters = args.iters or (2 if quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    command = shlex.join(["python", *sys.argv])
    import onnxruntime
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name(0) if cuda_usable()[0] else "none"
    print(f"$ {command}\n{datetime.now(timezone.utc).isoformat(timespec='seconds')}; {os.cpu_count()} CPUs ({cpu}); "
          f"GPU: {gpu}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__} "
          f"({', '.join(onnxruntime.get_available_providers())}); iters={iters} warmup={warmup}"
          + (f"\nno GPU: {no_gpu}" if no_gpu else ""), flush=True)
    print(f"{'model':<8}{'runtime':<17}{'size':>6}{'batch':>6}{'images/s':>10}{'ms/batch':>10}{'first call s':>13}"
          f"{'loadavg':>14}")
    results = []
    for model in args.models:
        spec = get_spec(model)
        for label, needs_gpu, factory in ROWS:
            if args.rows and not any(w.lower() in label.lower() for w in args.rows):
                continue
            for size in args.sizes:
                if needs_gpu and no_gpu:
                    print(f"{model:<8}{label:<17}{size:>6}{'':>6}  skipped: no GPU", flush=True)
                    results.append({"model": model, "runtime": label, "size": size, "skipped": f"no GPU: {no_gpu}"})
                    continue
                try:
                    rt = factory(spec, size, args.trt_cache)
                except (RuntimeError, ValueError) as e:  # a provider that does not start: say why, go on
                    print(f"{model:<8}{label:<17}{size:>6}{'':>6}  skipped: {e}", flush=True)
                    results.append({"model": model, "runtime": label, "size": size, "skipped": str(e)})
                    continue
                for batch in batches:
                    load0 = os.getloadavg()[0]
                    r = measure(rt, spec, size, batch, iters, warmup)
                    load1 = os.getloadavg()[0]
                    print(f"{model:<8}{label:<17}{size:>6}{batch:>6}{r['images_per_s']:>10.2f}{r['ms_per_batch']:>10.1f}"
                          f"{r['warmup_s']:>13.1f}{load0:>8.2f}->{load1:<5.2f}", flush=True)
                    results.append({"model": model, "runtime": label, "size": size, "batch": batch,
                                    "describe": rt.describe(), **r, "loadavg": [load0, load1]})
                del rt
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": command, "gpu": gpu, "cpu": cpu, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
