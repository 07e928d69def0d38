"""`matting eval`: score models × post-processing settings on a folder with ground-truth alpha.

The folder holds image/ and alpha/ (files matched by stem, so GT01.png pairs with GT01.jpg) and,
optionally, trimaps in trimap/ or the first trimap*/ folder (alphamatting.com ships trimap1/
and trimap2/). Each image goes through exactly what the job does — decode_image + model_input,
the runtime's batched predict, refine_alpha at full resolution to a uint8 matte — and the
matte is scored with pipelines/evaluation/metrics.py over the whole image, inside the trimap's unknown band
(trimap == 128) when there is one, and with MAE and maxF when the ground truth is a binary mask.

Inference runs once per model; every setting re-runs only refine_alpha on the same
probabilities. images/s per (model, setting) = images / (decode + inference + refine seconds),
after one untimed warm-up batch; loading the model and computing metrics are not counted.

`tta` compares test-time augmentation modes side by side (model/tta.py): one inference call per
batch serves them all (the flipped copies ride along with the plain batch), and each mode's
images/s charges it the share of that call its images took (flip: all 2N, none: N of them).
A `report` (pipelines/evaluation/eval_report.py) receives every matte as it is scored, for the HTML page.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.evaluation import metrics
from model.config import RuntimeConfig
from postproc import PostprocParams, decode_image, model_input
from postproc.decode import DecodeError
from postproc.formats import PHOTO_EXTENSIONS
from postproc.render import refine_alpha

log = logging.getLogger(__name__)

# The settings that change the matte; colour, format, compression and decontamination (the
# colour at the edge) do not, so eval refuses them.
ALPHA_PARAMS = ("alpha_threshold", "erode", "feather", "refine", "trimap_fg", "trimap_bg", "trimap_erode",
                "guided_radius", "guided_eps", "refine_max_megapixels")
MATTING = ("sad", "mse", "mad", "grad", "conn")


# Preprocessing a --model entry may override (MODEL:resize=pil_lanczos,preshrink=0,upsample=cubic),
# to compare filters side by side on the same weights; the spec's own values are the default.
PREPROCESS_OVERRIDES = {"resize": str, "preshrink": float, "upsample": str}


@dataclass(frozen=True)
class ModelChoice:
    label: str
    config: RuntimeConfig  # the model, its weights and how to run it

    @property
    def name(self) -> str:
        return self.config.model

    @property
    def weights(self) -> str | None:
        return self.config.weights

    def spec(self):
        """The spec this entry runs: the model's own, with its preprocessing overrides applied."""
        return self.config.spec


def _split_overrides(arg: str) -> tuple[str, tuple[tuple[str, object], ...]]:
    """'u2netp=w.onnx:resize=area,preshrink=0' → ('u2netp=w.onnx', (('resize', 'area'), ('preshrink', 0.0)))."""
    head, sep, tail = arg.rpartition(":")
    if not sep or tail.partition("=")[0].strip() not in PREPROCESS_OVERRIDES:
        return arg, ()  # no overrides (an s3:// URI's colon is not followed by one of their keys)
    out = {}
    for part in filter(None, (p.strip() for p in tail.split(","))):
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq or key not in PREPROCESS_OVERRIDES:
            raise ValueError(f"--model {arg!r}: {part!r} is not KEY=VALUE with KEY one of "
                             f"{', '.join(PREPROCESS_OVERRIDES)}")
        try:
            out[key] = PREPROCESS_OVERRIDES[key](value)
        except ValueError:
            raise ValueError(f"--model {arg!r}: {key} must be a number, got {value!r}") from None
    return head, tuple(out.items())


def parse_model(arg: str, base: RuntimeConfig | None = None) -> ModelChoice:
    """'u2netp' → the registry's weights; 'u2netp=path/w.onnx' → that architecture with those weights;
    'path/w.safetensors' → the file's own spec (what `matting train` writes), as `matting run --model`.
    `base` carries the runtime flags (runtime, device, precision, …) every model runs with.
    Any of them may end in ':resize=FILTER,preshrink=K,upsample=FILTER' to override the spec's preprocessing."""
    base = base or RuntimeConfig()
    model, overrides = _split_overrides(arg)
    name, sep, weights = model.partition("=")
    if not sep and (Path(model).suffix or "/" in model):
        try:
            config = base.replace(model=model, weights=None, preprocess=overrides)
        except ValueError as e:  # a missing file raises WeightsNotFoundError (a FileNotFoundError) instead
            raise ValueError(f"--model {arg!r}: {e}; or say which registered model it is, "
                             f"e.g. --model u2netp={model}") from None
        label = Path(model).name
    else:
        config = base.replace(model=name.strip(), weights=weights.strip() if sep else None, preprocess=overrides)
        label = f"{name.strip()}={Path(weights).name}" if sep else name.strip()
    if overrides:
        label += ":" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides)
    return ModelChoice(label, config)


@dataclass(frozen=True)
class Setting:
    name: str
    params: PostprocParams


def parse_setting(text: str, base: PostprocParams) -> Setting:
    """'NAME:alpha_threshold=10,erode=2' → those values on top of `base`; 'NAME' alone → `base`."""
    name, sep, body = text.partition(":")
    if not sep and "=" in text:
        name, body = text, text  # 'erode=2' names itself
    name = name.strip()
    if not name:
        raise ValueError(f"--setting {text!r} needs a name before ':'")
    changes = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in ALPHA_PARAMS:
            raise ValueError(f"--setting {text!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(ALPHA_PARAMS)}")
        changes[key] = value.strip()
    try:  # typed and validated by PostprocParams, as the CLI's flags and Serve's parameters are
        return Setting(name, PostprocParams.from_strings(changes, base=base))
    except ValueError as e:
        raise ValueError(f"--setting {text!r}: {e}") from None


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    alpha: Path
    trimap: Path | None


@dataclass
class EvalSet:
    root: Path
    samples: list[Sample]
    trimap_dir: str | None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS and not p.name.startswith((".", "_")):
            if p.stem in out:
                raise ValueError(f"{folder} holds two files with the stem {p.stem!r}: {out[p.stem].name} and {p.name}")
            out[p.stem] = p
    return out


def find_eval_set(root: str | Path, trimap_dir: str | None = None, limit: int | None = None) -> EvalSet:
    root = Path(root)
    for sub in ("image", "alpha"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root} has no {sub}/ folder; an eval set holds image/ and alpha/ "
                                    "(matching file names) and optionally trimap/")
    images, alphas = _images_by_stem(root / "image"), _images_by_stem(root / "alpha")
    unmatched = sorted(set(images) ^ set(alphas))
    if unmatched:
        raise ValueError(f"{len(unmatched)} file(s) in {root} have no partner in image/ or alpha/: "
                         f"{', '.join(unmatched[:5])}{' …' if len(unmatched) > 5 else ''}")
    if not images:
        raise ValueError(f"{root}/image holds no images")
    if trimap_dir is None:
        candidates = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("trimap"))
        trimap_dir = "trimap" if "trimap" in candidates else (candidates[0] if candidates else None)
    elif not (root / trimap_dir).is_dir():
        raise FileNotFoundError(f"--trimap-dir {trimap_dir}: {root / trimap_dir} is not a folder")
    trimaps = _images_by_stem(root / trimap_dir) if trimap_dir else {}
    missing = sorted(set(images) - set(trimaps)) if trimap_dir else []
    if missing:
        raise ValueError(f"{root / trimap_dir} lacks trimaps for {', '.join(missing[:5])}")
    stems = sorted(images)[:limit] if limit else sorted(images)
    return EvalSet(root, [Sample(s, images[s], alphas[s], trimaps.get(s)) for s in stems], trimap_dir)


def read_gray(path: Path) -> np.ndarray:
    """A matte or trimap as (H, W) uint8: channel 0 of whatever the file stores (L, RGB, palette, 16-bit)."""
    return np.ascontiguousarray(decode_image(path.read_bytes()).rgb[..., 0])


@dataclass
class Row:
    """Scores of one (model, setting): per-image values plus the timings behind images/s."""
    model: str
    setting: str
    per_image: list[dict] = field(default_factory=list)
    tta: str = "none"  # test-time augmentation mode (model/tta.py)
    pr_curves: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    seconds: float = 0.0  # decode + inference + refine

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.per_image if r["status"] == "ok"]

    def mean(self) -> dict:
        ok = self.ok
        keys = [k for k in ok[0] if k not in ("image", "status", "error")] if ok else []
        out = {k: float(np.mean([r[k] for r in ok if r.get(k) is not None])) for k in keys
               if any(r.get(k) is not None for r in ok)}
        if self.pr_curves:
            out["maxf_set"] = metrics.max_f_of_set(self.pr_curves)
        out["images_per_s"] = len(ok) / self.seconds if self.seconds > 0 else float("nan")
        return out


def score(matte: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None) -> tuple[dict, tuple | None]:
    out = dict(metrics.matting_metrics(matte, gt))
    if trimap is not None:
        unknown = trimap == 128
        out.update({f"unk_{k}": v for k, v in metrics.matting_metrics(matte, gt, unknown).items()})
    curve = None
    if metrics.is_binary(gt):
        curve = metrics.precision_recall(matte, gt)
        out["mae"] = metrics.mae(matte, gt)
        out["maxf"] = float(metrics.f_measure(*curve).max())
    return out, curve


def _share_inference(models: list[ModelChoice]) -> list[list[ModelChoice]]:
    """Entries that differ only in `upsample` (how the alpha is enlarged, after inference) in one
    group: their model runs once on each batch, and each entry renders the probabilities its way."""
    def inference(c: ModelChoice) -> RuntimeConfig:
        return c.config.replace(preprocess=tuple((k, v) for k, v in c.config.preprocess if k != "upsample"))

    groups: list[list[ModelChoice]] = []
    for choice in models:
        group = next((g for g in groups if inference(g[0]) == inference(choice)), None)
        if group is None:
            groups.append([choice])
        else:
            group.append(choice)
    return groups


def evaluate(eval_set: EvalSet, models: list[ModelChoice], settings: list[Setting], *, batch_size: int = 8,
             s3_endpoint: str | None = None, tta: tuple[str, ...] = ("none",), report=None) -> list[Row]:
    """Each model runs as its ModelChoice's RuntimeConfig says (remote weights are fetched first);
    `tta` lists the test-time augmentation modes compared side by side, from one inference per batch."""
    from model import tta as tta_mod
    from model.runtimes import create_runtime
    from pipelines.storage import localize_weights

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ValueError(f"setting names must be distinct, got {names}")
    modes = [tta_mod.check_mode(m) for m in dict.fromkeys(tta)]
    # Share of each inference call a mode's images take: flip needs the plain and the mirrored half.
    infer_share = {m: 1.0 if m == "flip" or len(modes) == 1 else 0.5 for m in modes}
    rows = []
    for group in _share_inference(models):
        rt = create_runtime(localize_weights(group[0].config, s3_endpoint))
        log.info("eval %s: %s", ", ".join(c.label for c in group), rt.describe())
        # One row per (entry, mode, setting), with the alpha filter of its entry's spec.
        model_rows = [Row(c.label, s.name, tta=m) for c in group for m in modes for s in settings]
        row_settings = [s for _ in group for _ in modes for s in settings]
        row_upsample = [c.spec().preprocess.upsample for c in group for _ in modes for _ in settings]
        samples = eval_set.samples
        # Untimed warm-up: first-call allocations and kernel selection are not per-image costs.
        rt.predict(np.full((min(batch_size, len(samples)), *rt.input_size, 3), 128, np.uint8))
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            t0 = time.perf_counter()
            decoded, failed = [], {}
            for s in chunk:
                try:
                    decoded.append(decode_image(s.image.read_bytes()))
                except (DecodeError, OSError) as e:
                    decoded.append(None)
                    failed[s.stem] = f"image: {e}"
            good = [d for d in decoded if d is not None]
            t1 = time.perf_counter()
            small = np.stack([model_input(d, rt.spec.preprocess) for d in good]) if good else None
            t_decode = t1 - t0
            probs = tta_mod.predict_modes(rt, small, modes) if good else {}
            t_infer = time.perf_counter() - t1  # decode, resize and inference are shared by all settings
            index = {s.stem: i for i, s in enumerate(s for s, d in zip(chunk, decoded) if d is not None)}
            for s, d in zip(chunk, decoded):
                gt = trimap = None
                if d is not None:
                    try:
                        gt = read_gray(s.alpha)
                        trimap = read_gray(s.trimap) if s.trimap else None
                        for what, a in (("alpha", gt), ("trimap", trimap)):
                            if a is not None and a.shape != (d.height, d.width):
                                raise ValueError(f"{what} is {a.shape[1]}×{a.shape[0]}, the image "
                                                 f"{d.width}×{d.height}")
                    except (DecodeError, OSError, ValueError) as e:
                        failed[s.stem] = str(e)
                for row, setting, upsample in zip(model_rows, row_settings, row_upsample):
                    if s.stem in failed:
                        row.per_image.append({"image": s.stem, "status": "error", "error": failed[s.stem]})
                        continue
                    t2 = time.perf_counter()
                    prob = probs[row.tta][index[s.stem]]
                    matte = refine_alpha(prob.astype(np.float32), d.height, d.width, setting.params, d.alpha,
                                         rgb=d.rgb, upsample=upsample)
                    row.seconds += time.perf_counter() - t2
                    values, curve = score(matte, gt, trimap)
                    row.per_image.append({"image": s.stem, "status": "ok", "error": "", **values})
                    if curve is not None:
                        row.pr_curves.append(curve)
                    if report is not None:
                        report.add(s.stem, d, gt, row, matte)
            for row in model_rows:
                row.seconds += t_decode + t_infer * infer_share[row.tta]
            log.info("%s: %d/%d images (infer %.2f s for %d)", group[0].label, min(start + batch_size, len(samples)),
                     len(samples), time.perf_counter() - t1, len(good))
        rows.extend(model_rows)
    return rows


COLUMNS = [("sad", "SAD", "{:.2f}"), ("mse", "MSE", "{:.4f}"), ("mad", "MAD", "{:.4f}"), ("grad", "Grad", "{:.2f}"),
           ("conn", "Conn", "{:.2f}")]


def format_table(rows: list[Row], trimap_dir: str | None) -> str:
    """One line per (model, setting): whole-image means, unknown-region means, MAE/maxF, images/s."""
    head, body, left = table_cells(rows, trimap_dir)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) if i < left else x.rjust(w) for i, (x, w) in enumerate(zip(line, widths)))
             for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_cells(rows: list[Row], trimap_dir: str | None) -> tuple[list[str], list[list[str]], int]:
    """The metric table as text cells (header, one line per row, how many leading columns are labels):
    the terminal table and the HTML report show the same figures."""
    means = [r.mean() for r in rows]
    cols = [(k, f"{h}", f) for k, h, f in COLUMNS]
    if any("unk_sad" in m for m in means):
        cols += [(f"unk_{k}", f"{h}@{trimap_dir or 'trimap'}", f) for k, h, f in COLUMNS]
    if any("mae" in m for m in means):
        cols += [("mae", "MAE", "{:.4f}"), ("maxf", "maxF(img)", "{:.4f}"), ("maxf_set", "maxF(set)", "{:.4f}")]
    cols += [("images_per_s", "images/s", "{:.2f}")]
    with_tta = any(r.tta != "none" for r in rows)  # the tta column only when TTA is being compared
    head = ["model", *(["tta"] if with_tta else []), "setting", "n"] + [h for _, h, _ in cols]
    body = []
    for r, m in zip(rows, means):
        errors = len(r.per_image) - len(r.ok)
        n = f"{len(r.ok)}" + (f" ({errors} err)" if errors else "")
        body.append([r.model, *([r.tta] if with_tta else []), r.setting, n]
                    + [f.format(m[k]) if k in m else "-" for k, _, f in cols])
    return head, body, 4 if with_tta else 3


def write_csv(rows: list[Row], path: str | Path) -> None:
    """Per-image rows, then one 'mean' row per (model, setting) carrying maxF(set) and images/s."""
    records = []
    for r in rows:
        for p in r.per_image:
            records.append({"row": "image", "model": r.model, "tta": r.tta, "setting": r.setting, **p})
        records.append({"row": "mean", "model": r.model, "tta": r.tta, "setting": r.setting, "image": "",
                        "status": "", "error": "", "n": len(r.ok), **r.mean()})
    fields = ["row", "model", "tta", "setting", "image", "status", "error", "n"]
    for rec in records:
        fields += [k for k in rec if k not in fields]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(records)
