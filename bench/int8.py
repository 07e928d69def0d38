"""INT8 vs FP32 on CPU: quality on both eval sets and single-image speed (issue 18, item 3).

    python bench/int8.py [--models u2netp unet-small unet-base] [--rounds 20] [--threads 1 2]
                         [--data ../shared/eval/alphamatting27 ../shared/eval/ecssd60] [--json PATH]
                         [--no-speed] [--no-quality]

Builds (or reuses) each model's INT8 file with its shipped recipe (model/quantize.py:
int8_model_path, calibrated on ../shared/train, never on the eval photos), then:

Quality: `matting eval`'s own code (pipelines/evaluation/evaluate.py: decode, model_input, the runtime's
predict, refine_alpha with default settings, pipelines/evaluation/metrics.py) on each eval set, FP32 (the
model's usual ONNX Runtime graph) and INT8 (the INT8 file through the same runtime). MAE is
`MAD` on alphamatting27 (soft ground truth) and `MAE` on ecssd60 (binary masks); "rel" is
INT8/FP32 − 1. These figures are deterministic.

Recipe selection (model/quantize.py's RECIPES were chosen this way, on TRAINING photos only):

    python bench/int8.py --models u2netp --select-calibrate 64      # one pass: every method's ranges
    python bench/int8.py --models u2netp --select-score 64:percentile99.999:large8+head+paths ...

The first calibrates on 64 photos of ../shared/train (the recipe's own picks) and writes one
ranges file per method (minmax, percentile 99.99/99.999/99.9999; entropy with --entropy) into
--work; the second quantizes each PHOTOS:CALIBRATION:KEEP variant from those ranges and scores it
against FP32 on 32 held-out training photos that no calibration set uses (held_out_photos): mean
and 99th percentile of |alpha_int8 − alpha_fp32|, and MAE against ccp_fullbody's person masks.

Speed: one process, one image at the model's input size, ONNX Runtime CPU sessions as the
runtime opens them (inter-op 1, intra-op = --threads), FP32 and INT8 interleaved, min over
--rounds of one predict() (normalisation + inference + output finishing). Timings on a shared,
loaded machine are noisy; the min is the least noisy statistic, and the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.quantize import cpu_has_fast_int8, int8_model_path  # noqa: E402
from model.runtimes import create_runtime  # noqa: E402
from model.specs import get_spec  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def quality(model: str, int8: Path, data: Path) -> dict:
    from model.config import RuntimeConfig
    from pipelines.evaluation.evaluate import ModelChoice, evaluate, find_eval_set, parse_setting
    from postproc import PostprocParams

    # precision="fp32" for both: the INT8 file is run as the file it is, and `auto` must not swap the
    # FP32 row for INT8 on a VNNI CPU where the model's int8_ok holds.
    run = dict(runtime="onnxruntime", device="cpu", precision="fp32")
    rows = evaluate(find_eval_set(data), [ModelChoice("fp32", RuntimeConfig(model=model, **run)),
                                          ModelChoice("int8", RuntimeConfig(model=model, weights=str(int8), **run))],
                    [parse_setting("default", PostprocParams.create())], batch_size=4)
    out = {}
    for r in rows:
        m = r.mean()
        mae = m.get("mae", m.get("mad"))
        out[r.model] = {"mae": mae, "sad": m["sad"], "maxf": m.get("maxf_set"), "n": len(r.ok)}
    out["rel_mae"] = out["int8"]["mae"] / out["fp32"]["mae"] - 1
    out["rel_sad"] = out["int8"]["sad"] / out["fp32"]["sad"] - 1
    return out


def speed(model: str, int8: Path, threads: int, rounds: int) -> dict:
    from pipelines.cli.common import SAMPLES
    from postproc import decode_image, model_input

    spec = get_spec(model)
    photo = sorted(SAMPLES.glob("*.jpg"))[0]
    img = model_input(decode_image(photo.read_bytes()), spec.preprocess)[None]
    run = dict(runtime="onnxruntime", device="cpu", threads=threads, precision="fp32")  # the files as they are
    rts = {"fp32": create_runtime(model, **run), "int8": create_runtime(model, weights=str(int8), **run)}
    times = {k: [] for k in rts}
    for rt in rts.values():
        rt.predict(img)  # warm-up
    for _ in range(rounds):
        for k, rt in rts.items():
            t0 = time.perf_counter()
            rt.predict(img)
            times[k].append(time.perf_counter() - t0)
    fp32, i8 = min(times["fp32"]), min(times["int8"])
    return {"fp32_ms": fp32 * 1e3, "int8_ms": i8 * 1e3, "speedup": fp32 / i8}


# -- recipe selection on held-out TRAINING photos (never the eval sets) -----------------------------

CALIBRATIONS = ("minmax", "percentile99.99", "percentile99.999", "percentile99.9999", "entropy")


def _calibrations(entropy: bool = False):
    """What one calibration pass computes. Entropy is opt-in (--entropy): its onnxruntime collector
    costs ~4 s of CPU a photo for U²-Netp, more than the model run and the others together."""
    from model.quantize import Calibration

    cals = [Calibration("minmax"), *(Calibration("percentile", p) for p in (99.99, 99.999, 99.9999))]
    return cals + [Calibration("entropy")] if entropy else cals


def select_calibrate(model: str, photos: int, work: Path, entropy: bool = False) -> None:
    """One pass over `photos` calibration photos → a ranges file per calibration method in `work`."""
    from model import quantize as q

    spec = get_spec(model)
    work.mkdir(parents=True, exist_ok=True)
    cals = _calibrations(entropy)
    if all((work / f"ranges-{photos}-{c.label}.json").is_file() for c in cals):
        return
    pre = work / "pre.onnx"
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        if not pre.is_file():
            os.replace(q.prepare_for_quantization(q.fp32_onnx(spec, q.fp32_source(spec)), Path(tmp)), pre)
        t0 = time.perf_counter()
        x = q.preprocess_photos(q.calibration_photos(photos), spec)
        ranges = q.calibrate(pre, x, cals, Path(tmp))
        for c, r in ranges.items():
            q.save_ranges(r, work / f"ranges-{photos}-{c.label}.json")
    print(f"calibrated {model} on {photos} photos ({', '.join(c.label for c in cals)}) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


def held_out_photos(people: int = 16, per_group: int = 4, exclude: tuple = (32, 64, 128)) -> list[Path]:
    """Training photos no calibration of `exclude` photos uses: `people` from ccp_fullbody (they have
    person masks) and `per_group` from every other folder, evenly spaced, deterministic."""
    from model.quantize import calibration_photos

    used = set().union(*(calibration_photos(n) for n in exclude))
    groups: dict[Path, list[Path]] = {}
    for p in calibration_photos(10 ** 6):
        if p not in used:
            groups.setdefault(p.parent, []).append(p)
    out = []
    for folder in sorted(groups):
        pool = sorted(groups[folder])
        if _mask_of(pool[0]) is not None:
            pool = [p for p in pool if _mask_of(p) is not None]
        k = people if _mask_of(pool[0]) is not None else per_group
        out += [pool[i] for i in np.linspace(0, len(pool) - 1, k + 2)[1:-1].round().astype(int)]
    return out


def _mask_of(photo: Path) -> Path | None:
    mask = photo.parent.parent / "mask" / f"{photo.stem}.png"
    return mask if photo.parent.name == "image" and mask.is_file() else None


def select_score(model: str, files: dict[str, Path], photos: list[Path], work: Path) -> dict:
    """Each INT8 file against FP32 on held-out training photos: mean and 99th percentile of
    |alpha_int8 − alpha_fp32| at the model's resolution (the runtime's predict), and MAE against the
    person masks (ccp_fullbody) after the default post-processing at full resolution, as `matting
    eval` scores it (refine_alpha, model/metrics.py)."""
    from pipelines.evaluation import metrics
    from pipelines.evaluation.evaluate import read_gray
    from postproc import PostprocParams, decode_image, model_input, refine_alpha

    spec = get_spec(model)
    decoded = [decode_image(p.read_bytes()) for p in photos]
    small = np.stack([model_input(d, spec.preprocess) for d in decoded])
    masks = {i: read_gray(_mask_of(p)) for i, p in enumerate(photos) if _mask_of(p) is not None}
    params = PostprocParams.create()

    def run(weights):
        rt = create_runtime(model, runtime="onnxruntime", device="cpu", precision="fp32", weights=weights)
        alpha = np.concatenate([rt.predict(small[i:i + 4]) for i in range(0, len(small), 4)])
        mae = [metrics.mae(refine_alpha(alpha[i].astype(np.float32), decoded[i].height, decoded[i].width, params,
                                        decoded[i].alpha, rgb=decoded[i].rgb), m) for i, m in masks.items()]
        return alpha, float(np.mean(mae))

    cached = work / f"fp32-{model}-{len(photos)}.npz"  # the FP32 reference, once per photo list
    key = np.array("\n".join(map(str, photos)))
    if cached.is_file() and str(np.load(cached)["photos"]) == str(key):
        ref, ref_mae = np.load(cached)["alpha"], float(np.load(cached)["mask_mae"])
    else:
        ref, ref_mae = run(None)
        np.savez(cached, alpha=ref, mask_mae=ref_mae, photos=key)
    out = {"fp32": {"mask_mae": ref_mae}}
    print(f"  {'fp32':<44} mask MAE {ref_mae:.5f}", flush=True)
    for label, path in files.items():
        alpha, mae = run(str(path))
        d = np.abs(alpha.astype(np.float64) - ref)
        out[label] = {"mean_abs_diff": float(d.mean()), "p99_abs_diff": float(np.percentile(d, 99)),
                      "mask_mae": mae, "mask_mae_rel": mae / ref_mae - 1}
        print(f"  {label:<44} mean |Δα| {d.mean():.5f}  p99 {np.percentile(d, 99):.4f}  mask MAE {mae:.5f} "
              f"({mae / ref_mae - 1:+.2%})", flush=True)
    return out


def select_variants(model: str, work: Path, variants: list[str], held: list[Path]) -> dict:
    """Build each variant 'PHOTOS:CALIBRATION:KEEP' from its ranges file and score it. KEEP is a
    '+'-joined list of: large16 / large8 (Convs with |weights| or |bias| over 16 / 8), head, paths,
    first (model/quantize.py: Recipe.keep_fp32_head, keep_fp32_paths; keep_fp32_convs=(0,))."""
    from model import quantize as q

    spec = get_spec(model)
    model_fp32 = q.fp32_onnx(spec, q.fp32_source(spec))
    cals = {c.label: c for c in _calibrations(entropy=True)}
    files = {}
    for v in variants:
        photos, cal, keep = v.split(":")
        c = cals[cal]
        parts = set(keep.split("+")) - {""}
        above = min((float(k[5:]) for k in parts if k.startswith("large")), default=None)
        recipe = q.Recipe(method=c.method, photos=int(photos), percentile=c.percentile, keep_fp32_above=above,
                          keep_fp32_head="head" in parts, keep_fp32_paths="paths" in parts,
                          keep_fp32_convs=(0,) if "first" in parts else ())
        out = work / f"variant-{v.replace(':', '_').replace('+', '-')}.onnx"
        if not out.is_file():
            part = out.with_suffix(".partial")
            q.quantize_with_ranges(work / "pre.onnx", part, recipe, work / f"ranges-{photos}-{cal}.json",
                                   q.convs_to_keep(model_fp32, recipe))
            os.replace(part, out)
        files[v] = out
    print(f"{model}: {len(held)} held-out training photos ({sum(_mask_of(p) is not None for p in held)} with "
          "person masks)", flush=True)
    return select_score(model, files, held, work)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["u2netp", "unet-small", "unet-base"])
    p.add_argument("--data", nargs="+", type=Path, default=[EVAL / "alphamatting27", EVAL / "ecssd60"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--select-calibrate", type=int, metavar="PHOTOS",
                   help="recipe selection, step 1: calibrate --models' first model on PHOTOS training photos "
                        "with every method into --work")
    p.add_argument("--entropy", action="store_true", help="with --select-calibrate: entropy calibration too")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "int8-select")
    p.add_argument("--select-score", nargs="+", metavar="PHOTOS:CALIBRATION:KEEP",
                   help="recipe selection, step 2: build each variant from --work's ranges and score it against "
                        f"FP32 on held-out training photos; CALIBRATION is one of {', '.join(CALIBRATIONS)}, "
                        "KEEP a '+'-joined list of large16, large8, head, paths, first (or '')")
    args = p.parse_args(argv)
    if args.select_score:
        res = select_variants(args.models[0], args.work, args.select_score, held_out_photos())
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return 0
    if args.select_calibrate:
        select_calibrate(args.models[0], args.select_calibrate, args.work, args.entropy)
        return 0

    print(f"CPU: {cpu_name()}; fast INT8 (VNNI/AMX): {cpu_has_fast_int8()}", flush=True)
    results = {}
    for model in args.models:
        t0 = time.perf_counter()
        int8 = int8_model_path(model)
        print(f"{model}: INT8 file {int8} ({time.perf_counter() - t0:.0f} s to build or find)", flush=True)
        res = results[model] = {"int8_file": str(int8)}
        if not args.no_quality:
            for data in args.data:
                q = res[data.name] = quality(model, int8, data)
                f, i = q["fp32"], q["int8"]
                maxf = (f" maxF {f['maxf']:.4f} → {i['maxf']:.4f}" if f["maxf"] is not None else "")
                print(f"  {data.name} (n={f['n']}): MAE {f['mae']:.4f} → {i['mae']:.4f} ({q['rel_mae']:+.1%}), "
                      f"SAD {f['sad']:.2f} → {i['sad']:.2f} ({q['rel_sad']:+.1%}){maxf}", flush=True)
        if not args.no_speed:
            for t in args.threads:
                s = res[f"speed_{t}t"] = speed(model, int8, t, args.rounds)
                print(f"  {t} thread(s), single image, min of {args.rounds}: FP32 {s['fp32_ms']:.0f} ms, "
                      f"INT8 {s['int8_ms']:.0f} ms, INT8 {s['speedup']:.2f}× FP32's speed", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
