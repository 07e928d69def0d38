"""Alpha operations on (H, W) uint8 mattes: the seed's threshold, erosion and feathering."""

from __future__ import annotations

import cv2
import numpy as np


def to_full_resolution(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) float alpha in [0, 1] at model resolution → (height, width) uint8."""
    up = cv2.resize(np.asarray(prob, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return (np.clip(up, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def threshold(alpha: np.ndarray, level: int) -> np.ndarray:
    """Alpha below `level` becomes 0; the rest is kept as is (a soft edge stays soft)."""
    if level <= 0:
        return alpha
    return np.where(alpha < level, 0, alpha).astype(np.uint8)


def erode(alpha: np.ndarray, px: int) -> np.ndarray:
    """Pull the edge in by `px` pixels (a disc, so corners shrink evenly)."""
    if px <= 0:
        return alpha
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.erode(alpha, kernel, borderType=cv2.BORDER_REPLICATE)


def feather(alpha: np.ndarray, px: float) -> np.ndarray:
    """Soften the edge with a Gaussian of sigma `px`."""
    if px <= 0:
        return alpha
    return cv2.GaussianBlur(alpha, (0, 0), sigmaX=px, sigmaY=px, borderType=cv2.BORDER_REPLICATE)


def bounding_box(alpha: np.ndarray, level: int = 1) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of pixels with alpha ≥ level, or None when there are none."""
    pts = cv2.findNonZero((alpha >= level).astype(np.uint8))
    if pts is None:
        return None
    x, y, w, h = cv2.boundingRect(pts)
    return int(x), int(y), int(w), int(h)
