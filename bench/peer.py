"""rembg and `matting run` side by side, in one run: same photos, same U²-Netp file, our metric code.

    python bench/peer.py                        # quality on ../shared/eval/* and speed at N = 60 and 500
    python bench/peer.py --speed 8 --limit 8    # a quick end-to-end check
    python bench/peer.py --speed                # quality only

Set-up (once, under --work, default bench/.work/, git-ignored): a virtual environment with
`rembg[cpu,cli]==REMBG_VERSION` from PyPI (rembg is never our dependency), and a U2NET_HOME folder
whose u2netp.onnx is a link to the U²-Netp file our weights cache holds (`matting weights fetch
u2netp`), checked against the md5 rembg itself expects: both tools run the very same weights.

Quality (--sets): `rembg p -m u2netp IMAGES OUT` and `matting run IMAGES OUT` on each eval set's
image/ folder; the alpha channel of every cut-out is scored against alpha/ by pipelines/evaluation/evaluate.py's
`score` (pipelines/evaluation/metrics.py: SAD, MSE, MAD, Grad, Conn, the same in the trimap's unknown band, MAE and
maxF on binary masks), the table `matting eval` prints. The scores are deterministic.

Speed (--speed N ...): N photos at 1024×768 made from the eval sets' photos and masks (portraits
turned to landscape, then resized; beyond the distinct photos, flipped and re-encoded copies so no
two files are alike), both commands timed whole: start-up included, seconds to the first output
(watching the output folder), images/s over the whole command and at steady state (from the first
output to the last), the ratio, and both MAEs against the masks of the distinct photos (copies are
timed, not scored). Timings mean something only on a quiet machine: the machine, its CPU flags,
the date and the command are printed with them.

Our job runs with its defaults unless arguments follow `--`, e.g. `bench/peer.py -- --actors 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.evaluation import metrics  # noqa: E402
from model.specs import get_spec  # noqa: E402
from model.weights import md5_of, resolve  # noqa: E402
from pipelines.evaluation.evaluate import Row, find_eval_set, format_table, read_gray, score  # noqa: E402

REMBG_VERSION = "2.0.86"  # the version these figures were taken with
REMBG_U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"  # rembg/sessions/u2netp.py: the file it downloads
SPEED_SIZE = (768, 1024)  # (height, width)
DEFAULT_SETS = [ROOT.parent / "shared" / "eval" / "alphamatting27", ROOT.parent / "shared" / "eval" / "ecssd60"]


# -- set-up -------------------------------------------------------------------------------------

def rembg_venv(work: Path, version: str) -> Path:
    """The rembg command of a virtual environment under `work`, created and filled on first use."""
    venv = work / "rembg-venv"
    exe = venv / "bin" / "rembg"
    if not exe.is_file() or not list(venv.glob(f"lib/python*/site-packages/rembg-{version}.dist-info")):
        print(f"installing rembg[cpu,cli]=={version} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                        f"rembg[cpu,cli]=={version}"], check=True)
    return exe


def u2net_home(work: Path) -> Path:
    """A U2NET_HOME whose u2netp.onnx is our cached U²-Netp file (rembg's name, rembg's md5)."""
    ours = resolve(get_spec("u2netp"))  # raises with "matting weights fetch u2netp" when not cached
    got = md5_of(ours)
    if got != REMBG_U2NETP_MD5:
        raise RuntimeError(f"{ours} has md5 {got}, rembg's u2netp.onnx has {REMBG_U2NETP_MD5}: not the same weights")
    home = work / "u2net-home"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "u2netp.onnx"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ours)
    return home


def machine() -> dict:
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "?").strip()
        flags = set(fields.get("Flags", "").split())
        info["flags"] = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
                                 if f in flags) or "(none of avx2/avx512/vnni/amx)"
    except (OSError, subprocess.CalledProcessError) as e:
        info["cpu"] = f"lscpu failed: {e}"
    try:
        info["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = "?"
    return info


# -- running and timing -------------------------------------------------------------------------

def matting_command() -> list[str]:
    exe = Path(sys.executable).parent / "matting"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "pipelines.cli"]


def _outputs(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder) if e.is_file() and e.name.endswith(".png")
                and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


def run_timed(cmd: list[str], out: Path, expected: int, env: dict, log: Path) -> dict:
    """Run `cmd` whole, watching `out` for cut-outs: seconds to the first and the last, images/s."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seen: dict[str, float] = {}
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            now = time.perf_counter() - t0
            for name in _outputs(out) - seen.keys():
                seen[name] = now
            time.sleep(0.05)
        total = time.perf_counter() - t0
    for name in _outputs(out) - seen.keys():
        seen[name] = total
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}; log {log}:\n{tail}")
    if len(seen) != expected:
        raise RuntimeError(f"{shlex.join(cmd)} wrote {len(seen)} cut-outs, expected {expected} (log {log})")
    times = sorted(seen.values())
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    return {"seconds": total, "first_output_s": times[0], "images_per_s": expected / total,
            "steady_images_per_s": steady}


def run_both(images: Path, out: Path, n: int, tools: dict, extra: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rembg_cmd = [str(tools["rembg"]), "p", "-m", "u2netp", str(images), str(out / "rembg")]
    ours_cmd = [*matting_command(), "run", str(images), str(out / "ours"), *extra]
    return {"rembg": {"command": shlex.join(rembg_cmd),
                      **run_timed(rembg_cmd, out / "rembg", n, tools["rembg_env"], out / "rembg.log")},
            "ours": {"command": shlex.join(ours_cmd),
                     **run_timed(ours_cmd, out / "ours", n, tools["ours_env"], out / "ours.log")}}


def cutout_alpha(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The alpha channel of an RGBA cut-out (an opaque file counts as alpha 255)."""
    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if im is None:
        raise RuntimeError(f"cannot read cut-out {path}")
    a = im[..., 3] if im.ndim == 3 and im.shape[2] == 4 else np.full(im.shape[:2], 255, np.uint8)
    if a.shape != shape:
        raise RuntimeError(f"{path} is {a.shape[1]}×{a.shape[0]}, its photo {shape[1]}×{shape[0]}")
    return a


# -- quality on the eval sets -------------------------------------------------------------------

def quality(eval_dir: Path, work: Path, tools: dict, extra: list[str], limit: int | None) -> tuple[list[Row], dict]:
    data = find_eval_set(eval_dir, limit=limit)
    images = work / "sets" / data.root.name
    if limit:  # a folder of just those photos (links), so both tools see the same ones
        if images.exists():
            shutil.rmtree(images)
        images.mkdir(parents=True)
        for s in data.samples:
            (images / s.image.name).symlink_to(s.image.resolve())
    else:
        images = data.root / "image"
    timing = run_both(images, work / "out" / data.root.name, len(data.samples), tools, extra)
    rows = []
    for tool in ("rembg", "ours"):
        row = Row(f"{tool} u2netp", "default")
        row.seconds = timing[tool]["seconds"]  # images/s in the table: the whole command
        for s in data.samples:
            gt = read_gray(s.alpha)
            trimap = read_gray(s.trimap) if s.trimap else None
            matte = cutout_alpha(work / "out" / data.root.name / tool / f"{s.image.stem}.png", gt.shape)
            values, curve = score(matte, gt, trimap)
            row.per_image.append({"image": s.stem, "status": "ok", "error": "", **values})
            if curve is not None:
                row.pr_curves.append(curve)
        rows.append(row)
    return rows, {"set": data.root.name, "n": len(data.samples), "trimaps": data.trimap_dir, "timing": timing,
                  "means": {r.model: r.mean() for r in rows}}


# -- speed at 1024×768 --------------------------------------------------------------------------

def speed_photos(sets: list[Path], n: int, folder: Path) -> tuple[Path, list[tuple[str, Path]]]:
    """N JPEG photos at 1024×768 in folder/image and the masks of the distinct ones in folder/alpha."""
    sources = [s for d in sets for s in find_eval_set(d).samples]
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "image").mkdir(parents=True)
    (folder / "alpha").mkdir()
    h, w = SPEED_SIZE
    scored = []
    for i in range(n):
        s = sources[i % len(sources)]
        rgb = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
        alpha = read_gray(s.alpha)
        if rgb.shape[0] > rgb.shape[1]:  # portraits turned to landscape: resized, not squashed
            rgb, alpha = cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(alpha, cv2.ROTATE_90_CLOCKWISE)
        interp = cv2.INTER_AREA if rgb.shape[1] > w else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (w, h), interpolation=interp)
        copy = i // len(sources)
        if copy % 2:
            rgb = rgb[:, ::-1]
        name = f"{i:04d}"
        cv2.imwrite(str(folder / "image" / f"{name}.jpg"), rgb, [cv2.IMWRITE_JPEG_QUALITY, 92 - copy % 7])
        if copy == 0:  # only the distinct photos are scored
            cv2.imwrite(str(folder / "alpha" / f"{name}.png"), cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR))
            scored.append((name, folder / "alpha" / f"{name}.png"))
    return folder / "image", scored


def speed(sets: list[Path], n: int, work: Path, tools: dict, extra: list[str]) -> dict:
    images, scored = speed_photos(sets, n, work / f"speed-{n}")
    out = work / "out" / f"speed-{n}"
    timing = run_both(images, out, n, tools, extra)
    maes = {}
    for tool in ("rembg", "ours"):
        vals = []
        for name, mask in scored:
            gt = read_gray(mask)
            vals.append(metrics.mae(cutout_alpha(out / tool / f"{name}.png", gt.shape), gt))
        maes[tool] = float(np.mean(vals))
    return {"n": n, "scored": len(scored), "timing": timing, "mae": maes,
            "ratio_images_per_s": timing["ours"]["images_per_s"] / timing["rembg"]["images_per_s"]}


def print_speed(r: dict) -> None:
    t = r["timing"]
    print(f"\nspeed: {r['n']} photos at {SPEED_SIZE[1]}×{SPEED_SIZE[0]} (MAE on the {r['scored']} distinct ones)")
    print(f"{'tool':<8}{'whole s':>9}{'first output s':>16}{'images/s':>10}{'steady images/s':>17}{'MAE':>9}")
    for tool in ("rembg", "ours"):
        x = t[tool]
        print(f"{tool:<8}{x['seconds']:>9.1f}{x['first_output_s']:>16.1f}{x['images_per_s']:>10.2f}"
              f"{x['steady_images_per_s']:>17.2f}{r['mae'][tool]:>9.4f}")
    print(f"ours / rembg images/s: {r['ratio_images_per_s']:.2f}×; MAE ours / rembg: "
          f"{r['mae']['ours'] / r['mae']['rembg']:.3f}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="*", type=Path, default=DEFAULT_SETS,
                   help="eval sets (image/ + alpha/) to score both tools on; none: skip quality")
    p.add_argument("--speed", nargs="*", type=int, default=[60, 500], help="photo counts to time at 1024×768; "
                   "none: skip speed")
    p.add_argument("--limit", type=int, help="score only the first N photos of each set (a quick check)")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work", help="venv, links, photos and outputs")
    p.add_argument("--rembg-version", default=REMBG_VERSION)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    home = u2net_home(work)
    exe = rembg_venv(work, args.rembg_version)
    rembg_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    rembg_env["U2NET_HOME"] = str(home)
    tools = {"rembg": exe, "rembg_env": rembg_env, "ours_env": dict(os.environ)}
    info = machine()
    info["command"] = shlex.join([sys.executable, *sys.argv])
    info["rembg"] = args.rembg_version
    info["u2netp"] = str(home / "u2netp.onnx")
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    result: dict = {"machine": info, "quality": [], "speed": []}
    for d in args.sets:
        rows, summary = quality(d, work, tools, extra, args.limit)
        result["quality"].append(summary)
        print(f"\n{summary['set']}: {summary['n']} photos" + (f", trimaps {summary['trimaps']}/"
                                                             if summary["trimaps"] else ""))
        print(format_table(rows, summary["trimaps"]))
        t = summary["timing"]
        print("images/s: the whole command; seconds to first output: rembg "
              f"{t['rembg']['first_output_s']:.1f}, ours {t['ours']['first_output_s']:.1f}", flush=True)
    for n in args.speed:
        r = speed(args.sets or DEFAULT_SETS, n, work, tools, extra)
        result["speed"].append(r)
        print_speed(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
