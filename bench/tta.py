"""u2net vs u2netp and test-time augmentation: single-image latency, and whether multi-scale TTA pays.

    python bench/tta.py speed [--rounds 5] [--threads 1]
        Single-image latency (one 320² photo per call), min of N rounds, for u2netp and u2net, each
        with tta none and flip, interleaved round by round in ONE process, so the ratios compare like
        with like. Two clocks: wall time, and the process's CPU time (ONNX Runtime with one intra-op
        thread computes in the calling thread). On a box loaded by others the wall time mostly measures
        the queue for a core (2026-12-01: 13.5 s for a 0.5 s U²-Netp call at load 50) while the CPU
        time stays close to the work itself, so the ratios are taken from CPU time there.

    python bench/tta.py multiscale --data ../shared/eval/ecssd60 [--model u2netp] [--limit N]
        Quality of candidate multi-scale TTA modes against none and flip, scored exactly as `matting
        eval` scores (refine_alpha at full size, pipelines/evaluation/metrics.py): "scales" averages the model's
        answers at 256², 320² and 384² (each resized back to 320² before averaging), "flip+scales"
        does that for the photo and its mirror image. Only if one beats flip would it become a mode.

    python bench/tta.py stream --data ../shared/eval/alphamatting27 --models u2netp u2net \
        --setting default --setting cf:refine=trimap --out scores.jsonl
    python bench/tta.py summarize scores.jsonl
        `matting eval`'s scoring (the same decode, resize, model/tta.py, refine_alpha and metrics) with
        every model, TTA mode and setting done image by image, each score appended to a JSON-lines
        file as it is made: on a box too loaded for a whole run to finish, any prefix of the set is a
        like-for-like comparison, and `summarize` gives the means over the images every row has.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import tta  # noqa: E402
from model.runtimes import create_runtime  # noqa: E402
from model.specs import get_spec  # noqa: E402
from pipelines.evaluation.evaluate import find_eval_set, read_gray, score  # noqa: E402
from postproc import PostprocParams, decode_image, model_input  # noqa: E402
from postproc.render import refine_alpha  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "pipelines" / "samples"
SCALES = (256, 320, 384)


def speed(args) -> None:
    photo = model_input(decode_image((SAMPLES / "astronaut.jpg").read_bytes()), get_spec("u2netp").preprocess)[None]
    runtimes = {m: create_runtime(m, runtime="onnxruntime", device="cpu", threads=args.threads) for m in args.models}
    for rt in runtimes.values():  # untimed warm-up: first-call allocations
        tta.predict(rt, photo, "flip")
    wall = {(m, t): float("inf") for m in runtimes for t in tta.TTA_MODES}
    cpu = dict(wall)
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for (m, t) in wall:
            t0, c0 = time.perf_counter(), time.process_time()
            tta.predict(runtimes[m], photo, t)
            cpu[(m, t)] = min(cpu[(m, t)], time.process_time() - c0)
            wall[(m, t)] = min(wall[(m, t)], time.perf_counter() - t0)
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m}/{t} wall {wall[k] * 1000:.0f} ms cpu "
                                                          f"{cpu[k] * 1000:.0f} ms" for k in wall for m, t in [k]),
              flush=True)
    base = args.models[0], "none"
    print(f"\nsingle-image latency, min of {args.rounds} rounds, ONNX Runtime FP32 CPU, {args.threads} thread(s); "
          f"load average (1 min) during the run {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")
    print(f"| model | tta | CPU ms (min) | wall ms (min) | CPU vs {base[0]} none | wall vs {base[0]} none "
          "| flip vs none, CPU (same model) |")
    print("|---|---|---|---|---|---|---|")
    for (m, t) in wall:
        print(f"| {m} | {t} | {cpu[(m, t)] * 1000:.0f} | {wall[(m, t)] * 1000:.0f} | {cpu[(m, t)] / cpu[base]:.2f}× "
              f"| {wall[(m, t)] / wall[base]:.2f}× | {cpu[(m, t)] / cpu[(m, 'none')]:.2f}× |")


def views(rt, img) -> dict[tuple[int, bool], np.ndarray]:
    """The model's answer at each of SCALES, for the photo and its mirror image (flipped back), at 320²."""
    out = {}
    for s in SCALES:
        both = tta.predict_modes(rt, model_input(img, rt.spec.preprocess, (s, s))[None], ["none", "flip"])
        plain, flip = both["none"][0], both["flip"][0]
        mirrored = 2 * flip - plain  # flip = (plain + mirrored) / 2
        for key, p in (((s, False), plain), ((s, True), mirrored)):
            out[key] = p if s == 320 else cv2.resize(p, (320, 320), interpolation=cv2.INTER_LINEAR)
    return out


def multiscale(args) -> None:
    data = find_eval_set(args.data, limit=args.limit)
    rt = create_runtime(args.model, runtime="onnxruntime", device="cpu", threads=args.threads)
    params = PostprocParams()
    modes = ("none", "flip", "scales", "flip+scales")
    sums = {m: {} for m in modes}
    curves = {m: [] for m in modes}
    for k, s in enumerate(data.samples):
        img = decode_image(s.image.read_bytes())
        gt = read_gray(s.alpha)
        trimap = read_gray(s.trimap) if s.trimap else None
        v = views(rt, img)
        probs = {"none": v[(320, False)], "flip": (v[(320, False)] + v[(320, True)]) / 2,
                 "scales": np.mean([v[(s, False)] for s in SCALES], axis=0),
                 "flip+scales": np.mean(list(v.values()), axis=0)}
        for m, p in probs.items():
            values, curve = score(refine_alpha(p.astype(np.float32), img.height, img.width, params), gt, trimap)
            for key, v in values.items():
                sums[m][key] = sums[m].get(key, 0.0) + v
            if curve is not None:
                curves[m].append(curve)
        print(f"{k + 1}/{len(data.samples)} {s.stem}", flush=True)
    from pipelines.evaluation import metrics

    n = len(data.samples)
    keys = [k for k in ("sad", "mse", "grad", "conn", "unk_sad", "mae", "maxf") if k in sums["none"]]
    print(f"\n{data.root.name}, {n} images, {args.model}, ONNX Runtime FP32 CPU; scales {SCALES}")
    print("| tta | " + " | ".join(keys) + (" | maxF(set)" if curves["none"] else "") + " |")
    print("|---|" + "---|" * (len(keys) + (1 if curves["none"] else 0)))
    for m in modes:
        cells = [f"{sums[m][k] / n:.4f}" for k in keys]
        if curves[m]:
            cells.append(f"{metrics.max_f_of_set(curves[m]):.4f}")
        print(f"| {m} | " + " | ".join(cells) + " |")


def stream(args) -> None:
    import json

    from pipelines.evaluation.evaluate import parse_setting

    data = find_eval_set(args.data, limit=args.limit)
    settings = [parse_setting(t, PostprocParams()) for t in (args.setting or ["default"])]
    rts = {m: create_runtime(m, runtime="onnxruntime", device="cpu", threads=args.threads) for m in args.models}
    with open(args.out, "a") as out:
        for k, s in enumerate(data.samples):
            img = decode_image(s.image.read_bytes())
            gt = read_gray(s.alpha)
            trimap = read_gray(s.trimap) if s.trimap else None
            for m, rt in rts.items():
                t0 = time.process_time()
                probs = tta.predict_modes(rt, model_input(img, rt.spec.preprocess)[None], args.tta)
                cpu = time.process_time() - t0
                for mode, p in probs.items():
                    for st in settings:
                        matte = refine_alpha(p[0].astype(np.float32), img.height, img.width, st.params, rgb=img.rgb)
                        values, _ = score(matte, gt, trimap)
                        out.write(json.dumps({"set": data.root.name, "image": s.stem, "model": m, "tta": mode,
                                              "setting": st.name, "infer_cpu_s": cpu, **values}) + "\n")
                out.flush()
            print(f"{k + 1}/{len(data.samples)} {s.stem}", flush=True)


def summarize(args) -> None:
    import json
    from collections import defaultdict

    recs = [json.loads(line) for f in args.files for line in open(f) if line.strip()]
    rows = defaultdict(dict)
    for r in recs:
        rows[(r["set"], r["model"], r["tta"], r["setting"])][r["image"]] = r
    for st in sorted({k[0] for k in rows}):
        keys = [k for k in rows if k[0] == st]
        common = sorted(set.intersection(*(set(rows[k]) for k in keys)))
        cols = [c for c in ("sad", "mse", "grad", "conn", "unk_sad", "mae", "maxf")
                if common and all(c in rows[k][common[0]] for k in keys)]
        print(f"\n{st}: {len(common)} images every row has ({common[0]}..{common[-1]})" if common else f"\n{st}: none")
        print("| model | tta | setting | " + " | ".join(cols) + " |")
        print("|---|---|---|" + "---|" * len(cols))
        for k in sorted(keys, key=lambda k: (k[1], k[3], k[2])):
            cells = [f"{np.mean([rows[k][i][c] for i in common]):.4f}" for c in cols]
            print(f"| {k[1]} | {k[2]} | {k[3]} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--models", nargs="+", default=["u2netp", "u2net"])
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--threads", type=int, default=1)
    m = sub.add_parser("multiscale")
    m.add_argument("--data", required=True)
    m.add_argument("--model", default="u2netp")
    m.add_argument("--limit", type=int)
    m.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("stream")
    t.add_argument("--data", required=True)
    t.add_argument("--models", nargs="+", default=["u2netp", "u2net"])
    t.add_argument("--tta", nargs="+", default=["none", "flip"])
    t.add_argument("--setting", action="append")
    t.add_argument("--limit", type=int)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out", required=True)
    u = sub.add_parser("summarize")
    u.add_argument("files", nargs="+")
    args = p.parse_args()
    {"speed": speed, "multiscale": multiscale, "stream": stream, "summarize": summarize}[args.what](args)


if __name__ == "__main__":
    main()
