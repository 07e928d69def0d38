"""Which teacher should `matting train` distil from? The candidates' own figures on ../shared/eval.

    python bench/teacher.py [--data ../shared/eval/alphamatting27 ../shared/eval/ecssd60]
                            [--candidates u2netp u2netp:flip u2net u2net:flip u2net,u2netp u2net,u2netp:flip]
                            [--size 320] [--threads 2] [--json PATH]

A candidate is MODELS[:TTA] as `matting train --teacher MODELS --teacher-tta TTA` takes it (several
models are averaged). Each photo goes through the teacher exactly as the teacher cache does
(pipelines/training/teacher.py: every member's own input filter and size, its TTA, its alpha
resized to the cache size and averaged, then rounded to 8 bits as the cache stores it); the cached
alpha is then enlarged to the photo's size (bilinear) and scored with `matting eval`'s metrics
(pipelines/evaluation/evaluate.score): what the student is taught, as a cut-out. Members shared by
several candidates run once. The eval sets choose the teacher only: nothing is trained or tuned
on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.evaluation import metrics  # noqa: E402
from pipelines.evaluation.evaluate import find_eval_set, read_gray, score  # noqa: E402
from pipelines.training.teacher import Teacher, combine  # noqa: E402
from postproc import decode_image  # noqa: E402

DEFAULT_CANDIDATES = ["u2netp", "u2netp:flip", "u2net", "u2net:flip", "u2net,u2netp", "u2net,u2netp:flip"]


def parse_candidate(text: str, threads: int | None) -> Teacher:
    models, _, tta = text.partition(":")
    return Teacher.parse(models, tta=tta or "none", runtime="onnxruntime", device="cpu", threads=threads)


def member_key(cfg) -> str:
    return cfg.model_version


def run_set(root: Path, teachers: dict[str, Teacher], size: int) -> dict[str, dict]:
    eval_set = find_eval_set(root)
    members = {member_key(m): Teacher((m,)) for t in teachers.values() for m in t.members}
    opened = {k: t.open() for k, t in members.items()}
    rows = {name: {"per_image": [], "curves": []} for name in teachers}
    seconds = dict.fromkeys(members, 0.0)
    for s in eval_set.samples:
        photo = decode_image(s.image.read_bytes())
        gt = read_gray(s.alpha)
        trimap = read_gray(s.trimap) if s.trimap else None
        alphas = {}
        for k, o in opened.items():
            t0 = time.perf_counter()
            alphas[k] = o.mat([photo], size)[0]
            seconds[k] += time.perf_counter() - t0
        for name, teacher in teachers.items():
            a8 = (combine([alphas[member_key(m)] for m in teacher.members]) * 255).round().astype(np.uint8)
            full = cv2.resize(a8.astype(np.float32) / 255.0, (photo.width, photo.height), interpolation=cv2.INTER_LINEAR)
            values, curve = score(np.clip(full, 0.0, 1.0), gt, trimap)
            rows[name]["per_image"].append({"image": s.stem, **values})
            if curve is not None:
                rows[name]["curves"].append(curve)
    out = {}
    for name, teacher in teachers.items():
        per = rows[name]["per_image"]
        keys = [k for k in per[0] if k != "image"]
        mean = {k: float(np.mean([p[k] for p in per])) for k in keys}
        if rows[name]["curves"]:
            mean["maxf_set"] = metrics.max_f_of_set(rows[name]["curves"])
        mean["cpu_s_per_image"] = sum(seconds[member_key(m)] for m in teacher.members) / len(per)
        out[name] = {"images": len(per), "mean": mean, "per_image": per}
    return out


COLUMNS = [("sad", "SAD", 2), ("mse", "MSE", 4), ("mad", "MAD", 4), ("grad", "Grad", 2), ("conn", "Conn", 2),
           ("unk_sad", "SAD@trimap", 2), ("mae", "MAE", 4), ("maxf", "maxF (img)", 4), ("maxf_set", "maxF (set)", 4),
           ("cpu_s_per_image", "s/img", 2)]


def table(name: str, results: dict[str, dict]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r["mean"] for r in results.values())]
    lines = [f"{name}", "| teacher | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for cand, r in results.items():
        cells = [f"{r['mean'][k]:.{d}f}" if k in r["mean"] else "" for k, _, d in cols]
        lines.append(f"| {cand} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "eval" / s)
                                                  for s in ("alphamatting27", "ecssd60")])
    ap.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES)
    ap.add_argument("--size", type=int, default=320, help="the teacher cache's size")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write every figure, per image too")
    args = ap.parse_args()
    teachers = {c: parse_candidate(c, args.threads) for c in args.candidates}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, commit {commit}, "
          f"load {os.getloadavg()[0]:.2f}, cache size {args.size}², threads {args.threads}")
    everything = {}
    for d in args.data:
        t0 = time.perf_counter()
        results = run_set(Path(d), teachers, args.size)
        everything[Path(d).name] = results
        print(table(f"{Path(d).name} ({time.perf_counter() - t0:.0f} s)", results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
