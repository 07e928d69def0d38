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

Speed: one process, one image at the model's input size, ONNX Runtime CPU sessions as the
runtime opens them (inter-op 1, intra-op = --threads), FP32 and INT8 interleaved, min over
--rounds of one predict() (normalisation + inference + output finishing). Timings on a shared,
loaded machine are noisy; the min is the least noisy statistic, and the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


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
    from pipelines.evaluation.evaluate import ModelChoice, evaluate, find_eval_set, parse_setting
    from postproc import PostprocParams

    rows = evaluate(find_eval_set(data), [ModelChoice("fp32", model), ModelChoice("int8", model, str(int8))],
                    [parse_setting("default", PostprocParams.create())], runtime="onnxruntime", device="cpu",
                    batch_size=4)
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
    rts = {"fp32": create_runtime(model, runtime="onnxruntime", device="cpu", threads=threads),
           "int8": create_runtime(model, runtime="onnxruntime", device="cpu", threads=threads, weights=int8)}
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["u2netp", "unet-small", "unet-base"])
    p.add_argument("--data", nargs="+", type=Path, default=[EVAL / "alphamatting27", EVAL / "ecssd60"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

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
