"""Milliseconds of one core per training sample: the teacher cache read as PNG files vs packed.

GPU training of the small U-Nets is bound by data loading (docs/models.md, phase 6), so this is
the figure that sets images/s per data-loading process. Both ways run in one process, one OpenCV
thread, interleaved rounds, on the same sample indices:

    python bench/train_samples.py ~/.cache/unet-matting/teacher/u2netp-rembg-0.1.3-320 --photos 1000
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
from pipelines.training.train import DistillDataset  # noqa: E402
from pipelines.training.train_data import CachedPhotos, pack_cache  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cache", type=Path, help="a teacher-cache folder of RGBA PNGs (one size)")
    p.add_argument("--photos", type=int, default=1000)
    p.add_argument("--samples", type=int, default=300, help="samples per round and way")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=320)
    args = p.parse_args()
    cv2.setNumThreads(1)  # as in a data-loading process
    files = sorted(args.cache.glob("*.png"))[:args.photos]
    if not files:
        raise SystemExit(f"no PNG files in {args.cache}")
    t0 = time.perf_counter()
    packed = pack_cache(files, args.size)
    build_s = time.perf_counter() - t0
    spec = get_spec("unet-small").preprocess
    ways = {"PNG files": CachedPhotos(files), "packed": packed}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.rounds):
        for name, photos in ways.items():
            data = DistillDataset(photos, [], out=192, cache_size=args.size, preprocess=spec, length=10**9, seed=r,
                                  composite_prob=0.5, pair_weight=1.0)
            t = time.perf_counter()
            for i in range(args.samples):
                data[i]
            times[name].append((time.perf_counter() - t) / args.samples * 1000)
    print(f"{len(files)} cached photos at {args.size}²; pack built in {build_s:.1f} s "
          f"({packed.path.stat().st_size / 1e6:.0f} MB); load average {os.getloadavg()[0]:.2f}")
    for name, ts in times.items():
        print(f"{name:<10} {statistics.median(ts):6.2f} ms/sample (rounds {', '.join(f'{t:.2f}' for t in ts)})")
    print(f"ratio: {statistics.median(times['PNG files']) / statistics.median(times['packed']):.2f}×")
    packed.path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
