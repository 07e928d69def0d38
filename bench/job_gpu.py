"""The whole batch job on one node, GPU or CPU: throughput, GPU busy, CPU per image, object-store bytes.

    python bench/job_gpu.py [-n 5000] [--device cuda|cpu|auto] [--models u2netp unet-base]
                            [--formats png jpeg] [--gpu-path auto|on|off] [--batch-size 16]
                            [--code DIR] [--workdir DIR] [--json PATH]

Method (issue 14):
1. N JPEGs at 1024×768 (quality 90) are made from the bundled photos in pipelines/samples (random
   4:3 crop of 80–100 %, mirror, brightness shift: no two files alike), in parallel.
2. A local Ray instance over all cores (and the GPU where there is one). For each model × output
   format, `run_job` runs exactly as `matting run SRC DEST --model M --format F` does, timed from
   the call to its return ("wall"). A warm-up job over 2 batches comes first, once.
3. Steady state: images completed per second between the outputs of the 10 % and the 90 % mark
   (their files' modification times), which leaves out start-up, pipeline fill and drain.
4. GPU busy %: NVML's utilisation (pynvml, else nvidia-smi), sampled every 0.2 s in a thread,
   averaged over the run and over the steady window; skipped without a GPU.
5. CPU seconds per image: (a) every process under this one (raylet, GCS, workers), from /proc every
   0.5 s, split into the inference actors (process title MapBatches(...)) and everything else
   ("outside inference": reading, decoding, post-processing, encoding, writing, Ray itself);
   (b) Ray Data's own "remote cpu time" per operator (ds.stats()), per image; (c) the manifest's
   per-stage wall times (t_read ... t_write), means per image.
6. Object-store bytes per image: Ray Data's "output size bytes" per operator ÷ its rows (every
   operator's output lands in the object store), and the rows going into and out of the actor.
7. With --compare, the bundled photos go through the job twice (--gpu-path on and off, PNG) and
   the largest |Δα| between the two outputs is reported (the issue's bound: 2/255).
--code DIR runs another checkout's code (e.g. main's, for "before"); flags it lacks are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cpu_time import TreeCPU  # bench/ is on the path when run as a script
from photos import HEIGHT, WIDTH, make_images

HERE = Path(__file__).resolve().parents[1]
STAGES = ("read", "decode", "infer", "postprocess", "encode", "write")


class GpuBusy:
    """GPU utilisation samples (time, %), from NVML or nvidia-smi; none without a GPU."""

    def __init__(self, every: float = 0.2):
        self.samples: list[tuple[float, float]] = []
        self.source = ""
        self._stop = threading.Event()
        read = self._nvml() or self._smi()
        if read is None:
            return
        self._t = threading.Thread(target=self._run, args=(read, every), daemon=True)
        self._t.start()

    def _nvml(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no library, no driver, no device: try nvidia-smi
            return None
        self.source = "NVML"
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)

    def _smi(self):
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
        try:
            subprocess.run(cmd, capture_output=True, check=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        self.source = "nvidia-smi"
        return lambda: float(subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.split()[0])

    def _run(self, read, every) -> None:
        while not self._stop.wait(every):
            try:
                self.samples.append((time.time(), read()))
            except Exception:  # a failed sample is left out, not guessed
                pass

    def stop(self) -> None:
        self._stop.set()

    def mean(self, t0: float = 0.0, t1: float = float("inf")) -> float | None:
        xs = [u for t, u in self.samples if t0 <= t <= t1]
        return round(float(np.mean(xs)), 1) if xs else None


_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "B": 1}


def parse_stats(text: str) -> list[dict]:
    """Ray Data's ds.stats() → per operator: name, rows, output bytes, remote CPU seconds."""
    ops = []
    for block in re.split(r"\n(?=Operator \d+ )", text):
        m = re.match(r"Operator \d+ (.+?): ", block)
        if not m:
            continue
        op = {"operator": m.group(1)}
        for key, pat in (("rows", r"Output num rows per block: .*?([\d.]+) total"),
                         ("bytes", r"Output size bytes per block: .*?([\d.]+) total"),
                         ("cpu_s", r"Remote cpu time: .*?([\d.]+)(ns|us|ms|s) total")):
            mm = re.search(pat, block)
            if mm:
                op[key] = float(mm.group(1)) * (_UNITS[mm.group(2)] if key == "cpu_s" else 1)
        ops.append(op)
    return ops


def steady_rate(mtimes: list[float], batch: int) -> float | None:
    t = sorted(mtimes)
    n = len(t)
    lo, hi = (int(n * 0.1) // batch) * batch, (int(n * 0.9) // batch) * batch
    if hi - lo < 2 * batch or t[hi - 1] <= t[lo]:
        return None
    return (hi - lo) / (t[hi - 1] - t[lo])


def job_config(JobConfig, **kw):
    names = {f.name for f in dataclasses.fields(JobConfig)}
    return JobConfig(**{k: v for k, v in kw.items() if k in names})


def run_one(args, src: Path, dest: Path, model: str, fmt: str, gpu_path: str, n: int) -> dict:
    import pipelines.batch.job as job
    import pipelines.batch.on_ray as on_ray
    from pipelines.manifest import read_manifest
    from pipelines.storage import open_location
    from postproc import PostprocParams

    captured = {}
    original = on_ray.consume

    def consume_and_keep_stats(ds, writer, stall_timeout_s):
        original(ds, writer, stall_timeout_s)
        captured["stats"] = ds.stats()

    on_ray.consume = consume_and_keep_stats
    cfg = job_config(job.JobConfig, source=str(src), dest=str(dest), model=model, device=args.device,
                     batch_size=args.batch_size, actors=args.actors, gpu_path=gpu_path,
                     params=PostprocParams.create(format=fmt), stall_timeout_s=600)
    gpu, cpu = GpuBusy(), TreeCPU()
    t0w, t0 = time.time(), time.perf_counter()
    try:
        result = job.run_job(cfg)
    finally:
        on_ray.consume = original
    wall = time.perf_counter() - t0
    actor_s, other_s = cpu.stop()
    gpu.stop()
    rows = read_manifest(open_location(str(dest)), result.run_id).to_pandas()
    ok = rows[rows.status == "ok"]
    mtimes = [(dest / k).stat().st_mtime for k in ok.output_key]
    steady = steady_rate(mtimes, args.batch_size)
    t = sorted(mtimes)
    lo, hi = (t[int(len(t) * 0.1)], t[int(len(t) * 0.9) - 1]) if len(t) > 10 else (t0w, time.time())
    ops = parse_stats(captured.get("stats", ""))
    out = {
        "model": model, "format": fmt, "gpu_path": gpu_path, "images": int(result.images), "ok": int(result.ok),
        "errors": int(result.errors), "wall_s": round(wall, 2), "images_per_s": round(result.images / wall, 2),
        "steady_images_per_s": None if steady is None else round(steady, 2),
        "gpu_busy_pct": gpu.mean(t0w), "gpu_busy_steady_pct": gpu.mean(lo, hi), "gpu_sampler": gpu.source,
        "cpu_ms_per_image_outside_inference": round(1e3 * other_s / n, 1),
        "cpu_ms_per_image_inference_actors": round(1e3 * actor_s / n, 1),
        "stage_ms": {s: round(1e3 * float(ok[f"t_{s}"].mean()), 2) for s in STAGES if f"t_{s}" in ok},
        "device": sorted(set(ok.device)) if "device" in ok else [],
        "ray_data": [{"operator": o["operator"],
                      "bytes_per_image": round(o["bytes"] / o["rows"]) if o.get("rows") else None,
                      "cpu_ms_per_image": round(1e3 * o["cpu_s"] / o["rows"], 2) if o.get("rows") and "cpu_s" in o
                      else None} for o in ops],
    }
    # Ray Data's own CPU count per operator, outside the inference actors: read + decode, render.
    outside = [o["cpu_ms_per_image"] for o in out["ray_data"]
               if o["cpu_ms_per_image"] is not None and not o["operator"].startswith("MapBatches(")]
    out["ray_data_cpu_ms_per_image_outside_inference"] = round(sum(outside), 2)
    return out


def actor_bytes(args, src: Path, model: str, gpu_path: str, n: int = 8) -> dict:
    """Bytes per image in the rows going into and out of the inference actor, counted column by column."""
    from model.config import RuntimeConfig
    from model.specs import get_spec
    from pipelines.batch import stages
    from pipelines.batch.in_process import as_columns
    from pipelines.storage import open_location
    from postproc import PostprocParams

    spec = get_spec(model)
    source = open_location(str(src))
    keys = sorted(p.name for p in src.glob("*.jpg"))[:n]
    gpu = gpu_path == "on"
    if gpu:
        from pipelines.batch.gpu_path import GpuPredictor, decode_or_defer as decode
    else:
        decode = stages.decode_input
    rows = [decode(stages.read_input({"key": k, "size": -1}, source=source, max_bytes=10**9),
                   preprocess=spec.preprocess, max_pixels=10**9) for k in keys]
    batch = as_columns(rows)
    config = RuntimeConfig(model=model, device="cpu" if args.device == "cpu" else args.device)
    if gpu:
        actor = GpuPredictor(config, params=PostprocParams.create(), max_pixels=10**9)
    else:
        actor = stages.Predictor(config)
    out = actor(batch)

    def size(v) -> int:
        if isinstance(v, (bytes, str)):
            return len(v)
        v = np.asarray(v)
        return sum(size(x) for x in v) if v.dtype == object else v.nbytes

    return {"into_actor": {k: size(v) // n for k, v in batch.items()},
            "out_of_actor": {k: size(v) // n for k, v in out.items()}}


def compare(args, work: Path) -> dict:
    """max |Δα| between the GPU path and the CPU path on the bundled photos (PNG outputs)."""
    import cv2

    src = HERE / "pipelines" / "samples"
    res = {}
    for path in ("on", "off"):
        run_one(args, src, work / f"compare-{path}", args.models[0], "png", path, 5)
    worst = 0
    for p in sorted(src.glob("*.jpg")):
        a = cv2.imread(str(work / "compare-on" / f"{p.stem}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(work / "compare-off" / f"{p.stem}.png"), cv2.IMREAD_UNCHANGED)
        d = int(np.abs(a[..., 3].astype(int) - b[..., 3].astype(int)).max())
        res[p.name] = d
        worst = max(worst, d)
    return {"max_abs_dalpha_per_photo": res, "max_abs_dalpha": worst, "model": args.models[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--images", type=int, default=5000)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--models", nargs="+", default=["u2netp", "unet-base"])
    ap.add_argument("--formats", nargs="+", default=["png", "jpeg"])
    ap.add_argument("--gpu-path", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: 32 on a GPU, 8 on CPU")
    ap.add_argument("--actors", type=int, default=None)
    ap.add_argument("--code", default=None, help="run this checkout's code instead (e.g. main's, for 'before')")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--compare", action="store_true", help="max |Δα| GPU path vs CPU path on the bundled photos")
    ap.add_argument("--no-bytes", action="store_true", help="skip counting the actor's rows in this process")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    code = Path(args.code).resolve() if args.code else HERE
    sys.path.insert(0, str(code))
    # Ray's workers take the driver's working directory and sys.path first: both must name `code`.
    keep = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p and Path(p).resolve() != HERE]
    os.environ["PYTHONPATH"] = ":".join([str(code), *keep])  # e.g. /tmp/site, where Ray was installed
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, HERE / "bench") or p == str(code)]
    os.chdir(code)
    import ray
    import torch

    gpus = torch.cuda.device_count() if args.device != "cpu" else 0
    if args.batch_size is None:
        args.batch_size = 32 if gpus else 8
    work = Path(args.workdir or tempfile.mkdtemp(prefix="job_gpu-"))
    src = work / "src"
    t0 = time.perf_counter()
    if len(list(src.glob("*.jpg"))) != args.images:
        make_images(src, args.images)
    print(f"{args.images} JPEGs {WIDTH}x{HEIGHT} in {src} ({time.perf_counter() - t0:.1f} s); code {code}; "
          f"{os.cpu_count()} CPUs, {gpus} GPUs; torch {torch.__version__}, ray {ray.__version__}; "
          f"load {os.getloadavg()}", flush=True)
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a loaded box can miss that
        try:
            ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False,
                     log_to_driver=False)
            break
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            print(f"ray.init failed ({e}); attempt {attempt + 1} of 3", flush=True)
            ray.shutdown()
            if attempt == 2:
                raise
    where = ray.get(ray.remote(lambda: __import__("pipelines.batch.stages").batch.stages.__file__).remote())
    print(f"Ray workers import {where}", flush=True)
    if not where.startswith(str(code)):
        raise SystemExit(f"Ray's workers import {where}, not the code under {code}")
    report = {"images": args.images, "cpus": os.cpu_count(), "gpus": gpus, "code": str(code),
              "torch": torch.__version__, "ray": ray.__version__, "batch_size": args.batch_size, "runs": []}
    if gpus:
        report["gpu_name"] = torch.cuda.get_device_name(0)
    try:
        warm = work / "warm"
        warm.mkdir(exist_ok=True)
        for p in sorted(src.glob("*.jpg"))[:2 * args.batch_size]:
            (warm / p.name).write_bytes(p.read_bytes())
        run_one(args, warm, work / "out-warm", args.models[0], "png", args.gpu_path, 2 * args.batch_size)
        for model in args.models:
            for fmt in args.formats:
                r = run_one(args, src, work / f"out-{model}-{fmt}", model, fmt, args.gpu_path, args.images)
                print(json.dumps(r), flush=True)
                report["runs"].append(r)
        if args.compare:
            report["compare"] = compare(args, work)
            print(json.dumps(report["compare"]), flush=True)
    finally:
        ray.shutdown()
    if not args.no_bytes:
        path = "on" if (args.gpu_path == "on" or (args.gpu_path == "auto" and gpus)) else "off"
        if "gpu_path" not in {f.name for f in dataclasses.fields(__import__("pipelines.batch.job").batch.job.JobConfig)}:
            path = "off"  # code from before the GPU path
        report["actor_rows_bytes_per_image"] = actor_bytes(args, src, args.models[0], path)
        print(json.dumps(report["actor_rows_bytes_per_image"]), flush=True)
    print("\n| model | format | images/s wall | steady | GPU busy % (steady) | CPU ms/image outside inference: "
          "Ray Data operators / process tree | in actors | read | decode | infer | post | encode | write |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        s = r["stage_ms"]
        print(f"| {r['model']} | {r['format']} | {r['images_per_s']} | {r['steady_images_per_s']} | "
              f"{r['gpu_busy_pct']} ({r['gpu_busy_steady_pct']}) | {r['ray_data_cpu_ms_per_image_outside_inference']} / "
              f"{r['cpu_ms_per_image_outside_inference']} | "
              f"{r['cpu_ms_per_image_inference_actors']} | " + " | ".join(str(s.get(k)) for k in STAGES) + " |")
    for r in report["runs"]:
        print(f"Ray Data per operator ({r['model']}, {r['format']}): " +
              "; ".join(f"{o['operator']}: {o['bytes_per_image']} B/image, {o['cpu_ms_per_image']} CPU ms/image"
                        for o in r["ray_data"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
