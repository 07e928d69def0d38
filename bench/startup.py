"""Where the start of a small local job goes: `matting run pipelines/samples OUT` (5 photos).

    python bench/startup.py [--tree DIR]           # the breakdown for this tree (or DIR), 3 runs, medians
    python bench/startup.py --wall A B --repeats 5 # whole commands side by side: tree A, B, A, B, ...
    python bench/startup.py --wall . --executors ray local --repeats 5   # Ray's chain vs this process

--wall runs `python -m pipelines.cli run SAMPLES DEST` with PYTHONPATH=<tree> for each tree (and each
of --executors, passed as `--executor X`) in turn (alternating, so load changes hit all alike) and
reports, per tree and executor, the median seconds from the command's launch to its phases (from
its log), its first cut-out on disk and its exit.

The breakdown runs the job in a fresh process per repeat, once per executor, timing from that
process's launch. On Ray (`--executor ray`): the interpreter; our imports and Ray's (and, once,
`-X importtime`'s largest packages); ray.init; planning; Ray Data's start up to the first row back
in the driver, split by what the inference actor reports (its process start and its model load,
from its "inference actor ready ... in N s" line); then the first output file and the rest of the
job. It also times, in a fresh process, what an inference actor does before its first batch:
importing the stage code and ONNX Runtime, and creating the session. In this process (`local`,
the default of a CPU run that names no cluster): imports, planning, the first session loaded,
the first output file, the job done, and whether Ray was imported at all.

Timings on a loaded machine are noisy: report the load average with them (printed) and compare
trees only within one --wall run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "pipelines" / "samples"


def first_output_watch(dest: Path, t0: float, out: dict) -> threading.Thread:
    """Poll DEST for the first cut-out (any file outside _manifests) and record when it appeared."""

    def watch() -> None:
        while "first_output" not in out and not out.get("stop"):
            if dest.exists():
                for p in dest.rglob("*"):
                    if p.is_file() and "_manifests" not in p.parts and not p.name.startswith("."):
                        out["first_output"] = time.perf_counter() - t0
                        return
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


# Log lines that mark a phase of the command, found by their text; their timestamps say when.
PHASES = (("executor chosen", "executor: "), ("Ray ready", "Started a local Ray instance"),
          ("inputs planned", " inputs listed, "), ("Ray Data started", "Starting execution of Dataset"),
          ("a model loaded", "inference actor ready"))


def phase_times(log: str, launched: float) -> dict:
    """Seconds from the launch to each PHASES line (its asctime stamp, millisecond resolution)."""
    from datetime import datetime

    out = {}
    for name, text in PHASES:
        for line in log.splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
            if m and text in line:
                out[name] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - launched
                break
    return out


def wall_once(tree: Path, dest: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RAY_ADDRESS", None)
    out: dict = {}
    launched = time.time()
    t0 = time.perf_counter()
    watcher = first_output_watch(dest, t0, out)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(SAMPLES), str(dest), *extra],
                          cwd=tree, env=env, capture_output=True, text=True)
    out["exit"] = time.perf_counter() - t0
    out["stop"] = True
    watcher.join(1)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    out["log"] = proc.stdout + proc.stderr
    out.update(phase_times(out["log"], launched))
    return out


def run_wall(trees: list[Path], repeats: int, extra: list[str], executors: list[str]) -> None:
    cases = [(tree, ex) for tree in trees for ex in executors]
    results: dict[tuple, list[dict]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for r in range(repeats):
            for i, (tree, executor) in enumerate(cases):
                dest = Path(tmp) / f"{r}-{i}"
                try:
                    res = wall_once(tree, dest, [*extra, "--executor", executor])
                except RuntimeError as e:  # e.g. Ray's start timing out on an overloaded machine: say so
                    print(f"run {r + 1} {tree}: FAILED (load {os.getloadavg()[0]:.1f}): {str(e)[-300:]}", flush=True)
                    continue
                results[(tree, executor)].append(res)
                phases = ", ".join(f"{k} {res[k]:.1f} s" for k, _ in PHASES if k in res)
                print(f"run {r + 1} {tree} {executor}: {phases}, first output {res.get('first_output', float('nan')):.1f} s, "
                      f"exit {res['exit']:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    print("\nmedians over", repeats, "runs each (load average now", " ".join(f"{x:.1f}" for x in os.getloadavg()), ")")
    keys = [k for k, _ in PHASES] + ["first_output", "exit"]
    print(f"{'tree':40s} {'executor':8s} " + " ".join(f"{k:>16s}" for k in keys))
    for (tree, executor), rs in results.items():
        if not rs:
            print(f"{str(tree):40s} {executor:8s} no successful run")
            continue
        meds = [statistics.median(r[k] for r in rs) if any(k in r for r in rs) else float("nan") for k in keys]
        print(f"{str(tree):40s} {executor:8s} " + " ".join(f"{m:16.1f}" for m in meds) + f"   ({len(rs)} runs)")


# --- the breakdown: one job in a fresh process, timed from that process's start ---------------------

# What both children do first: imports and the clock (from the parent's launch); WATCH notes when the
# first output file appears in DEST.
PRELUDE = r"""
import json, sys, threading, time
t_start = float(sys.argv[3])  # when the parent launched this process
now = lambda: time.time() - t_start
marks = {"interpreter": now()}
from pipelines import cli
from pipelines.cli.run import job_config
marks["import pipelines.cli"] = now()
"""
WATCH = r"""
from pathlib import Path
dest = Path(sys.argv[2])
def watch():
    while "first output file" not in marks:
        if any(p.is_file() and "_manifests" not in p.parts for p in dest.rglob("*")):
            marks["first output file"] = now(); return
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
"""

CHILD = PRELUDE + r"""
import ray, ray.data
marks["import ray, ray.data"] = now()
from pipelines import manifest
from pipelines.batch import job, on_ray
marks["import pipelines.batch.job, on_ray"] = now()
args = cli.build_parser().parse_args(["run", sys.argv[1], sys.argv[2], "--executor", "ray"])
cfg = job_config(args, args.source, args.dest)
marks["config"] = now()
on_ray.init_ray(None)
marks["ray.init"] = now()
orig_plan, orig_build, orig_add = job.plan_inputs, on_ray.build_dataset, manifest.ManifestWriter.add
def plan(*a, **k):
    r = orig_plan(*a, **k); marks["planning"] = now(); return r
def build(*a, **k):
    r = orig_build(*a, **k); marks["dataset built"] = now(); return r
def add(self, batch):
    marks.setdefault("first rows in the driver", now()); return orig_add(self, batch)
job.plan_inputs, on_ray.build_dataset, manifest.ManifestWriter.add = plan, build, add
""" + WATCH + r"""
result = job.run_job(cfg)
marks["job done"] = now()
ray.shutdown()
marks["ray.shutdown"] = now()
print("MARKS " + json.dumps(marks), flush=True)
"""

CHILD_LOCAL = PRELUDE + r"""
from pipelines.batch import job, in_process
marks["import pipelines.batch.job, in_process"] = now()
args = cli.build_parser().parse_args(["run", sys.argv[1], sys.argv[2], "--executor", "local"])
cfg = job_config(args, args.source, args.dest)
marks["config"] = now()
orig_plan, orig_predictor = job.plan_inputs, in_process.Predictor
def plan(*a, **k):
    r = orig_plan(*a, **k); marks["planning"] = now(); return r
class Predictor(orig_predictor):
    def __init__(self, *a, **k):
        super().__init__(*a, **k); marks.setdefault("first session loaded", now())
job.plan_inputs, in_process.Predictor = plan, Predictor
""" + WATCH + r"""
result = job.run_job(cfg)
marks["job done"] = now()
assert result.executor == "local", result.executor
print("RAY IMPORTED", "ray" in sys.modules, flush=True)
print("MARKS " + json.dumps(marks), flush=True)
"""

ACTOR = r"""
import json, sys, time
t_start = float(sys.argv[1])  # when the parent launched this process
marks = {"interpreter": time.time() - t_start}
t = time.perf_counter()
import ray  # an actor's worker process has Ray imported before our code runs
marks["import ray"] = time.perf_counter() - t; t = time.perf_counter()
import pipelines.batch.stages
marks["import pipelines.batch.stages (postproc, storage)"] = time.perf_counter() - t; t = time.perf_counter()
import onnxruntime
marks["import onnxruntime"] = time.perf_counter() - t; t = time.perf_counter()
from model.runtimes import create_runtime
rt = create_runtime("u2netp", device="cpu", threads=1)
marks["create_runtime (weights check, graph, session)"] = time.perf_counter() - t; t = time.perf_counter()
import numpy as np
rt.predict(np.zeros((5, 320, 320, 3), np.uint8))
marks["first batch of 5 (inference)"] = time.perf_counter() - t
print("MARKS " + json.dumps(marks), flush=True)
"""


def child_marks(code: str, *argv: str, tree: Path = REPO) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", code, *argv, repr(time.time())], cwd=tree, capture_output=True,
                          text=True, env=env)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(text[-3000:])
    line = next(x for x in text.splitlines() if x.startswith("MARKS "))
    return json.loads(line[6:]), text


def top_imports(n: int = 12, tree: Path = REPO) -> list[tuple[str, float]]:
    """-X importtime's cumulative seconds of the largest top-level packages the driver imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pipelines.cli, pipelines.batch.job, pipelines.batch.on_ray"],
                          cwd=tree, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)", line)
        if m and m.group(2).count(".") <= 1:  # packages and their first level (ray, ray.data, pyarrow, ...)
            totals[m.group(2)] = max(totals.get(m.group(2), 0.0), int(m.group(1)) / 1e6)  # cumulative
    return sorted(totals.items(), key=lambda kv: -kv[1])[:n]


def run_breakdown(repeats: int, tree: Path = REPO) -> None:
    print(f"tree {tree}; load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs\n")
    local, imported = [], []
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for r in range(repeats):
            marks, text = child_marks(CHILD_LOCAL, str(SAMPLES), str(Path(tmp) / f"l{r}"), tree=tree)
            local.append(marks)
            imported.append("RAY IMPORTED True" in text)
    print(f"in this process (--executor local), seconds since the process started (median of {repeats}; "
          f"Ray imported in {sum(imported)} of {repeats}):")
    prev = 0.0
    for key in local[0]:
        at = statistics.median(m[key] for m in local if key in m)
        print(f"  {key:38s} at {at:6.2f}   (+{at - prev:5.2f})")
        prev = at
    runs, actor_ready = [], []
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for r in range(repeats):
            marks, text = child_marks(CHILD, str(SAMPLES), str(Path(tmp) / f"b{r}"), tree=tree)
            runs.append(marks)
            actor_ready += [float(x) for x in re.findall(r"inference actor ready on node \S+ in ([\d.]+) s", text)]
    print(f"\non Ray (--executor ray), seconds since the process started (median of {repeats}):")
    prev = 0.0
    for key in runs[0]:
        at = statistics.median(m[key] for m in runs if key in m)
        print(f"  {key:38s} at {at:6.2f}   (+{at - prev:5.2f})")
        prev = at
    if actor_ready:
        print(f"  inference actor's constructor (its own log, median of {len(actor_ready)}): "
              f"{statistics.median(actor_ready):.2f} s")
    actor = [child_marks(ACTOR, tree=tree)[0] for _ in range(repeats)]
    print(f"\nan inference actor's work before its first batch, in a fresh process (median of {repeats}):")
    for key in actor[0]:
        print(f"  {key:46s} {statistics.median(m[key] for m in actor):6.2f} s")
    print("\nlargest top-level imports of the driver (python -X importtime, cumulative, one run):")
    for pkg, s in top_imports(tree=tree):
        print(f"  {pkg:20s} {s:6.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wall", nargs="+", type=Path, metavar="TREE",
                   help="source trees to time whole commands of, alternating (e.g. an old checkout and this one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--executors", nargs="+", default=["auto"], choices=["auto", "ray", "local"],
                   help="for --wall: run each tree with each of these `--executor` values")
    p.add_argument("--tree", type=Path, default=REPO, help="the source tree the breakdown runs (default: this one)")
    p.add_argument("extra", nargs="*", help="extra `matting run` options for --wall (after --)")
    args = p.parse_args()
    if args.wall:
        run_wall([t.resolve() for t in args.wall], args.repeats, args.extra, args.executors)
    else:
        run_breakdown(args.repeats, args.tree.resolve())


if __name__ == "__main__":
    main()
