"""Student sizes for issue 17: the seed U-Net's width × input size against U²-Netp, inference speed only.

    python bench/student_sizes.py [--widths 16 24 32] [--inputs 256 288 320] [--rounds 7]
                                  [--device cpu|cuda] [--json PATH]

Every candidate is `architecture="unet"`, depth 5, at random weights (speed does not depend on the
weights; its INT8 file is calibrated on 8 training photos only to get a graph of the right shape,
with unet-base's recipe: first and last Conv FP32). On CPU each row is one ONNX Runtime session
with one intra-op thread at batch 1 (the in-process executor's layout: one session per core), in
FP32 and INT8; rounds are interleaved so that any load falls on all rows alike; the figure is the
median ms per image over rounds of `--images` photos, from `runtime.predict` (normalisation,
inference, sigmoid). U²-Netp runs the same way, its INT8 from the cache (`matting weights int8
u2netp`; FP32 only if it is not built). On CUDA: torch FP16 with CUDA graphs, batch 32.

The training half of the choice (held-out error per training minute) comes from the GPU lease
(bench/gpu_train_lease.sh); this script gives the other half.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.config import RuntimeConfig  # noqa: E402
from model.runtimes import create_runtime  # noqa: E402
from model.specs import ModelSpec, PreprocessSpec, get_spec  # noqa: E402
from postproc import decode_image, model_input  # noqa: E402


def candidate_spec(width: int, size: int, depth: int = 5) -> ModelSpec:
    return ModelSpec(name=f"unet-w{width}-{size}", version=f"unet-w{width}d{depth}-{size}-random",
                     architecture="unet", arch_kwargs={"base_width": width, "depth": depth},
                     preprocess=PreprocessSpec(input_size=(size, size), input_scale="unit", resize="pil_lanczos",
                                               output_activation="sigmoid", output_normalization="none"),
                     license="bench only", description="random weights, for timing")


def conv_gmacs(net, size: int) -> float:
    """Multiply-accumulates of one image's forward pass, counted on the Conv layers (≥ 98 % of the work)."""
    import torch

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * module.in_channels // module.groups * k

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total / 1e9


def save_candidate(spec: ModelSpec, folder: Path) -> tuple[Path, int, float]:
    import torch

    from model.factory import build_architecture
    from model.weights import save_safetensors

    torch.manual_seed(0)
    net = build_architecture(spec)
    params = sum(p.numel() for p in net.parameters())
    gmacs = conv_gmacs(net, spec.preprocess.input_size[0])
    return save_safetensors(net.state_dict(), spec, folder / f"{spec.name}.safetensors"), params, gmacs


def photos(spec: ModelSpec, n: int) -> np.ndarray:
    files = sorted((ROOT / "pipelines" / "samples").glob("*.jpg"))
    return np.stack([model_input(decode_image(files[i % len(files)].read_bytes()), spec.preprocess)
                     for i in range(n)])


def row(model: str, precision: str, params: int, gmacs: float, **runtime) -> dict:
    return {"model": model, "precision": precision, "params": params, "gmacs": gmacs,
            "rt": create_runtime(RuntimeConfig(model=model, precision=precision, **runtime))}


def u2netp_size() -> tuple[int, float]:
    from model.factory import create_model

    net = create_model("u2netp")  # the torch port of the same weights
    return sum(p.numel() for p in net.parameters()), conv_gmacs(net, 320)


def candidates(args, folder: Path):
    """(spec, checkpoint, parameters, GMACs) of every width × input, saved in `folder`."""
    for width in args.widths:
        for size in args.inputs:
            spec = candidate_spec(width, size)
            yield (spec, *save_candidate(spec, folder))


def cpu_rows(args, folder: Path) -> list[dict]:
    from model.quantize import Recipe, cpu_has_fast_int8, int8_built, int8_model_path

    cpu = dict(runtime="onnxruntime", device="cpu", threads=1)
    int8 = cpu_has_fast_int8()
    rows = [row("u2netp", "fp32", *u2netp_size(), **cpu)]
    if int8 and int8_built("u2netp"):
        rows.append(row("u2netp", "int8", *u2netp_size(), **cpu))
    # The candidates' INT8 files go to a folder of this run, not into the user's weights cache.
    os.environ["MATTING_WEIGHTS_DIR"] = str(folder)
    recipe = Recipe(method="minmax", photos=8, keep_fp32_convs=(0, -1))
    for spec, ckpt, params, gmacs in candidates(args, folder):
        rows.append(row(str(ckpt), "fp32", params, gmacs, **cpu))
        if int8:
            int8_model_path(spec, ckpt, recipe=recipe)  # built here, so the runtime finds it
            rows.append(row(str(ckpt), "int8", params, gmacs, **cpu))
    return rows


def cuda_rows(args, folder: Path) -> list[dict]:
    gpu = dict(runtime="torch", device="cuda")
    rows = [row("u2netp", "fp16", *u2netp_size(), **gpu)]
    rows += [row(str(ckpt), "fp16", params, gmacs, **gpu) for _, ckpt, params, gmacs in candidates(args, folder)]
    return rows


def time_rows(rows: list[dict], batch: int, images: int, rounds: int) -> None:
    for r in rows:
        r["x"] = photos(r["rt"].spec, batch)
        r["rt"].predict(r["x"])  # warm-up: first-call allocations, kernel choice, CUDA graph capture
        r["ms"] = []
    calls = max(1, images // batch)
    for _ in range(rounds):
        for r in rows:
            t = time.perf_counter()
            for _ in range(calls):
                r["rt"].predict(r["x"])
            r["ms"].append((time.perf_counter() - t) * 1000 / (calls * batch))


def report(rows: list[dict], device: str) -> list[dict]:
    base = {r["precision"]: statistics.median(r["ms"]) for r in rows if r["model"] == "u2netp"}  # the reference
    ref = base.get("fp32", base.get("fp16"))
    out = []
    for r in rows:
        ms = statistics.median(r["ms"])
        out.append({"model": r["rt"].spec.name, "precision": r["precision"], "params_M": round(r["params"] / 1e6, 2),
                    "GMACs": round(r["gmacs"], 2),
                    "ms_per_image": round(ms, 2), "spread": f"{min(r['ms']):.1f}–{max(r['ms']):.1f}",
                    "vs_u2netp_fp32" if device == "cpu" else "vs_u2netp_fp16": round(ref / ms, 2),
                    "vs_u2netp_same_precision": round(base[r["precision"]] / ms, 2) if r["precision"] in base else ""})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 24, 32])
    ap.add_argument("--inputs", type=int, nargs="+", default=[256, 288, 320])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--images", type=int, default=8, help="images per row per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    get_spec("u2netp")
    batch = 1 if args.device == "cpu" else 32
    with tempfile.TemporaryDirectory() as tmp:
        rows = (cpu_rows if args.device == "cpu" else cuda_rows)(args, Path(tmp))
        t0 = time.perf_counter()
        time_rows(rows, batch, max(args.images, batch), args.rounds)
        table = report(rows, args.device)
    head = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, load "
            f"{os.getloadavg()[0]:.2f}, batch {batch}, {args.rounds} rounds of {max(args.images, batch)} images, "
            f"{time.perf_counter() - t0:.0f} s timed")
    print(head)
    keys = list(table[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in table)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in table:
        print("  ".join(str(r[k]).ljust(widths[k]) for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps({"head": head, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
