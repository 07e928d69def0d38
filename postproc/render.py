"""The whole post-processing step, shared verbatim by the batch job and the server.

    refine_alpha:       model probabilities → the final full-resolution matte
                        (refinement, then threshold, erosion, feathering, the input's own alpha)
    compose_and_encode: image + matte → file bytes
                        (crop, decontamination, maximum size, background, encoding)
    render:             both, plus the subject's bounding box (in input pixels)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from postproc import alpha as alpha_ops
from postproc import geometry, refine
from postproc.composite import cutout, over_color, over_image
from postproc.alpha import WorkLimit
from postproc.params import PostprocParams
from model.preprocess import LEGACY_UPSAMPLE

# Called between the expensive steps; a caller with a deadline raises from it to stop the work.
Checkpoint = Callable[[], None]


def _no_checkpoint() -> None:
    return None


@dataclass(frozen=True)
class Rendered:
    data: bytes
    alpha: np.ndarray  # the final (H, W) uint8 matte, at input resolution
    bbox: tuple[int, int, int, int] | None  # subject's (left, top, width, height) in input pixels


def _max_pixels(params: PostprocParams) -> int:
    return int(params.refine_max_megapixels * 1e6)


def refine_alpha(prob: np.ndarray, height: int, width: int, params: PostprocParams,
                 input_alpha: np.ndarray | None = None, rgb: np.ndarray | None = None, *,
                 limit: WorkLimit | None = None, checkpoint: Checkpoint = _no_checkpoint,
                 upsample: str = LEGACY_UPSAMPLE) -> np.ndarray:
    """Model-resolution probabilities → the full-resolution matte the user asked for.

    `rgb` (the full-resolution image) is needed when params.refine is not "none". `limit` bounds the
    cost of erosion and feathering (postproc.alpha.WorkLimit; None: full resolution whatever the cost).
    `upsample` is the model spec's filter (PreprocessSpec.upsample): callers pass their model's.
    """
    a = alpha_ops.to_full_resolution(prob, height, width, upsample)
    checkpoint()
    if params.refine != "none":
        if rgb is None or rgb.shape[:2] != (height, width):
            raise ValueError(f"refine={params.refine!r} needs the ({height}, {width}, 3) image: pass rgb=")
        if params.refine == "trimap":
            a = refine.closed_form(rgb, a, fg_level=params.trimap_fg, bg_level=params.trimap_bg,
                                   erode_px=params.trimap_erode, max_pixels=_max_pixels(params))
        else:
            a = refine.guided(rgb, a, radius=params.guided_radius, eps=params.guided_eps,
                              max_pixels=_max_pixels(params))
        checkpoint()
    a = alpha_ops.threshold(a, params.alpha_threshold)
    a = alpha_ops.erode(a, params.erode, limit)
    checkpoint()
    a = alpha_ops.feather(a, params.feather, limit)
    checkpoint()
    if input_alpha is not None:  # what was transparent in the input stays transparent
        a = (a.astype(np.uint16) * input_alpha // 255).astype(np.uint8)
    return a


def compose_and_encode(rgb: np.ndarray, alpha: np.ndarray, params: PostprocParams,
                       background: np.ndarray | None = None, *, checkpoint: Checkpoint = _no_checkpoint) -> bytes:
    """Image + final matte → the output file.

    `background` is the decoded background picture ((h, w, 3) uint8, any size: it is scaled to
    cover the output), given exactly when params.background_image names it (a path, URI or
    content hash: what the manifest records); the caller decodes it once.
    """
    if (params.background_image is None) != (background is None):
        raise ValueError("params.background_image and background= go together: name the picture in the "
                         "parameters and pass its decoded pixels as background=")
    if params.crop:
        bbox = alpha_ops.bounding_box(alpha)
        if bbox is not None:  # an empty matte has no subject to crop to: the frame is kept
            box = geometry.crop_box(bbox, params.crop_margin, *alpha.shape)
            rgb, alpha = geometry.crop(rgb, box), geometry.crop(alpha, box)
    if params.decontaminate and not params.output.matte:
        rgb = refine.decontaminate(rgb, alpha, max_pixels=_max_pixels(params))
        checkpoint()
    h, w = geometry.fit_size(*alpha.shape, params.max_size)
    rgb, alpha = geometry.resize(rgb, h, w), geometry.resize(alpha, h, w)
    checkpoint()

    if params.output.matte:
        return encode_picture(alpha, params)
    color = params.background_rgba
    if params.background_image is not None:
        img = over_image(rgb, alpha, geometry.cover(np.asarray(background)[..., :3], h, w))
    elif color is not None:
        img = over_color(rgb, alpha, color)
    else:
        img = cutout(rgb, alpha)
    checkpoint()
    return encode_picture(img, params)


def encode_picture(img: np.ndarray, params: PostprocParams) -> bytes:
    """The composed picture ((H, W) matte for a matte format (mask), else (H, W, 3|4)) → the output file,
    by the format's encoder in the formats table (postproc/formats.py)."""
    return params.output.encode(img, params.quality, params.png_compression)


def render(rgb: np.ndarray, prob: np.ndarray, params: PostprocParams,
           input_alpha: np.ndarray | None = None, background: np.ndarray | None = None, *,
           limit: WorkLimit | None = None, checkpoint: Checkpoint = _no_checkpoint,
           upsample: str = LEGACY_UPSAMPLE) -> Rendered:
    a = refine_alpha(prob, rgb.shape[0], rgb.shape[1], params, input_alpha, rgb=rgb, limit=limit,
                     checkpoint=checkpoint, upsample=upsample)
    return Rendered(compose_and_encode(rgb, a, params, background, checkpoint=checkpoint), a,
                    alpha_ops.bounding_box(a))
