"""Milliseconds per training sample: the teacher cache read as PNG files or packed (one core, the
DataLoader's way), and whole batches made on the training device (DeviceSampler).

GPU training of the small U-Nets was bound by data loading (docs/models.md, phase 6), so this is the
figure that sets images/s per data-loading process. The loader ways run in one process, one OpenCV
thread, on the same sample indices; the device way makes `--batch` samples per call from the packed
photos uploaded once (`--device cuda`: GPU wall time per sample, synchronised; `--device cpu`: torch
on `--threads` threads, 1 by default, so its figure is also ms of one core). Rounds are interleaved:

    python bench/train_samples.py ~/.cache/unet-matting/teacher/u2netp-rembg-0.1.3-320 --photos 1000 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.specs import get_spec  # noqa: E402
from pipelines.training.device_samples import DeviceSampler  # noqa: E402
from pipelines.training.train import DistillDataset  # noqa: E402
from pipelines.training.train_data import CachedPhotos, pack_cache  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cache", type=Path, help="a teacher-cache folder of RGBA PNGs (one size)")
    p.add_argument("--photos", type=int, default=1000)
    p.add_argument("--samples", type=int, default=300, help="samples per round and loader way")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--out", type=int, default=192, help="the student's input size")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where DeviceSampler runs")
    p.add_argument("--batch", type=int, default=256, help="DeviceSampler samples per call")
    p.add_argument("--device-samples", type=int, default=2048, help="DeviceSampler samples per round")
    p.add_argument("--threads", type=int, default=1, help="torch threads for --device cpu")
    p.add_argument("--no-png", action="store_true", help="skip the PNG-files way (the slowest)")
    args = p.parse_args()
    import torch

    cv2.setNumThreads(1)  # as in a data-loading process
    torch.set_num_threads(args.threads)
    files = sorted(args.cache.glob("*.png"))[:args.photos]
    if not files:
        raise SystemExit(f"no PNG files in {args.cache}")
    t0 = time.perf_counter()
    packed = pack_cache(files, args.size)
    build_s = time.perf_counter() - t0
    spec = get_spec("unet-small").preprocess
    ways = {"packed": packed} if args.no_png else {"PNG files": CachedPhotos(files), "packed": packed}
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    sampler = DeviceSampler(packed.array(), out=args.out, preprocess=spec, device=args.device, composite_prob=0.5)
    sync()
    upload_s = time.perf_counter() - t0
    sampler.batch(args.batch, step=10**6)  # warm-up: first kernels, allocator
    sync()
    device_way = f"device ({args.device})"
    times: dict[str, list[float]] = {k: [] for k in [*ways, device_way]}
    for r in range(args.rounds):
        for name, photos in ways.items():
            data = DistillDataset(photos, [], out=args.out, cache_size=args.size, preprocess=spec, length=10**9,
                                  seed=r, composite_prob=0.5, pair_weight=1.0)
            t = time.perf_counter()
            for i in range(args.samples):
                data[i]
            times[name].append((time.perf_counter() - t) / args.samples * 1000)
        calls = max(1, args.device_samples // args.batch)
        t = time.perf_counter()
        for i in range(calls):
            sampler.batch(args.batch, step=r * calls + i)
        sync()
        times[device_way].append((time.perf_counter() - t) / (calls * args.batch) * 1000)
    print(f"{len(files)} cached photos at {args.size}² → {args.out}²; pack built in {build_s:.1f} s "
          f"({packed.path.stat().st_size / 1e6:.0f} MB), on {args.device} in {upload_s:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.device == "cuda":
        print(f"{torch.cuda.get_device_name()}: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak")
    for name, ts in times.items():
        unit = "ms of GPU wall time" if name == device_way and args.device == "cuda" else \
            f"ms of {args.threads} core(s)" if name == device_way else "ms of one core"
        print(f"{name:<14} {statistics.median(ts):7.3f} {unit} per sample "
              f"(rounds {', '.join(f'{t:.3f}' for t in ts)})"
              + (f", batches of {args.batch}" if name == device_way else ""))
    if "PNG files" in times:
        ratio = statistics.median(times["PNG files"]) / statistics.median(times["packed"])
        print(f"packed vs PNG files: {ratio:.2f}×")
    print(f"device vs packed: {statistics.median(times['packed']) / statistics.median(times[device_way]):.2f}×")
    packed.path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
