"""Peak memory of the batch job as the catalog grows: 1k vs 10k small images, side by side.

Method: write N small JPEGs (96×96, cut from the bundled sample photos), run the real job on a
local Ray instance started inside a fresh process per size, and sample every 0.5 s the memory of
the driver (that process) and of every Ray worker process (their command lines start with
`ray::`), read from /proc. Reported, as RSS and as private memory (RSS less shared memory, which
is mostly the object store's pages a worker touched): the driver's peak, the largest worker's
peak and the peak of the workers' sum, plus samples at 25/50/75/100 % of each run, to tell memory
that grows with the catalog from memory that levels off. Growth is (10k − 1k) / 1k for each.

The model does not change what this measures (whether memory grows with the catalog), only how
long it takes: `--model` picks any registered model, and the figures name it.

    python bench/memory.py                       # 1,000 and 10,000 images
    python bench/memory.py --sizes 200,2000      # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

SAMPLES = Path(__file__).resolve().parent.parent / "pipelines" / "samples"


def mem_kb(pid: str) -> tuple[int, int]:
    """(VmRSS, VmRSS − RssShmem) in kB. The second leaves out shared memory: the pages of Ray's
    object store a worker has touched count in its RSS, though they belong to the store, which
    has a fixed size; private growth is what a leak or a catalog-sized structure would show."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssShmem"):
                fields[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    rss = fields.get("VmRSS", 0)
    return rss, rss - fields.get("RssShmem", 0)


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


def title(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")[:60]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return "?"


class Sampler(threading.Thread):
    """Peaks of the driver, the largest worker and the workers' sum, each as RSS and as private memory."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.worker_peak: dict[str, tuple[int, int]] = {}
        self.worker_title: dict[str, str] = {}  # what each worker was doing at its private peak
        self.peaks = {k: 0 for k in ("driver", "worker_max", "workers_sum", "driver_priv", "worker_max_priv",
                                     "workers_sum_priv")}
        self.series: list[tuple[float, int, int, int]] = []  # (t, driver, largest, sum): private kB
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            now = {pid: mem_kb(pid) for pid in ray_worker_pids()}
            for pid, (rss, priv) in now.items():
                old = self.worker_peak.get(pid, (0, 0))
                if priv > old[1]:
                    self.worker_title[pid] = title(pid)
                self.worker_peak[pid] = (max(old[0], rss), max(old[1], priv))
            driver = mem_kb(str(os.getpid()))
            sample = {"driver": driver[0], "driver_priv": driver[1],
                      "worker_max": max((m[0] for m in now.values()), default=0),
                      "worker_max_priv": max((m[1] for m in now.values()), default=0),
                      "workers_sum": sum(m[0] for m in now.values()),
                      "workers_sum_priv": sum(m[1] for m in now.values())}
            for k, v in sample.items():
                self.peaks[k] = max(self.peaks[k], v)
            self.series.append((time.monotonic() - t0, driver[1], sample["worker_max_priv"],
                                sample["workers_sum_priv"]))
            time.sleep(self.interval)

    def quarters(self) -> list[tuple[float, int, int, int]]:
        """The samples at 25/50/75/100 % of the run: growth that levels off is warm-up, not the catalog."""
        n = len(self.series)
        return [self.series[min(n - 1, max(0, round(q * n) - 1))] for q in (0.25, 0.5, 0.75, 1.0)] if n else []


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

    from model.config import RuntimeConfig
    from pipelines.batch.job import JobConfig, run_job

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        make_catalog(src, n)
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        sampler = Sampler()
        sampler.start()
        t0 = time.perf_counter()
        try:
            result = run_job(JobConfig(source=str(src), dest=str(dst), inference=RuntimeConfig(model=model),
                                       batch_size=batch_size))
        finally:
            sampler.stop.set()
            sampler.join()
            seconds = time.perf_counter() - t0
            ray.shutdown()
    top = sorted(sampler.worker_peak, key=lambda p: sampler.worker_peak[p][1], reverse=True)[:4]
    return {"images": n, "ok": result.ok, "seconds": seconds, "workers": len(sampler.worker_peak),
            **{f"{k}_mb": v / 1024 for k, v in sampler.peaks.items()},
            "top": [(sampler.worker_title[p], sampler.worker_peak[p][1] / 1024) for p in top],
            "quarters": sampler.quarters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--model", default="u2netp")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.model, args.batch_size)), flush=True)
        return
    # Each size in a fresh process, so that the driver's figures do not carry the previous run's heap.
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--model", args.model,
                              "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
        rows.append(json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:]))
    print(f"# bench/memory.py  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  "
          f"{os.cpu_count()} cores  model={args.model} batch={args.batch_size}")
    print(f"{'images':>8} {'ok':>8} {'seconds':>8}   MB: {'driver':>7} {'max worker':>11} {'workers sum':>12}"
          f"   private MB: {'driver':>7} {'max worker':>11} {'workers sum':>12}")
    for r in rows:
        print(f"{r['images']:>8} {r['ok']:>8} {r['seconds']:>8.1f}       {r['driver_mb']:>7.0f} "
              f"{r['worker_max_mb']:>11.0f} {r['workers_sum_mb']:>12.0f}               {r['driver_priv_mb']:>7.0f} "
              f"{r['worker_max_priv_mb']:>11.0f} {r['workers_sum_priv_mb']:>12.0f}")
    for r in rows:
        print(f"\n{r['images']} images: {r['workers']} Ray worker processes; largest private peaks: "
              + "; ".join(f"{t} {mb:.0f} MB" for t, mb in r["top"]))
        print("  private MB at 25/50/75/100 % of the run (driver / largest worker / workers' sum): " + ", ".join(
            f"{t:.0f} s {d / 1024:.0f}/{w / 1024:.0f}/{a / 1024:.0f}" for t, d, w, a in r["quarters"]))
    base, big = rows[0], rows[-1]
    print()
    for key, label in (("driver", "driver"), ("worker_max", "largest worker"), ("workers_sum", "all workers")):
        for suffix, kind in (("", "RSS"), ("_priv", "private")):
            a, b = base[f"{key}{suffix}_mb"], big[f"{key}{suffix}_mb"]
            growth = (b - a) / a * 100 if a else float("nan")
            print(f"growth {base['images']}→{big['images']} images, {label}, {kind}: {growth:+.1f}% (goal ≤ +10%)")


if __name__ == "__main__":
    main()
