"""Inference throughput per model and runtime: images/s at batch 1, 8, 32 and 320², 512² (a benchmark, not a test).

    python bench/gpu.py [--models u2netp ...] [--sizes 320 512] [--batches 1 8 32]
                        [--iters N] [--warmup N] [--quick] [--rows WORD ...] [--trt-cache DIR] [--json PATH]

Rows, each a runtime from model/runtimes/ built the way a job builds it:
  GPU: torch FP32 (CUDA), torch FP16 (CUDA, channels_last) eager, with CUDA graphs and with
       torch.compile; ORT CUDA FP32 and FP16 (the FP16 graph of model/export.py); TensorRT FP16
       (ORT's TensorRT provider, one engine per input size with a batch profile 1…32, engines
       cached in --trt-cache).
  CPU: torch FP32, ORT CPU FP32, ORT CPU FP16 (the same FP16 graph, to see what FP16 does on a CPU).
Rows that need a GPU print "skipped: no GPU" (or the provider's reason) where there is none.

Method: one batch per (size, batch) of the bundled sample photos, resized. "images/s" times the
runtime's `_run` on that batch normalised once to float32: host→device copy, the model,
device→host copy — so rows compare engines, not numpy. "e2e img/s" times `predict` from the
uint8 batch to alpha, what a job's actor calls (torch on CUDA normalises on the GPU; the others
on the host). `--warmup` untimed calls first (TensorRT builds or loads its engine, torch.compile
compiles, CUDA graphs are captured: reported as "first s"), then `--iters` timed calls;
images/s = batch × iters / seconds. "Δ alpha" is the max abs difference of the row's alpha from
the first row's for the same model, size and batch (FP16 vs FP32, graphs vs eager).
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
SAMPLES = ROOT / "pipelines" / "samples"
sys.path.insert(0, str(ROOT))  # `python bench/gpu.py` from anywhere

from model.preprocess import normalize_batch  # noqa: E402
from model.runtimes import OnnxRuntime, TorchRuntime, cuda_usable  # noqa: E402
from model.specs import get_spec, list_models  # noqa: E402

# (label, needs a GPU, factory(spec, size, cache) → runtime)
ROWS = [
    ("torch FP32 CUDA", True, lambda spec, size, cache: TorchRuntime(spec, "cuda", precision="fp32", graph="eager")),
    ("torch FP16 CUDA", True, lambda spec, size, cache: TorchRuntime(spec, "cuda", precision="fp16", graph="eager")),
    ("torch FP16 graphs", True, lambda spec, size, cache: TorchRuntime(spec, "cuda", precision="fp16",
                                                                      graph="cudagraphs")),
    ("torch FP16 compile", True, lambda spec, size, cache: TorchRuntime(spec, "cuda", precision="fp16",
                                                                       graph="compile")),
    ("ORT CUDA FP32", True, lambda spec, size, cache: OnnxRuntime(spec, "cuda", providers=("cuda",),
                                                                  precision="fp32")),
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


def test_images(size: int, batch: int) -> np.ndarray:
    """The bundled sample photos resized to size², repeated to fill the batch: real content, so the
    alpha differences between rows mean something (U²-Netp's min-max output stretches noise)."""
    import cv2

    photos = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA)
              for p in sorted(SAMPLES.glob("*.jpg"))]
    if not photos:
        raise FileNotFoundError(f"no sample photos in {SAMPLES}")
    return np.ascontiguousarray(np.stack([photos[i % len(photos)] for i in range(batch)]))


def measure(rt, spec, size: int, batch: int, iters: int, warmup: int) -> tuple[dict, np.ndarray]:
    """Engine images/s (`_run` on a normalised float32 batch) and end to end (`predict` from uint8)."""
    images = test_images(size, batch)
    x = normalize_batch(images, spec.preprocess)
    t0 = time.perf_counter()
    for _ in range(max(warmup, 1)):
        rt._run(x)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        rt._run(x)
    seconds = time.perf_counter() - t0
    alpha = rt.predict(images)  # also a warm-up of predict's own path
    t0 = time.perf_counter()
    for _ in range(iters):
        alpha = rt.predict(images)
    e2e = time.perf_counter() - t0
    return ({"images_per_s": batch * iters / seconds, "ms_per_batch": 1e3 * seconds / iters, "warmup_s": first,
             "e2e_images_per_s": batch * iters / e2e}, alpha)


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
    print(f"{'model':<11}{'runtime':<19}{'size':>5}{'batch':>6}{'images/s':>10}{'ms/batch':>9}{'e2e img/s':>10}"
          f"{'first s':>8}{'Δ alpha':>9}{'loadavg':>14}")
    results = []
    reference: dict[tuple, np.ndarray] = {}  # the first row's alpha per (model, size, batch): parity of the others
    for model in args.models:
        spec = get_spec(model)
        for label, needs_gpu, factory in ROWS:
            if args.rows and not any(w.lower() in label.lower() for w in args.rows):
                continue
            for size in args.sizes:
                if needs_gpu and no_gpu:
                    print(f"{model:<11}{label:<19}{size:>5}{'':>6}  skipped: no GPU", flush=True)
                    results.append({"model": model, "runtime": label, "size": size, "skipped": f"no GPU: {no_gpu}"})
                    continue
                try:
                    rt = factory(spec, size, args.trt_cache)
                except (RuntimeError, ValueError) as e:  # a provider that does not start: say why, go on
                    print(f"{model:<11}{label:<19}{size:>5}{'':>6}  skipped: {e}", flush=True)
                    results.append({"model": model, "runtime": label, "size": size, "skipped": str(e)})
                    continue
                for batch in batches:
                    load0 = os.getloadavg()[0]
                    try:
                        r, alpha = measure(rt, spec, size, batch, iters, warmup)
                    except Exception as e:  # noqa: BLE001 - a row that fails is reported; the other rows still run
                        print(f"{model:<11}{label:<19}{size:>5}{batch:>6}  failed: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}", flush=True)
                        results.append({"model": model, "runtime": label, "size": size, "batch": batch,
                                        "failed": f"{type(e).__name__}: {e}"})
                        continue
                    load1 = os.getloadavg()[0]
                    ref = reference.setdefault((model, size, batch), alpha)
                    r["max_abs_diff_vs_first_row"] = float(np.abs(alpha - ref).max())
                    print(f"{model:<11}{label:<19}{size:>5}{batch:>6}{r['images_per_s']:>10.1f}"
                          f"{r['ms_per_batch']:>9.1f}{r['e2e_images_per_s']:>10.1f}{r['warmup_s']:>8.1f}"
                          f"{r['max_abs_diff_vs_first_row']:>9.4f}"
                          f"{load0:>8.2f}->{load1:<5.2f}", flush=True)
                    results.append({"model": model, "runtime": label, "size": size, "batch": batch,
                                    "describe": rt.describe(), **r, "loadavg": [load0, load1]})
                del rt
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": command, "gpu": gpu, "cpu": cpu, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
