"""Peak memory of the batch job as the catalog grows: 1k vs 10k small images, side by side.

Method: write N small JPEGs (96×96, cut from the bundled sample photos), run the real job on a
local Ray instance started inside this process, and sample every 0.5 s the resident memory of
the driver (this process) and of every Ray worker process (their command lines start with
`ray::`), read from /proc. Reported: the driver's peak RSS, the largest worker's peak
RSS and the peak of the workers' sum. Growth is (10k − 1k) / 1k for each.

The model does not change what this measures (whether memory grows with the catalog), only how
long it takes: `--model` picks any registered model, and the figures name it.

    python bench/memory.py                       # 1,000 and 10,000 images
    python bench/memory.py --sizes 200,2000      # a quicker look
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

SAMPLES = Path(__file__).resolve().parent.parent / "pipelines" / "samples"


def rss_kb(pid: str, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def ray_worker_pids() -> list[str]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::"):
                    pids.append(d.name)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return pids


class Sampler(threading.Thread):
    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.worker_peak: dict[str, int] = {}
        self.workers_sum_peak = 0
        self.driver_peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total = 0
            for pid in ray_worker_pids():
                kb = rss_kb(pid)
                total += kb
                self.worker_peak[pid] = max(self.worker_peak.get(pid, 0), kb)
            self.workers_sum_peak = max(self.workers_sum_peak, total)
            self.driver_peak = max(self.driver_peak, rss_kb(str(os.getpid())))
            time.sleep(self.interval)


def make_catalog(root: Path, n: int) -> None:
    photos = [cv2.imread(str(p)) for p in sorted(SAMPLES.glob("*.jpg"))]
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        y, x = (i * 37) % (h - 200), (i * 53) % (w - 200)
        tile = cv2.resize(img[y:y + 200, x:x + 200], (96, 96), interpolation=cv2.INTER_AREA)
        out = root / f"shard{i // 1000:03d}" / f"img{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), tile, [cv2.IMWRITE_JPEG_QUALITY, 85])


def measure(n: int, model: str, batch_size: int) -> dict:
    """One job on a fresh local Ray instance; peaks are sampled while it runs."""
    import ray

    from pipelines.job import JobConfig, run_job

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        make_catalog(src, n)
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        sampler = Sampler()
        sampler.start()
        t0 = time.perf_counter()
        try:
            result = run_job(JobConfig(source=str(src), dest=str(dst), model=model, batch_size=batch_size))
        finally:
            sampler.stop.set()
            sampler.join()
            seconds = time.perf_counter() - t0
            ray.shutdown()
    return {"images": n, "ok": result.ok, "seconds": seconds, "driver_rss_mb": sampler.driver_peak / 1024,
            "worker_max_mb": max(sampler.worker_peak.values(), default=0) / 1024,
            "workers_sum_mb": sampler.workers_sum_peak / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--model", default="u2netp")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [measure(n, args.model, args.batch_size) for n in sizes]
    print(f"# bench/memory.py  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  "
          f"{os.cpu_count()} cores  model={args.model} batch={args.batch_size}")
    print(f"{'images':>8} {'ok':>8} {'seconds':>8} {'driver RSS MB':>14} {'max worker MB':>14} {'workers sum MB':>15}")
    for r in rows:
        print(f"{r['images']:>8} {r['ok']:>8} {r['seconds']:>8.1f} {r['driver_rss_mb']:>14.0f} "
              f"{r['worker_max_mb']:>14.0f} {r['workers_sum_mb']:>15.0f}")
    base, big = rows[0], rows[-1]
    for key, label in (("driver_rss_mb", "driver"), ("worker_max_mb", "largest worker"),
                       ("workers_sum_mb", "all workers")):
        growth = (big[key] - base[key]) / base[key] * 100 if base[key] else float("nan")
        print(f"growth {base['images']}→{big['images']} images, {label}: {growth:+.1f}% (goal ≤ +10%)")


if __name__ == "__main__":
    main()
