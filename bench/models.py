"""Models side by side: CPU images/s in one run, and MAE/SAD against ground-truth alphas (a benchmark, not a test).

    python bench/models.py [--models u2netp unet-small] [--batch-size 8] [--threads 1] [--rounds 5]
                           [--data DIR ...] [--json PATH]

Speed: every (model, runtime) pair gets the same batch of the bundled sample photos
(pipelines/samples), resized to the model's own input size, as the job feeds it. Rounds are
interleaved (A, B, C, A, B, C, …) so that load from other users of a shared machine falls on all
of them alike; the figure is the median over rounds of batch_size / seconds per predict() call
(normalisation + inference + output finishing, no decoding). Every model runs on torch and on
ONNX Runtime (a torch checkpoint is exported in memory first, as `--runtime onnxruntime` does).
Models whose input is not 320² are also timed at 320², the same pixels as U²-Netp.

Quality: for each --data DIR holding image/ and alpha/ (same stems), each model mats every image
at its input size, the alpha is resized to full resolution as the job does, and
MAE = mean |α − α_gt| (α in [0, 1]) and SAD = Σ |α − α_gt| / 1000 are averaged over images.
(`matting eval` computes the full metric set; this is the stand-in until it is merged.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.config import RuntimeConfig  # noqa: E402
from model.runtimes import create_runtime  # noqa: E402
from postproc import decode_image, model_input  # noqa: E402
from postproc.alpha import to_full_resolution  # noqa: E402


def sample_batch(preprocess, size: tuple[int, int], n: int) -> np.ndarray:
    photos = sorted((ROOT / "pipelines" / "samples").glob("*.jpg"))
    return np.stack([model_input(decode_image(photos[i % len(photos)].read_bytes()), preprocess, size)
                     for i in range(n)])


def runtimes_for(models: list[str], threads: int | None):
    out = []
    for m in models:
        for kind in ("torch", "onnxruntime"):
            out.append((m, kind, create_runtime(RuntimeConfig(model=m, runtime=kind, device="cpu", threads=threads))))
    return out


def speed(runtimes, batch_size: int, rounds: int) -> list[dict]:
    cases = []
    for model, kind, rt in runtimes:
        sizes = [rt.input_size] + ([(320, 320)] if rt.input_size != (320, 320) else [])
        for size in sizes:
            cases.append({"model": model, "runtime": kind, "size": size, "rt": rt,
                          "batch": sample_batch(rt.spec.preprocess, size, batch_size), "times": []})
    for case in cases:  # warm-up: first-call allocations and kernel selection
        case["rt"].predict(case["batch"])
    for _ in range(rounds):
        for case in cases:
            t = time.perf_counter()
            case["rt"].predict(case["batch"])
            case["times"].append(time.perf_counter() - t)
    rows = []
    for case in cases:
        med = statistics.median(case["times"])
        rows.append({"model": case["model"], "runtime": case["runtime"], "input": f"{case['size'][0]}²",
                     "images_per_s": round(batch_size / med, 2),
                     "spread": f"{batch_size / max(case['times']):.2f}–{batch_size / min(case['times']):.2f}"})
    return rows


def quality(runtimes, data_dir: Path) -> list[dict]:
    images = sorted(p for p in (data_dir / "image").iterdir() if not p.name.startswith("."))
    alphas = {p.stem: p for p in (data_dir / "alpha").iterdir()}
    rows = []
    for model, kind, rt in runtimes:
        if kind != "onnxruntime":  # one runtime per model is enough: torch and ONNX Runtime agree to 1e-4
            continue
        mae, sad = [], []
        t0 = time.perf_counter()
        for p in images:
            img = decode_image(p.read_bytes())
            gt = cv2.imread(str(alphas[p.stem]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
            prob = rt.predict(model_input(img, rt.spec.preprocess)[None])[0]
            pred = to_full_resolution(prob, img.height, img.width).astype(np.float32) / 255.0
            diff = np.abs(pred - gt)
            mae.append(float(diff.mean()))
            sad.append(float(diff.sum() / 1000))
        rows.append({"data": data_dir.name, "model": model, "images": len(images), "MAE": round(np.mean(mae), 4),
                     "SAD": round(np.mean(sad), 2), "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["u2netp", "unet-small"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime (default 1)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", nargs="*", default=[], help="folders with image/ and alpha/")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}; threads {args.threads}, "
          f"batch {args.batch_size}, {args.rounds} interleaved rounds")
    runtimes = runtimes_for(args.models, args.threads)
    for _, _, rt in runtimes:
        print(" ", rt.describe())
    result = {"speed": speed(runtimes, args.batch_size, args.rounds)}
    print("\nimages/s on CPU (median over rounds; spread = slowest–fastest round)")
    print(table(result["speed"]))
    result["quality"] = [row for d in args.data for row in quality(runtimes, Path(d))]
    if result["quality"]:
        print("\nquality against ground truth, full resolution")
        print(table(result["quality"]))
    print(f"\nload average at the end {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
