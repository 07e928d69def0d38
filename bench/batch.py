"""Batch-job throughput against a plain loop and against the per-stage limit (a benchmark, not a test).

    python bench/batch.py [--images 200] [--batch-size 8] [--actors N] [--threads N]
                          [--actor-cpus 1.0] [--decode-cpus 0.5] [--workdir DIR] [--json PATH]

Method:
1. N JPEGs at 1024×768 are made from the bundled photos in pipelines/samples (random 4:3 crop of
   80–100 %, offset, mirror, brightness shift, so no two files are byte-identical).
2. Plain loop, one process, before Ray starts: the job's own code for each image (Location.read +
   sha256 → decode_image + model_input → runtime.predict in batches of --batch-size →
   refine_alpha + bounding_box → compose_and_encode → Location.write_atomic), with the runtime
   created as an actor creates it (create_runtime with --runtime/--device/--threads). Its images/s
   counts everything from create_runtime to the last write. time.perf_counter around each stage
   gives the seconds per image of read, decode+resize, inference (batch time / batch size),
   postprocess, encode, write. The loop runs once with the job's --threads, once with the
   runtime's default (threads=None), and once with threads=1 (each setting run once).
3. Stage limit = cores / (sum of the per-image stage costs of the threads=1 loop): what the
   cores could do if every core did nothing but useful single-threaded stage work.
4. The job: a local Ray instance (address="local", num_cpus=os.cpu_count()); a warm-up job over
   --warmup images first (Ray's worker processes started, libraries in the page cache), then
   run_job over all N images, timed from the call to its return ("wall", excluding nothing:
   listing, actor start-up, pipeline fill and drain, manifest). Steady state is derived from the
   output files' modification times (each is renamed into place when its image is done): images
   completed per second between the outputs of the batch at the 10 % mark and of the batch at the
   90 % mark (whole batches, since outputs land in bursts), which leaves out actor start-up,
   fill and drain (n/a when fewer than 2 batches lie between the marks). The manifest's
   per-stage times show what each stage cost inside the job, where the stages run concurrently.
CPU seconds per image are counted too: the plain loop's process time, and for the job the CPU
time of this process and of every process under it (raylet, GCS, workers), sampled from /proc
every 0.5 s, so the job's overhead shows even where other work distorts the wall clock. For a
shared machine, load averages are printed so that noisy runs can be recognised, and Ray's workers
run at this process's niceness (Ray's default is nice 15; --worker-niceness 15 restores it), so
that the job's workers and the plain loop compete for the CPUs on equal terms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/batch.py` from the repository root or anywhere

from model.config import RuntimeConfig  # noqa: E402
from model.runtimes import create_runtime  # noqa: E402
from pipelines.batch.job import JobConfig, run_job  # noqa: E402
from pipelines.storage import open_location  # noqa: E402
from postproc import PostprocParams, decode_image, model_input  # noqa: E402
from postproc.alpha import bounding_box  # noqa: E402
from postproc.render import compose_and_encode, refine_alpha  # noqa: E402

from cpu_time import TreeCPU  # noqa: E402 (bench/ is on the path when run as a script)
from photos import HEIGHT, WIDTH, make_images  # noqa: E402
STAGES = ["read", "decode", "infer", "postprocess", "encode", "write"]


def plain_loop(src: Path, keys: list[str], out: Path, cfg: JobConfig, threads: int | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    source, dest = open_location(str(src)), open_location(str(out), create=True)
    pc = time.perf_counter
    t = dict.fromkeys(STAGES, 0.0)
    infer_cpu = 0.0
    load0, cpu0 = os.getloadavg()[0], time.process_time()
    start = pc()
    rt = create_runtime(cfg.inference.replace(threads=threads))
    load_s = pc() - start
    for i in range(0, len(keys), cfg.batch_size):
        chunk, images, smalls = keys[i:i + cfg.batch_size], [], []
        for key in chunk:
            t0 = pc()
            data = source.read(key)
            hashlib.sha256(data).hexdigest()  # the job's read stage hashes every input
            t1 = pc()
            img = decode_image(data, max_pixels=cfg.max_pixels)
            smalls.append(model_input(img, rt.spec.preprocess))
            images.append(img)
            t["read"] += t1 - t0
            t["decode"] += pc() - t1
        t0, c0 = pc(), time.process_time()
        probs = rt.predict(np.stack(smalls)).astype(np.float16)  # float16, as the actor hands it on
        t["infer"] += pc() - t0
        infer_cpu += time.process_time() - c0
        for key, img, prob in zip(chunk, images, probs):
            t0 = pc()
            alpha = refine_alpha(prob.astype(np.float32), img.height, img.width, cfg.params, img.alpha)
            bounding_box(alpha)
            t1 = pc()
            data = compose_and_encode(img.rgb, alpha, cfg.params)
            t2 = pc()
            dest.write_atomic(Path(key).stem + cfg.params.extension, data)
            t["postprocess"] += t1 - t0
            t["encode"] += t2 - t1
            t["write"] += pc() - t2
    wall = pc() - start
    n = len(keys)
    return {"threads": threads, "runtime": rt.describe(), "images": n, "wall_s": wall, "images_per_s": n / wall,
            "cpu_s_per_image": (time.process_time() - cpu0) / n, "load_runtime_s": load_s,
            "stage_s": {k: v / n for k, v in t.items()}, "infer_cpu_s": infer_cpu / n,
            "loadavg": [load0, os.getloadavg()[0]]}


def job_run(cfg: JobConfig) -> dict:
    from pipelines.manifest import STAGE_COLUMNS, read_manifest

    out = Path(cfg.dest)
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()[0]
    t_epoch, start, tree = time.time(), time.perf_counter(), TreeCPU()
    res = run_job(cfg)
    wall = time.perf_counter() - start
    cpu = sum(tree.stop())
    done = sorted(p.stat().st_mtime for p in out.glob("*" + cfg.params.extension))
    # Outputs land in bursts, one per inference batch: count from the end of one burst to the end of
    # another (the k-th batch's worth of outputs), from the 10 % to the 90 % mark of the run.
    n, bs = res.images, cfg.batch_size
    k_lo, k_hi = -(-(n // bs) // 10), (n // bs) * 9 // 10
    ok = len(done) == n and k_hi - k_lo >= 2
    span = done[k_hi * bs - 1] - done[k_lo * bs - 1] if ok else 0.0
    rows = [r for r in read_manifest(open_location(str(out)), res.run_id).to_pylist()
            if r["status"] == "ok" and not r.get("reused")]
    stage = {c[2:]: sum(r[c] for r in rows) / max(len(rows), 1) for c in STAGE_COLUMNS}
    return {"images": n, "ok": res.ok, "errors": res.errors, "errors_by_reason": res.errors_by_reason,
            "wall_s": wall, "images_per_s": n / wall, "cpu_s_per_image": cpu / n,
            "first_output_s": (done[0] - t_epoch) if done else None,
            "steady_images_per_s": (k_hi - k_lo) * bs / span if span > 0 else None, "stage_s": stage,
            "actors_used": tree.actors_used, "loadavg": [load0, os.getloadavg()[0]]}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    import onnxruntime
    import ray

    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": model,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": sys.version.split()[0],
            "ray": ray.__version__, "onnxruntime": onnxruntime.__version__}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workdir", help="where the inputs and outputs go (default: a temporary folder, removed)")
    p.add_argument("--model", default="u2netp")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--actors", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--actor-cpus", type=float, help="default: the job's (see pipelines.batch.job.plan_pool)")
    p.add_argument("--decode-cpus", type=float, default=0.5)
    p.add_argument("--warmup", type=int, help="images in the untimed warm-up job (default 2 batches; 0: none)")
    p.add_argument("--worker-niceness", type=int, help="niceness of Ray's workers (default: this process's)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.worker_niceness is None:
        args.worker_niceness = os.nice(0)
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # read by the raylet ray.init starts
    command = shlex.join(["python", *sys.argv])
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="bench-batch-")
    work = Path(args.workdir or tmp).resolve()

    def config(src: str, dest: str) -> JobConfig:
        inference = RuntimeConfig(model=args.model, runtime=args.runtime, device=args.device,
                                  precision=args.precision, threads=args.threads)
        return JobConfig(source=src, dest=dest, inference=inference, batch_size=args.batch_size, actors=args.actors,
                         actor_cpus=args.actor_cpus, decode_cpus=args.decode_cpus, params=PostprocParams())

    cfg = config(str(work / "images"), str(work / "out-job"))  # invalid settings fail before any work
    try:
        shutil.rmtree(work / "images", ignore_errors=True)
        paths = make_images(work / "images", args.images)
        keys = [q.name for q in paths]
        import onnx, onnxruntime  # noqa: F401,E401  imported untimed, so no plain-loop row pays for it
        rows = []
        for threads in dict.fromkeys([args.threads, None, 1]):  # the job's setting, the default, one thread
            rows.append(plain_loop(work / "images", keys, work / f"out-plain-{threads}", cfg, threads))
            print(f"plain loop threads={threads}: {rows[-1]['images_per_s']:.2f} images/s", flush=True)

        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        warm_n = 2 * args.batch_size if args.warmup is None else args.warmup
        warm = None
        if warm_n:
            (work / "warmup").mkdir(exist_ok=True)
            for key in keys[:warm_n]:
                if not (work / "warmup" / key).exists():
                    os.link(work / "images" / key, work / "warmup" / key)
            warm = job_run(config(str(work / "warmup"), str(work / "out-warmup")))
        job = job_run(cfg)
        ray.shutdown()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    one = next(r for r in rows if r["threads"] == 1)
    own = rows[0]
    limit = os.cpu_count() / sum(one["stage_s"].values())
    fig = {"command": command, "machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "json"},
           "warmup": warm, "job": job, "plain": rows, "stage_limit_images_per_s": limit,
           "job_over_plain": job["images_per_s"] / own["images_per_s"],
           "job_pct_of_limit": 100 * job["images_per_s"] / limit,
           "job_cpu_over_plain": job["cpu_s_per_image"] / own["cpu_s_per_image"]}
    m = fig["machine"]
    print(f"\n$ {command}\nmachine: {m['nproc']} CPUs (affinity {m['affinity']}), {m['cpu']}; {m['date']}; "
          f"python {m['python']}, ray {m['ray']}, onnxruntime {m['onnxruntime']}")
    print(f"job: batch_size={args.batch_size} actors={args.actors} threads={args.threads} "
          f"actor_cpus={args.actor_cpus} decode_cpus={args.decode_cpus}; bench nice {os.nice(0)}, Ray workers "
          f"nice {args.worker_niceness}; {job['images']} images "
          f"of {WIDTH}x{HEIGHT}, {job['ok']} ok, {job['errors']} errors")
    print(f"inference actors that ran in the job: {job['actors_used']} "
          "(a CPU pool is fixed: --actors, default one per CPU, at most 4)")
    if warm:
        print(f"warm-up job: {warm['images']} images in {warm['wall_s']:.1f} s (not counted)")
    steady = job["steady_images_per_s"]
    print(f"\n{'throughput':<46}{'images/s':>9}{'wall s':>9}{'CPU s/img':>10}{'loadavg':>13}")
    for name, r in [("job (run_job wall, everything)", job)] + [
            (f"plain loop, threads={r['threads']}" + (" (job's)" if r is own else ""), r) for r in rows]:
        print(f"{name:<46}{r['images_per_s']:>9.2f}{r['wall_s']:>9.1f}{r['cpu_s_per_image']:>10.3f}"
              f"{r['loadavg'][0]:>6.2f}->{r['loadavg'][1]:<5.2f}")
    print(f"{'job steady state (outputs, 10 %-90 % of run)':<46}" + (f"{steady:>9.2f}" if steady else f"{'n/a':>9}"))
    print(f"{'stage limit: ' + str(os.cpu_count()) + ' cores / sum(threads=1 costs)':<46}{limit:>9.2f}")
    print(f"\njob / plain loop (threads={own['threads']}): {fig['job_over_plain']:.2f}x   (target >= 1.5x)")
    print(f"job / stage limit: {fig['job_pct_of_limit']:.0f} %   (target >= 85 %)" +
          (f"; steady state {100 * steady / limit:.0f} %" if steady else ""))
    print(f"CPU s per image, job / plain loop (threads={own['threads']}): {fig['job_cpu_over_plain']:.2f}x   "
          "(the job's CPU overhead: every process of the Ray instance counted)")
    busiest = max(x for r in [job, *rows] for x in r["loadavg"])
    if busiest > os.cpu_count():
        print(f"WARNING: load average reached {busiest:.1f} on {os.cpu_count()} CPUs: other work competed, so the "
              "wall-clock figures partly measure each side's share of a busy machine; CPU s/img is less affected")
    if job["first_output_s"] is not None:
        print(f"job: first output {job['first_output_s']:.1f} s after run_job started")
    print(f"\n{'ms per image':<14}" + "".join(f"{'plain t=' + str(r['threads']):>14}" for r in rows)
          + f"{'in job':>10}")
    for s in STAGES:
        print(f"{s:<14}" + "".join(f"{1e3 * r['stage_s'][s]:>14.1f}" for r in rows)
              + f"{1e3 * job['stage_s'][s]:>10.1f}")
    print(f"{'sum':<14}" + "".join(f"{1e3 * sum(r['stage_s'].values()):>14.1f}" for r in rows) +
          f"{1e3 * sum(job['stage_s'].values()):>10.1f}")
    print(f"{'infer CPU':<14}" + "".join(f"{1e3 * r['infer_cpu_s']:>14.1f}" for r in rows))
    print(f"{'model load':<14}" + "".join(f"{1e3 * r['load_runtime_s']:>14.1f}" for r in rows))
    print("(in job: the manifest's t_* means, measured inside Ray while the stages run concurrently)")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
