"""The whole post-processing step, shared verbatim by the batch job and the server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from postproc import alpha as alpha_ops
from postproc.composite import cutout, over_color
from postproc.encode import encode_jpeg, encode_png, encode_webp
from postproc.params import PostprocParams


@dataclass(frozen=True)
class Rendered:
    data: bytes
    alpha: np.ndarray  # the final (H, W) uint8 matte
    bbox: tuple[int, int, int, int] | None  # subject's (left, top, width, height)


def refine_alpha(prob: np.ndarray, height: int, width: int, params: PostprocParams,
                 input_alpha: np.ndarray | None = None) -> np.ndarray:
    """Model-resolution probabilities → the full-resolution matte the user asked for."""
    a = alpha_ops.to_full_resolution(prob, height, width)
    a = alpha_ops.threshold(a, params.alpha_threshold)
    a = alpha_ops.erode(a, params.erode)
    a = alpha_ops.feather(a, params.feather)
    if input_alpha is not None:  # what was transparent in the input stays transparent
        a = (a.astype(np.uint16) * input_alpha // 255).astype(np.uint8)
    return a


def compose_and_encode(rgb: np.ndarray, alpha: np.ndarray, params: PostprocParams) -> bytes:
    if params.format == "mask":
        return encode_png(alpha, params.png_compression if params.png_compression is not None else 1)
    color = params.background_rgba
    img = cutout(rgb, alpha) if color is None else over_color(rgb, alpha, color)
    if params.format == "png":
        return encode_png(img, params.png_compression)
    if params.format == "jpeg":
        return encode_jpeg(img, params.quality)
    return encode_webp(img, params.quality)


def render(rgb: np.ndarray, prob: np.ndarray, params: PostprocParams,
           input_alpha: np.ndarray | None = None) -> Rendered:
    a = refine_alpha(prob, rgb.shape[0], rgb.shape[1], params, input_alpha)
    return Rendered(compose_and_encode(rgb, a, params), a, alpha_ops.bounding_box(a))
