"""Colour + alpha → the picture to encode: a cut-out, or the subject over a background colour."""

from __future__ import annotations

import numpy as np


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) + (H, W) → (H, W, 4) straight (unpremultiplied) RGBA."""
    return np.dstack([rgb, alpha])


def over_color(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int, int]) -> np.ndarray:
    """The subject over a solid colour. An opaque colour gives RGB; a translucent one RGBA."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg_a = color[3] / 255.0
    bg = np.asarray(color[:3], np.float32)
    if bg_a >= 1.0:
        return (rgb * a + bg * (1.0 - a) + 0.5).astype(np.uint8)
    out_a = a + bg_a * (1.0 - a)
    out_rgb = (rgb * a + bg * bg_a * (1.0 - a)) / np.maximum(out_a, 1e-6)
    return np.dstack([(out_rgb + 0.5).astype(np.uint8), (out_a[..., 0] * 255.0 + 0.5).astype(np.uint8)])


def over_image(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The subject over a background picture of the same size, (H, W, 3) uint8 → RGB."""
    if background.shape[:2] != rgb.shape[:2] or background.ndim != 3 or background.shape[2] != 3:
        raise ValueError(f"background must be (H, W, 3) of the output's size {rgb.shape[:2]}, got {background.shape}")
    a = alpha.astype(np.float32)[..., None] / 255.0
    return (rgb * a + background.astype(np.float32) * (1.0 - a) + 0.5).astype(np.uint8)
