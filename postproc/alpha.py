"""Alpha operations on (H, W) uint8 mattes: the seed's threshold, erosion and feathering.

Erosion and feathering cost grows with the matte's pixels times the radius (erosion: times its
square; feathering: linearly). A `WorkLimit` bounds that cost: an operation that would cost more
than `max_radius` px on `max_pixels` runs on a smaller working copy of the matte, with its radius
scaled by the same factor, and the result is resized back. Operations within the limit (every
radius up to `max_radius` on images up to `max_pixels`) run at full resolution, unchanged. The
batch job passes no limit; the server passes its configured one, so one request's cost is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from model.preprocess import LEGACY_UPSAMPLE, PIL_FILTERS, check_upsample


@dataclass(frozen=True)
class WorkLimit:
    max_pixels: int = 4_000_000
    max_radius: float = 32.0

    def scale(self, pixels: int, radius: float, order: int) -> float:
        """The factor (≤ 1) that brings pixels·radius^order within max_pixels·max_radius^order.

        Shrinking by s divides the pixels by s² and the radius by s, so the cost by s^(2+order).
        """
        cost = float(pixels) * radius ** order
        budget = float(self.max_pixels) * self.max_radius ** order
        return 1.0 if cost <= budget else (budget / cost) ** (1.0 / (2 + order))


def _at_scale(alpha: np.ndarray, scale: float, op) -> np.ndarray:
    """op(small matte, scale) at `scale` of the matte's size, resized back to the matte's size."""
    h, w = alpha.shape
    small = cv2.resize(alpha, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(op(small), (w, h), interpolation=cv2.INTER_LINEAR)


def to_full_resolution(prob: np.ndarray, height: int, width: int, upsample: str = LEGACY_UPSAMPLE) -> np.ndarray:
    """(h, w) float alpha in [0, 1] at model resolution → (height, width) uint8, enlarged with the
    model spec's `upsample` filter (model/preprocess.py UPSAMPLE_FILTERS; twin: pipelines/batch/torch_ops.py)."""
    check_upsample(upsample)
    prob = np.asarray(prob, np.float32)
    if upsample.endswith("_u8"):  # rembg's way: 8 bits at model size, then Pillow's filter on them
        small = np.clip(prob, 0.0, 1.0) * 255.0 + 0.5
        small = Image.fromarray(small.astype(np.uint8))
        return np.asarray(small.resize((width, height), PIL_FILTERS[upsample[:-3]], reducing_gap=None)).copy()
    if upsample.startswith("pil_"):  # Pillow on the float image (mode "F"): no rounding before the filter
        big = Image.fromarray(np.ascontiguousarray(prob)).resize((width, height), PIL_FILTERS[upsample],
                                                                 reducing_gap=None)
        up = np.clip(np.asarray(big), 0.0, 1.0)
    else:
        interp = cv2.INTER_CUBIC if upsample == "cubic" else cv2.INTER_LINEAR
        up = cv2.resize(prob, (width, height), interpolation=interp)
        # In place: at 20 MP each float32 temporary is 80 MB, and the server renders several at once.
        np.clip(up, 0.0, 1.0, out=up)
    up *= 255.0
    up += 0.5
    return up.astype(np.uint8)


def threshold(alpha: np.ndarray, level: int) -> np.ndarray:
    """Alpha below `level` becomes 0; the rest is kept as is (a soft edge stays soft)."""
    if level <= 0:
        return alpha
    return np.where(alpha < level, 0, alpha).astype(np.uint8)


def _erode(alpha: np.ndarray, px: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.erode(alpha, kernel, borderType=cv2.BORDER_REPLICATE)


def erode(alpha: np.ndarray, px: int, limit: WorkLimit | None = None) -> np.ndarray:
    """Pull the edge in by `px` pixels (a disc, so corners shrink evenly)."""
    if px <= 0:
        return alpha
    s = 1.0 if limit is None else limit.scale(alpha.size, px, order=2)  # a disc: cost ∝ pixels·px²
    if s >= 1.0:
        return _erode(alpha, px)
    return _at_scale(alpha, s, lambda small: _erode(small, max(1, round(px * s))))


def _blur(alpha: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(alpha, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def feather(alpha: np.ndarray, px: float, limit: WorkLimit | None = None) -> np.ndarray:
    """Soften the edge with a Gaussian of sigma `px`."""
    if px <= 0:
        return alpha
    s = 1.0 if limit is None else limit.scale(alpha.size, px, order=1)  # separable: cost ∝ pixels·sigma
    if s >= 1.0:
        return _blur(alpha, px)
    # A Gaussian of sigma px holds nothing finer than ~px, so a copy shrunk by s < 1 loses nothing
    # the blur keeps: the result differs from the full-resolution one by rounding only.
    return _at_scale(alpha, s, lambda small: _blur(small, px * s))


def bounding_box(alpha: np.ndarray, level: int = 1) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of pixels with alpha ≥ level, or None when there are none."""
    # Rows and columns that hold any such pixel: about 1 ms on 1024×768, where listing every pixel
    # (cv2.findNonZero + boundingRect) took 9 ms, a quarter of a CPU run's work outside the model.
    mask = alpha >= level
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
