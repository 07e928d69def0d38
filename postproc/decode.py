"""Bytes → pixels, for any image a catalog may hold, or a DecodeError that says why not.

Pillow reads the header before the pixels, so oversized images are refused before they are
decoded, and it knows the modes a catalog throws at us (palette, CMYK, 16-bit, LA, EXIF
rotation, animated first frames). Everything after decoding is numpy/OpenCV.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.preprocess import resize_rgb
from postproc.reasons import reason as known_reason

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: larger than any camera JPEG a catalog holds, far below a bomb


class DecodeError(ValueError):
    """An input we cannot turn into pixels; `reason` is a short machine-readable code (postproc/reasons.py)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = known_reason(reason).name


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, orientation applied
    alpha: np.ndarray | None  # (H, W) uint8 when the input had transparency
    format: str  # Pillow's name for the container: JPEG, PNG, WEBP, ...

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def _to_8bit(im: Image.Image) -> np.ndarray:
    """Integer and float single-channel modes (16-bit PNG/TIFF) scaled to 0–255, not clipped."""
    a = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255):
        return (a.astype(np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
    if im.mode == "F":
        hi = float(a.max(initial=0))
        scale = 255.0 if hi <= 1.0 else 255.0 / hi
        return (a * scale).round().clip(0, 255).astype(np.uint8)
    return a.clip(0, 255).astype(np.uint8)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    if not data:
        raise DecodeError("empty", "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise DecodeError("too_many_pixels", f"image is {w}×{h} = {w * h / 1e6:.1f} MP, over the limit of "
                                                     f"{max_pixels / 1e6:.1f} MP")
            fmt = im.format or "unknown"
            if getattr(im, "is_animated", False):
                im.seek(0)  # animated GIF/WebP/APNG: the first frame is the product shot
            im = ImageOps.exif_transpose(im)  # loads the pixels; truncation surfaces here
            im.load()
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("unsupported_format", "not an image in a format we can read "
                                                "(JPEG, PNG, WebP, GIF, TIFF, BMP, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError("too_many_pixels", f"refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError("corrupt", f"the image data is truncated or corrupt: {e}") from None

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_8bit(im)
        return DecodedImage(np.repeat(gray[..., None], 3, axis=2), None, fmt)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3].copy()
        return DecodedImage(np.ascontiguousarray(rgba[..., :3]), None if alpha.min() == 255 else alpha, fmt)
    return DecodedImage(np.asarray(im.convert("RGB")), None, fmt)


def model_input(image: DecodedImage, preprocess, size: tuple[int, int] | None = None) -> np.ndarray:
    """The (H, W, 3) uint8 the model sees: transparent areas over white, resized as `preprocess` says.

    `preprocess` is the model's PreprocessSpec (its input size, resize filter and pre-shrink);
    `size` (h, w) overrides its input size (the training cache keeps photos at its own size).
    Garbage colour under alpha 0 would otherwise be segmented as if it were visible.
    """
    rgb = image.rgb
    if image.alpha is not None:
        a = image.alpha[..., None].astype(np.float32) / 255.0
        rgb = (rgb * a + 255.0 * (1.0 - a)).round().astype(np.uint8)
    return resize_rgb(rgb, size or preprocess.input_size, preprocess.resize, preprocess.preshrink)
