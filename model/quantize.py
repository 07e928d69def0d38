"""INT8 models for CPUs with fast integer dot products: built once, checksummed, cached.

ONNX Runtime's static quantization (QDQ format, per-channel INT8 weights, UINT8 activations)
calibrated on training photos preprocessed exactly as inference preprocesses them (the model's
own spec). `int8_model_path(spec, fp32_onnx_path)` returns the cached INT8 file, building it
on a miss; `matting weights int8 NAME` builds it at set-up so that no worker builds it at job
start. The cache key holds what the file depends on: the FP32 source's checksum, the recipe
(and RECIPE_VERSION), onnxruntime's version and an explicitly named calibration folder (the
photos used are listed in the file's metadata; a reader needs none of them). Each INT8 file
has a `.sha256` beside it; a file that no longer matches is rebuilt, never used.

Which recipe, and why (bench/RESULTS.md, INT8 section, has the figures): see RECIPES.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model import weights as weights_mod
from model.atomic import atomic_path, write_bytes_atomic
from model.specs import ModelSpec, get_spec

log = logging.getLogger(__name__)

# Bump when the code that turns a recipe into a file changes what it writes.
RECIPE_VERSION = 2  # 2: one-pass calibration (calibrate), head and carried paths kept FP32
QDQ_MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (axis attribute)
CALIBRATION_ENV = "MATTING_CALIBRATION_DIR"
# ../shared/train beside the checkout: the project's training photos (never ../shared/eval).
DEFAULT_CALIBRATION_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "train"


@dataclass(frozen=True)
class Recipe:
    """How one model is quantized. Everything here is part of the cache key."""

    method: str = "minmax"  # minmax | entropy | percentile (onnxruntime CalibrationMethod)
    photos: int = 64  # calibration photos, spread over the calibration folder's subfolders
    per_channel: bool = True
    activation_type: str = "uint8"  # uint8 | int8
    weight_type: str = "int8"  # int8 | uint8
    reduce_range: bool = False  # 7-bit weights: only for CPUs without VNNI (AVX2 u8s8 saturation)
    # Conv nodes kept in FP32, by position among the graph's Conv nodes (negative from the end)
    # or by name: stable for a given FP32 file, which the cache key pins.
    keep_fp32_convs: tuple = ()
    # Keep FP32 every Conv whose weight or bias magnitude exceeds this (None: none by magnitude).
    keep_fp32_above: float | None = None
    # Keep the output head FP32: the Convs with one output channel (logits: U²-Net's six side
    # outputs and its fuse Conv) and the Resize, Concat and Sigmoid nodes that only carry them.
    keep_fp32_head: bool = False
    # Keep FP32 also what carries the kept Convs' outputs to the next Conv (Relu, Resize, MaxPool,
    # Concat, Add): a Conv kept FP32 for its large range still hands that range on, and quantizing
    # it there costs what quantizing the Conv would (float_paths).
    keep_fp32_paths: bool = False
    percentile: float = 99.999  # percentile only
    bins: int | None = None  # entropy/percentile histogram bins; None: onnxruntime's default (128 / 2048)
    extra_options: tuple = ()  # (key, value) pairs for quantize_static's extra_options

    def __post_init__(self) -> None:
        if self.method not in ("minmax", "entropy", "percentile"):
            raise ValueError(f"method must be minmax, entropy or percentile, got {self.method!r}")
        if self.activation_type not in ("uint8", "int8") or self.weight_type not in ("uint8", "int8"):
            raise ValueError("activation_type and weight_type must be uint8 or int8")
        if self.photos < 1:
            raise ValueError(f"photos must be at least 1, got {self.photos}")


DEFAULT_RECIPE = Recipe()
# Per registered model; a model without a row uses DEFAULT_RECIPE.
RECIPES: dict[str, Recipe] = {
    # Chosen on 32 held-out training photos (bench/RESULTS.md, INT8 section: mean |Δalpha| against
    # FP32, 99th percentile, and MAE against person masks), never on the eval sets. The Convs whose
    # folded-BatchNorm weights or biases exceed 8 (biases up to 1361) stay FP32, and so do the
    # Relu/Resize/Concat/Add nodes carrying their outputs (activations up to 228) to the next Conv:
    # the Conv after each cancels large terms and amplifies any 8-bit rounding of them. The output
    # head (1-channel logits, where an 8-bit step is ~0.05 of alpha at the edges) stays FP32 too.
    # With those in float, percentile calibration (99.999) on 64 photos gave held-out mean |Δalpha|
    # 0.00093 (p99 0.024), against 0.00183 (0.044) for the previous recipe (Convs over 16 only,
    # MinMax, 32 photos); without the carried paths in float, percentile clipped them and collapsed.
    "u2netp": Recipe(method="percentile", percentile=99.999, photos=64, keep_fp32_above=8.0, keep_fp32_paths=True,
                     keep_fp32_head=True),
    # Our U-Nets quantize whole (held-out mean |Δalpha| 0.0040 small, 0.0035 base); keeping the
    # first Conv (RGB in) and the 1×1 head FP32 brought it to 0.0028 / 0.0025 and the worst
    # pixel from 0.53 / 0.41 to 0.13 / 0.18, for two of 19 Convs.
    "unet-small": Recipe(method="minmax", photos=32, keep_fp32_convs=(0, -1)),
    "unet-base": Recipe(method="minmax", photos=32, keep_fp32_convs=(0, -1)),
}


def recipe_for(spec: ModelSpec) -> Recipe:
    return RECIPES.get(spec.name, DEFAULT_RECIPE)


# -- the CPU -------------------------------------------------------------------------------------

FAST_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# MATTING_CPU_INT8=0: treat this CPU as one without fast INT8, so `auto` runs FP32 (an opt-out for
# operators, and what the test suite sets so that tests meaning FP32 run FP32 on any CPU).
CPU_INT8_ENV = "MATTING_CPU_INT8"


def cpu_has_fast_int8(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU has fast u8×s8 dot products: AVX-512 VNNI, AVX-VNNI or AMX-INT8.

    Linux: the flags line of /proc/cpuinfo. Elsewhere (macOS, Windows, or no readable cpuinfo)
    the answer is False, so callers fall back to FP32: always correct, at worst slower. Our
    quality bound was measured on x86 VNNI kernels only; arm64's dot-product kernels round
    differently and are not claimed here. MATTING_CPU_INT8=0 makes the answer False.
    """
    if os.environ.get(CPU_INT8_ENV, "").strip() == "0":
        return False
    path = Path(cpuinfo)
    if platform.system() != "Linux" and str(cpuinfo) == "/proc/cpuinfo":
        return False
    try:
        text = path.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return any(f in flags for f in FAST_INT8_FLAGS)
    return False


# -- calibration ---------------------------------------------------------------------------------


def calibration_photos(n: int, folder: str | os.PathLike | None = None) -> list[Path]:
    """n photos from the calibration folder, round-robin over its subfolders, deterministic.

    Masks (any path with a folder named mask*) are skipped: they are not photos.
    """
    root = Path(folder or os.environ.get(CALIBRATION_ENV) or DEFAULT_CALIBRATION_DIR).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"calibration folder {root} does not exist: INT8 calibration needs photos like "
                                f"the ones the model will see. Pass --calibration DIR (or set {CALIBRATION_ENV}); "
                                "never the eval photos.")
    if "eval" in root.resolve().parts:
        raise ValueError(f"{root} looks like an eval set; calibrate on training photos, never on eval photos")
    from postproc.formats import PHOTO_EXTENSIONS  # the one list of photo extensions (lazy, like decoding)

    groups: dict[Path, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if (p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS and not p.name.startswith(".")
                and not any(part.lower().startswith("mask") for part in rel[:-1])):
            groups.setdefault(p.parent, []).append(p)
    if not groups:
        raise FileNotFoundError(f"calibration folder {root} holds no photos ({', '.join(sorted(PHOTO_EXTENSIONS))})")
    pools = [groups[k] for k in sorted(groups)]
    picked: list[Path] = []
    # Evenly spaced within each pool (not the first n: those are often one category).
    per_pool = [np.linspace(0, len(pool) - 1, num=min(len(pool), -(-n // len(pools)) + 1)).round().astype(int)
                for pool in pools]
    i = 0
    while len(picked) < min(n, sum(len(p) for p in pools)):
        k, j = i % len(pools), i // len(pools)
        if j < len(per_pool[k]):
            picked.append(pools[k][per_pool[k][j]])
        elif all(i // len(pools) >= len(q) for q in per_pool):
            break
        i += 1
    return picked[:n]


def preprocess_photos(paths: Sequence[Path], spec: ModelSpec) -> np.ndarray:
    """(N, 3, H, W) float32: decode, resize and normalise as inference does (the spec's own steps)."""
    from model.preprocess import normalize_batch
    from postproc import decode_image, model_input

    images = [model_input(decode_image(Path(p).read_bytes()), spec.preprocess) for p in paths]
    return normalize_batch(np.stack(images), spec.preprocess)


# -- building ------------------------------------------------------------------------------------


def fp32_source(spec: ModelSpec, fp32_onnx_path: str | os.PathLike | None = None) -> Path:
    """The file the INT8 model derives from: the path given, else the spec's own weights."""
    if fp32_onnx_path is not None:
        p = Path(fp32_onnx_path).expanduser()
        if not p.is_file():
            raise weights_mod.WeightsNotFoundError(f"FP32 model file {p} does not exist")
        return p
    return weights_mod.resolve(spec)


def fp32_onnx(spec: ModelSpec, source: Path):
    """The FP32 graph as an onnx.ModelProto at opset ≥ 13 with one output (the alpha), static input size.

    A non-ONNX source (our safetensors checkpoints) is exported in memory, as the runtime does.
    The batch stays symbolic; height and width are fixed to the spec's input size, which is what
    the runtime feeds and what the calibration saw.
    """
    import onnx
    from onnx import version_converter

    if source.suffix == ".onnx":
        model = onnx.load(str(source))
    else:
        from model.export import torch_to_onnx
        from model.factory import create_model

        net = create_model(spec, weights=source)
        model = torch_to_onnx(net, input_size=spec.preprocess.input_size, opset=17, dynamic_hw=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < QDQ_MIN_OPSET:
        model = version_converter.convert_version(model, QDQ_MIN_OPSET)
    # Only the first output is used (model/runtimes/); U²-Net's six side outputs are dropped so
    # that their Sigmoids are neither calibrated nor run.
    del model.graph.output[1:]
    h, w = spec.preprocess.input_size
    for value in [*model.graph.input[:1], *model.graph.output[:1]]:
        dims = value.type.tensor_type.shape.dim
        for i, v in ((0, "batch"), (2, h), (3, w)):
            if isinstance(v, str):
                dims[i].dim_param = v
            else:
                dims[i].dim_value = v
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"  # nodes_to_exclude matches by name
    return model


def convs_to_keep(model, recipe: Recipe) -> list[str]:
    """Names of the Conv nodes the recipe keeps in FP32."""
    from model.export import large_valued_convs

    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    keep = []
    for k in recipe.keep_fp32_convs:
        name = convs[k] if isinstance(k, int) else k
        if name not in convs:
            raise ValueError(f"recipe keeps Conv {k!r} in FP32, but the graph has no such Conv ({len(convs)} Convs)")
        keep.append(name)
    if recipe.keep_fp32_above is not None:
        keep += large_valued_convs(model, recipe.keep_fp32_above)
    keep = sorted(set(keep), key=convs.index)
    if recipe.keep_fp32_paths:
        keep += [n for n in float_paths(model, keep) if n not in keep]
    if recipe.keep_fp32_head:
        keep += [n for n in head_nodes(model) if n not in keep]
    return keep


CARRIERS = ("Relu", "Resize", "Upsample", "MaxPool", "Concat", "Add")  # data ops between Convs


def float_paths(model, convs: Sequence[str]) -> list[str]:
    """The nodes that carry the outputs of `convs` on to the next Conv (CARRIERS only), in graph order."""
    start = set(convs)
    carried: set[str] = set()  # tensor names on such a path
    names = []
    for node in model.graph.node:
        if node.name in start:
            carried.update(node.output)
        elif node.op_type in CARRIERS and any(i in carried for i in node.input):
            carried.update(node.output)
            names.append(node.name)
    return names


def head_nodes(model, max_channels: int = 1) -> list[str]:
    """The output head: Convs with at most `max_channels` output channels, and the Resize, Concat, Add,
    Mul, Sigmoid and Relu nodes whose data inputs all come from the head, in graph order.

    Why: these tensors are logits. An 8-bit logit over U²-Netp's side-output range (about −34 to
    +37) moves in steps of ~0.28, which at the sigmoid's midpoint is ~0.07 of alpha: exactly at the
    soft edges that matting metrics weigh. The head is 1-channel maps, a negligible share of the work.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    head: set[str] = set()  # tensor names produced by head nodes
    names = []
    for node in model.graph.node:  # topologically sorted, as ONNX requires
        if node.op_type == "Conv" and node.input[1] in inits:
            narrow = numpy_helper.to_array(inits[node.input[1]]).shape[0] <= max_channels
        elif node.op_type in ("Concat", "Add", "Mul"):
            data = [i for i in node.input if i and i not in inits]
            narrow = bool(data) and all(i in head for i in data)
        elif node.op_type in ("Resize", "Upsample", "Sigmoid", "Relu"):
            narrow = node.input[0] in head
        else:
            narrow = False
        if narrow:
            head.update(node.output)
            names.append(node.name)
    return names


def quantize(spec: ModelSpec, source: Path, output: Path, recipe: Recipe,
             calibration_dir: str | os.PathLike | None = None, ranges_cache: str | os.PathLike | None = None) -> dict:
    """Write the INT8 QDQ model to `output`; returns what was done (for the log and the sidecar).

    `ranges_cache`: a JSON file of calibrated tensor ranges (onnxruntime's calibration cache),
    written on the first call and read on later ones: for trying exclusions without
    recalibrating; it must come from the same source, recipe method and photos.
    """
    t0 = time.perf_counter()
    model = fp32_onnx(spec, source)
    photos = calibration_photos(recipe.photos, calibration_dir)
    keep = convs_to_keep(model, recipe)
    with tempfile.TemporaryDirectory() as tmp:
        pre_path = prepare_for_quantization(model, Path(tmp))
        cache = Path(ranges_cache) if ranges_cache else Path(tmp) / "ranges.json"
        if not cache.is_file():
            x = preprocess_photos(photos, spec)
            ranges = calibrate(pre_path, x, [calibration_of(recipe)], Path(tmp))
            save_ranges(next(iter(ranges.values())), cache)
        quantize_with_ranges(pre_path, output, recipe, cache, keep)
    return {"calibration_photos": [f"{p.parent.name}/{p.name}" for p in photos], "kept_fp32": keep,
            "seconds": round(time.perf_counter() - t0, 1)}


def prepare_for_quantization(model, folder: Path) -> Path:
    """The FP32 graph after onnxruntime's pre-processing (shape inference and graph optimisations, as
    its docs advise before quantizing), saved in `folder`; calibration and quantization both read it."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, pre_path = folder / "fp32.onnx", folder / "pre.onnx"
    onnx.save(model, str(fp32_path))
    quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=False)
    return pre_path


def quantize_with_ranges(pre_path: Path, output: Path, recipe: Recipe, ranges: Path, keep: Sequence[str]) -> None:
    """quantize_static on calibrated ranges (no calibration here), then the float Convs shielded."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    quantize_static(str(pre_path), str(output), None, quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel,
                    reduce_range=recipe.reduce_range, activation_type=types[recipe.activation_type],
                    weight_type=types[recipe.weight_type], nodes_to_exclude=list(keep),
                    calibrate_method=_methods()[recipe.method], extra_options=dict(recipe.extra_options),
                    calibration_cache_path=str(ranges))
    quantized = onnx.load(str(output))
    shield_float_convs(quantized, keep)
    onnx.save(quantized, str(output))


def _methods() -> dict:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


# -- calibration: one pass over the photos -------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """One way to turn the activations seen on the calibration photos into ranges (onnxruntime's
    calibrators' own settings and defaults: create_calibrator)."""

    method: str = "minmax"
    percentile: float = 99.999  # percentile only
    bins: int | None = None  # histogram bins; None: onnxruntime's default (entropy 128, percentile 2048)

    @property
    def label(self) -> str:
        extra = f"{self.percentile:g}" if self.method == "percentile" else ""
        return f"{self.method}{extra}" + (f"-{self.bins}bins" if self.bins else "")


def calibration_of(recipe: Recipe) -> Calibration:
    return Calibration(recipe.method, recipe.percentile, recipe.bins)


def calibrate(pre_path: Path, x: np.ndarray, calibrations: Sequence[Calibration], folder: Path) -> dict:
    """Calibration → onnxruntime TensorsData, for several calibrations from ONE pass over the photos.

    The tensors are those quantize_static calibrates (inputs and outputs of every node type it
    quantizes). The photos are fed one at a time and folded into running statistics, where
    onnxruntime's entropy and percentile calibrators keep every activation of every photo in memory
    until the end (~0.6 GB a photo for U²-Netp) and recompute each histogram with searchsorted:
    - minmax: the min and max over all photos (what onnxruntime's MinMax computes);
    - percentile: onnxruntime's method and layout (a histogram of |x| in 2048 bins over the first
      photo's range, widened by whole bins for later photos; the range is ±the bin edge at the
      percentile, clipped to the tensor's min and max), counted with bincount;
    - entropy: onnxruntime's own HistogramCollector, fed a photo at a time.
    """
    import onnxruntime
    from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector, TensorData, TensorsData
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default
    aug = HistogramCalibrater(pre_path, op_types, augmented_model_path=str(folder / "augmented.onnx"))
    aug.augment_graph()
    wanted = aug.tensors_to_calibrate
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # as onnxruntime calibrates
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(folder / "augmented.onnx"), opts, providers=["CPUExecutionProvider"])
    del aug
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    entropy = {b: HistogramCollector("entropy", False, b, 128, 99.999, "same")
               for b in {c.bins or 128 for c in calibrations if c.method == "entropy"}}
    percentile = {b: _AbsHistograms(b) for b in {c.bins or 2048 for c in calibrations if c.method == "percentile"}}
    for i in range(len(x)):
        outs = {n: v for n, v in zip(names, session.run(None, {input_name: x[i:i + 1]})) if n in wanted}
        for n, v in outs.items():
            lo, hi = np.nanmin(v), np.nanmax(v)
            lows[n] = lo if n not in lows else min(lows[n], lo)
            highs[n] = hi if n not in highs else max(highs[n], hi)
            for h in percentile.values():
                h.add(n, v, lo, hi)
        with contextlib.redirect_stdout(io.StringIO()):  # the collector prints a line per call
            for col in entropy.values():
                col.collect({n: [v] for n, v in outs.items()})
    del session
    out = {}
    for c in calibrations:
        if c.method == "minmax":
            out[c] = TensorsData(_methods()["minmax"], {n: (lows[n], highs[n]) for n in lows})
        elif c.method == "percentile":
            h = percentile[c.bins or 2048]
            out[c] = TensorsData(_methods()["percentile"],
                                 {n: TensorData(lowest=lo, highest=hi) for n, (lo, hi) in h.ranges(c.percentile).items()})
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                out[c] = TensorsData(_methods()["entropy"], entropy[c.bins or 128].compute_collection_result())
    return out


class _AbsHistograms:
    """Per tensor, a histogram of |x| as onnxruntime's percentile calibrator lays it out (symmetric)."""

    def __init__(self, bins: int):
        self.bins = bins
        self.h: dict[str, list] = {}  # name → [counts, first edge, bin width, min, max]

    def add(self, name: str, v: np.ndarray, vmin, vmax) -> None:
        a = np.abs(v, dtype=np.float32).ravel()
        amax = np.float32(max(abs(vmin), abs(vmax)))
        if name not in self.h:
            amin = a.min()
            width = (amax - amin) / self.bins if amax > amin else np.float32(1.0)
            self.h[name] = [np.zeros(self.bins, np.int64), amin, width, vmin, vmax]
        entry = self.h[name]
        counts, first, width = entry[0], entry[1], entry[2]
        n = max(len(counts), int(np.ceil((amax - first) / width)))
        idx = np.floor((a - first) / width).astype(np.int64)
        idx = np.minimum(idx[idx >= 0], n - 1)
        grown = np.bincount(idx, minlength=n)
        grown[:len(counts)] += counts
        entry[0], entry[3], entry[4] = grown, min(entry[3], vmin), max(entry[4], vmax)

    def ranges(self, percentile: float) -> dict:
        out = {}
        for name, (counts, first, width, vmin, vmax) in self.h.items():
            cdf = np.cumsum(counts) / counts.sum()
            edge = np.float32(first + width * np.searchsorted(cdf, percentile / 100.0))
            out[name] = (np.float32(max(-edge, vmin)), np.float32(min(edge, vmax)))
        return out


def save_ranges(ranges, path: Path) -> None:
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, path)


def shield_float_convs(model, names: Sequence[str]) -> int:
    """Keep the Convs left FP32 in FP32 under ONNX Runtime's default graph optimisations.

    ORT's WeightBiasQuantization transformer (on at every level above DISABLE_ALL) finds a float
    Conv whose input comes from a per-tensor DequantizeLinear and quantizes its float weights
    itself: per-tensor, symmetric INT8. For U²-Netp's folded-BatchNorm weights that is ruinous
    (measured: mean |Δalpha| 0.001 with the graph as written, 0.37 after that transformer), and
    it silently undoes every exclusion. The transformer only takes a per-tensor input scale, so
    each such Conv gets its own DequantizeLinear with the same scale and zero point repeated per
    channel (axis 1): the same arithmetic, a pattern the transformer leaves alone. Returns how
    many Convs were shielded.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    wanted = set(names)
    new_nodes, shielded = [], 0
    for node in model.graph.node:
        dq = producers.get(node.input[0]) if node.op_type == "Conv" and node.name in wanted else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
            new_nodes.append(node)
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]])
        zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else None
        if scale.size != 1:
            new_nodes.append(node)  # already per-channel: the transformer skips it
            continue
        channels = int(numpy_helper.to_array(inits[node.input[1]]).shape[1]) * _attr(node, "group", 1)
        tag = f"{node.name}_input_per_channel"
        model.graph.initializer.append(numpy_helper.from_array(np.full(channels, scale.item(), scale.dtype),
                                                               f"{tag}_scale"))
        inputs = [dq.input[0], f"{tag}_scale"]
        if zp is not None:
            model.graph.initializer.append(numpy_helper.from_array(np.full(channels, zp.item(), zp.dtype), f"{tag}_zp"))
            inputs.append(f"{tag}_zp")
        new_nodes.append(helper.make_node("DequantizeLinear", inputs, [f"{tag}_out"], name=f"{tag}_DequantizeLinear",
                                          axis=1))
        node.input[0] = f"{tag}_out"
        new_nodes.append(node)
        shielded += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return shielded


def _attr(node, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


# -- the cache -----------------------------------------------------------------------------------


def int8_dir() -> Path:
    return weights_mod.weights_dir() / "int8"


def sha256_of(path: Path) -> str:
    return weights_mod.file_digest(path, "sha256")


def cache_key(spec: ModelSpec, source: Path, recipe: Recipe, calibration_dir: str | os.PathLike | None = None) -> str:
    """Over everything the file depends on, except the calibration photos themselves: a worker
    that only reads a file built at set-up need not have them. A calibration folder named
    explicitly (not the default) is part of the key; the photos used are in the file's metadata."""
    import onnxruntime

    parts = {"source_md5": weights_mod.md5_of(source), "recipe_version": RECIPE_VERSION, "recipe": asdict(recipe),
             "onnxruntime": onnxruntime.__version__, "preprocess": asdict(spec.preprocess),
             "calibration_dir": str(Path(calibration_dir).expanduser().resolve()) if calibration_dir else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def int8_model_path(spec: ModelSpec | str, fp32_onnx_path: str | os.PathLike | None = None, *,
                    recipe: Recipe | None = None, calibration_dir: str | os.PathLike | None = None,
                    rebuild: bool = False, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached INT8 model for `spec`, built from `fp32_onnx_path` (default: the spec's weights) on a miss.

    The file is named by a key over its inputs, so a new FP32 file, recipe, calibration set or
    onnxruntime version gets a new file instead of a stale one (in `cache_dir`, default
    int8_dir(): beside the weights cache). Its sha256 is written beside it
    and checked on every call; a file that does not match is rebuilt. Writes are atomic.
    """
    spec = get_spec(spec)
    recipe = recipe or recipe_for(spec)
    source = fp32_source(spec, fp32_onnx_path)
    key = cache_key(spec, source, recipe, calibration_dir)
    target = Path(cache_dir or int8_dir()) / f"{spec.name}-int8-{key}.onnx"
    checksum = target.with_suffix(".sha256")
    if not rebuild and target.is_file() and checksum.is_file():
        if sha256_of(target) == checksum.read_text().split()[0]:
            return target
        log.warning("%s does not match its checksum %s: rebuilding it", target, checksum)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s for %s (%s, %d calibration photos)", target.name, spec.name, recipe.method, recipe.photos)
    with atomic_path(target) as partial:  # the one atomic write (model/atomic.py)
        info = quantize(spec, source, partial, recipe, calibration_dir)
        _stamp(partial, spec, recipe, key, info)
        # The checksum goes first: a reader that sees the new file also sees its checksum.
        write_bytes_atomic(checksum, f"{sha256_of(partial)}  {target.name}\n".encode())
    log.info("built %s in %.1f s (%d nodes kept FP32)", target, info["seconds"], len(info["kept_fp32"]))
    return target


def int8_built(spec: ModelSpec | str, fp32_path: str | os.PathLike | None = None) -> bool:
    """Whether the INT8 file for these FP32 weights (default: the spec's own) is already built and
    checksummed in the cache. `auto` picks INT8 only then: a job or a server never starts by
    calibrating (minutes); `matting weights int8 NAME` builds the file once, at set-up."""
    spec = get_spec(spec)
    try:
        source = fp32_source(spec, fp32_path)
    except FileNotFoundError:
        return False
    target = int8_dir() / f"{spec.name}-int8-{cache_key(spec, source, recipe_for(spec))}.onnx"
    return target.is_file() and target.with_suffix(".sha256").is_file()


def _stamp(path: Path, spec: ModelSpec, recipe: Recipe, key: str, info: dict) -> None:
    """The spec and how the file was made travel inside it (ONNX metadata), as model/export.py does."""
    import onnx

    from model.export import add_metadata

    model = onnx.load(str(path))
    add_metadata(model, spec, fp16=False)
    for entry in model.metadata_props:
        if entry.key == "precision":
            entry.value = "int8"
    meta = {"int8_key": key, "int8_recipe_version": str(RECIPE_VERSION),
            "int8_recipe": json.dumps(asdict(recipe), default=str), "int8_kept_fp32": ",".join(info["kept_fp32"]),
            "int8_calibration_photos": ",".join(info["calibration_photos"])}
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
