"""Edge refinement measured side by side on a matting set (a benchmark, not a test).

    python bench/refine.py [--set ../shared/eval/alphamatting27] [--settings NAME,...] [--json PATH]
                           [--large-mp 24]

Method:
1. Each image of the set goes through U²-Netp exactly as the job runs it (decode_image →
   model_input → onnxruntime FP32 on CPU → to_full_resolution), once; the predictions are
   kept in memory and every setting refines the same raw matte.
2. Each setting is the job's own post-processing (postproc.render.refine_alpha with its
   PostprocParams), except "rembg defaults", which re-implements rembg's alpha_matting_cutout
   (scipy binary_erosion of alpha > 240 and alpha < 10 with a 10×10 square, border 1 for the
   background, then pymatting's estimate_alpha_cf on the whole image).
3. Metrics from pipelines/evaluation/metrics.py (what `matting eval` reports) on the whole image, alpha in
   [0, 1], mean over images: SAD, Grad, Conn as sums / 1000, MSE as a per-pixel mean; plus
   SAD_t, the SAD inside the set's own trimap1 unknown band (edge quality alone, the
   alphamatting.com convention). `matting eval --setting NAME:refine=trimap,...` scores the
   refining settings the same way; this script adds rembg's route, decontamination and timings.
4. s/MP: wall (and CPU: process_time, all threads) seconds of refine_alpha, plus decontaminate
   where it is on (rembg: its closed-form matting plus the foreground estimate its alpha matting
   always runs), per megapixel of input, summed over the set, pymatting's kernels loaded
   beforehand (warm-up not counted).
5. --large-mp N: each refining setting once more on one image of N MP (a set image resized up
   with its raw matte), to show the cost bound of the working resolution.
The machine may be shared: load averages are printed so that noisy timings can be recognised.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postproc import PostprocParams, decode_image, model_input  # noqa: E402
from postproc.render import refine_alpha  # noqa: E402

# ../shared beside the repository (a worktree one level deeper looks one more level up).
_SETS = [p / "shared" / "eval" / "alphamatting27" for p in (ROOT.parent, ROOT.parent.parent)]
DEFAULT_SET = next((p for p in _SETS if p.is_dir()), _SETS[0])

# name → PostprocParams keyword arguments (None: rembg's re-implementation)
SETTINGS: dict[str, dict | None] = {
    "raw": {},
    "rembg defaults (240/10, erode 10)": None,
    "trimap 240/10 e10 (rembg's band, disc)": {"refine": "trimap", "trimap_fg": 240, "trimap_bg": 10},
    "trimap 192/64 e10 (default)": {"refine": "trimap"},
    "trimap 128/127 e5": {"refine": "trimap", "trimap_fg": 128, "trimap_bg": 127, "trimap_erode": 5},
    "trimap 128/127 e10": {"refine": "trimap", "trimap_fg": 128, "trimap_bg": 127},
    "trimap 128/127 e20": {"refine": "trimap", "trimap_fg": 128, "trimap_bg": 127, "trimap_erode": 20},
    "guided r4 eps 1e-4": {"refine": "guided", "guided_radius": 4},
    "guided r8 eps 1e-4 (default)": {"refine": "guided"},
    "guided r8 eps 1e-3": {"refine": "guided", "guided_eps": 1e-3},
    "guided r16 eps 1e-3": {"refine": "guided", "guided_radius": 16, "guided_eps": 1e-3},
    "decontaminate only": {"decontaminate": True},
    "trimap (default) + decontaminate": {"refine": "trimap", "decontaminate": True},
}


# -- metrics (pipelines/evaluation/metrics.py, as `matting eval` computes them) ---------------------------------

def scores(pred_u8: np.ndarray, gt_u8: np.ndarray, unknown: np.ndarray | None) -> dict:
    from pipelines.evaluation import metrics

    m = metrics.matting_metrics(pred_u8, gt_u8)
    out = {"SAD": m["sad"], "MSE": m["mse"], "Grad": m["grad"], "Conn": m["conn"]}
    out["SAD_t"] = metrics.sad(pred_u8, gt_u8, unknown) if unknown is not None else float("nan")
    return out


# -- settings ----------------------------------------------------------------------------------

def rembg_alpha_matting(rgb: np.ndarray, raw: np.ndarray, fg: int = 240, bg: int = 10, erode: int = 10) -> np.ndarray:
    """rembg 2.0's alpha_matting_cutout, alpha part, on our raw matte."""
    from scipy.ndimage import binary_erosion

    from postproc.refine import load_pymatting

    pm = load_pymatting()
    structure = np.ones((erode, erode), np.uint8) if erode > 0 else None
    is_fg = binary_erosion(raw > fg, structure=structure)
    is_bg = binary_erosion(raw < bg, structure=structure, border_value=1)
    trimap = np.full(raw.shape, 128, np.uint8)
    trimap[is_fg] = 255
    trimap[is_bg] = 0
    alpha = pm.estimate_alpha_cf(rgb / 255.0, trimap / 255.0)
    return (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)


def load_set(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(stem, rgb, ground-truth alpha, the set's trimap1 unknown band or None)."""
    items = []
    for p in sorted((folder / "image").glob("*.png")) + sorted((folder / "image").glob("*.jpg")):
        gt_path = next(iter(sorted((folder / "alpha").glob(p.stem + ".*"))))
        rgb = decode_image(p.read_bytes()).rgb
        gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
        tri_path = folder / "trimap1" / (p.stem + ".png")
        unknown = None
        if tri_path.is_file():
            tri = np.asarray(decode_image(tri_path.read_bytes()).rgb[..., 0])
            unknown = (tri > 0) & (tri < 255)
        items.append((p.stem, rgb, gt, unknown))
    return items


def predict(items, runtime) -> list[np.ndarray]:
    from postproc.decode import DecodedImage

    probs = []
    for _, rgb, _, _ in items:
        small = model_input(DecodedImage(rgb, None, "PNG"), runtime.spec.preprocess)
        probs.append(runtime.predict(small[None])[0])
    return probs


def run_setting(kwargs: dict | None, rgb: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The matte of one setting, and the wall and CPU seconds it took (decontamination included where on)."""
    from postproc.refine import decontaminate, load_pymatting

    h, w = rgb.shape[:2]
    t0, c0 = time.perf_counter(), time.process_time()
    if kwargs is None:
        from postproc.alpha import to_full_resolution

        alpha = rembg_alpha_matting(rgb, to_full_resolution(prob, h, w))
        # rembg's alpha matting always estimates the foreground colour too: part of its cost.
        load_pymatting().estimate_foreground_ml(rgb / 255.0, alpha / 255.0)
    else:
        params = PostprocParams.create(**kwargs)
        alpha = refine_alpha(prob, h, w, params, rgb=rgb)
        if params.decontaminate:  # what compose_and_encode does before encoding
            decontaminate(rgb, alpha, max_pixels=int(params.refine_max_megapixels * 1e6))
    return alpha, time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, default=DEFAULT_SET)
    ap.add_argument("--settings", help="comma-separated names (default: all); or JSON {name: kwargs}")
    ap.add_argument("--extra", help="JSON {name: PostprocParams kwargs} added to the settings")
    ap.add_argument("--large-mp", type=float, default=0.0, help="also time each setting on one image of N MP")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from model.runtimes import create_runtime
    from postproc.refine import warm_up

    settings = dict(SETTINGS)
    if args.extra:
        settings.update(json.loads(args.extra))
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings.split(",")}
    print(f"set {args.set}; loadavg {os.getloadavg()[0]:.2f}; cores {os.cpu_count()}", flush=True)
    print(f"pymatting warm-up (cached kernels load) {warm_up():.1f} s", flush=True)
    items = load_set(args.set)
    if not items:
        raise SystemExit(f"no images under {args.set}/image")
    runtime = create_runtime("u2netp", runtime="onnxruntime", device="cpu")
    probs = predict(items, runtime)
    mp = sum(rgb.shape[0] * rgb.shape[1] for _, rgb, _, _ in items) / 1e6
    print(f"{len(items)} images, {mp:.2f} MP in all; {runtime.describe()}", flush=True)

    rows = []
    for name, kwargs in settings.items():
        per_image, seconds, cpu = [], 0.0, 0.0
        for (stem, rgb, gt, unknown), prob in zip(items, probs):
            alpha, dt, dc = run_setting(kwargs, rgb, prob)
            seconds, cpu = seconds + dt, cpu + dc
            per_image.append({"image": stem, **scores(alpha, gt, unknown), "s": dt, "cpu_s": dc})
        mean = {k: float(np.mean([r[k] for r in per_image])) for k in ("SAD", "MSE", "Grad", "Conn", "SAD_t")}
        rows.append({"setting": name, "kwargs": kwargs, **mean, "s_per_mp": seconds / mp, "cpu_s_per_mp": cpu / mp,
                     "per_image": per_image})
        print(f"{name:<44} SAD {mean['SAD']:7.2f}  MSE {mean['MSE']:7.4f}  Grad {mean['Grad']:7.2f}  "
              f"Conn {mean['Conn']:7.2f}  SAD_t {mean['SAD_t']:6.2f}  {seconds / mp:6.3f} s/MP  "
              f"CPU {cpu / mp:6.3f} s/MP "
              f"(loadavg {os.getloadavg()[0]:.1f})", flush=True)

    if rows and rows[0]["setting"] == "raw":
        raw = rows[0]
        print("\nagainst raw: whole-image SAD change; images where SAD is lower; median per-image change:")
        for r in rows[1:]:
            change = [(b["SAD"] - a["SAD"]) / a["SAD"] for a, b in zip(raw["per_image"], r["per_image"])]
            print(f"  {r['setting']:<44} {100 * (r['SAD'] - raw['SAD']) / raw['SAD']:+6.1f} %  "
                  f"{sum(c < 0 for c in change):2d}/{len(change)}  {100 * float(np.median(change)):+6.1f} %")

    large = []
    if args.large_mp:
        stem, rgb, _, _ = items[0]
        s = np.sqrt(args.large_mp * 1e6 / (rgb.shape[0] * rgb.shape[1]))
        big = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
        print(f"\none {big.shape[1]}×{big.shape[0]} image ({big.shape[0] * big.shape[1] / 1e6:.1f} MP, "
              f"{stem} resized up):")
        for name, kwargs in settings.items():
            if kwargs is None:
                continue  # rembg's route solves on the whole image: not bounded
            _, dt, dc = run_setting(kwargs, big, probs[0])
            large.append({"setting": name, "seconds": dt, "cpu_seconds": dc})
            print(f"  {name:<44} {dt:7.2f} s  CPU {dc:7.2f} s  (loadavg {os.getloadavg()[0]:.1f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"set": str(args.set), "rows": rows, "large": large}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
