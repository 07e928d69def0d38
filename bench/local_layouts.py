"""Layouts of a CPU run in its own process (issue 18, item 4): sessions × threads × batch size, whole commands.

    python bench/local_layouts.py [--photos 60] [--repeats 2] [--layouts "" "--actors 1" ...]

Each layout is a set of `matting run` flags (the empty string: the defaults). Every command runs
on the same N photos at 1024×768 (bench/peer.py's speed_photos, from ../shared/eval), in turn, so that a
change of load hits all alike; the table has the median seconds of the whole command (start-up
included) and the images/s that gives. Meaningful only on a quiet machine: the load average is
printed with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer import DEFAULT_SETS, speed_photos  # noqa: E402  (bench/ is on sys.path as the script's folder)

LAYOUTS = ["", "--actors 1", "--actors 3", "--batch-size 2", "--batch-size 4", "--batch-size 8",
           "--actors 1 --batch-size 8"]


def cpu_flags() -> str:
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16") if f in flags)


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--layouts", nargs="+", default=LAYOUTS)
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    args = p.parse_args()
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; cpu: {cpu_model()} ({os.cpu_count()} CPUs; "
          f"{cpu_flags()}); command: {' '.join(sys.argv)}", flush=True)
    photos, _ = speed_photos(DEFAULT_SETS, args.photos, args.work / f"layouts-{args.photos}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    seconds: dict[str, list[float]] = {layout: [] for layout in args.layouts}
    with tempfile.TemporaryDirectory(prefix="layouts-") as tmp:
        for r in range(args.repeats):
            for i, layout in enumerate(args.layouts):
                out = Path(tmp) / f"{r}-{i}"
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(photos), str(out),
                                       *layout.split()], cwd=ROOT, env=env, capture_output=True, text=True)
                took = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"[{layout}] failed:\n{proc.stderr[-3000:]}")
                seconds[layout].append(took)
                shutil.rmtree(out)
                print(f"run {r + 1} [{layout or 'defaults'}]: {took:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n{'layout (matting run flags)':36s} {'median s':>9s} {'images/s':>9s}")
    for layout, s in seconds.items():
        med = statistics.median(s)
        print(f"{layout or '(defaults)':36s} {med:9.1f} {args.photos / med:9.2f}")


if __name__ == "__main__":
    main()
