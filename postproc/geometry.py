"""Output geometry: crop to the subject with a margin, a maximum size, a background scaled to cover."""

from __future__ import annotations

import cv2
import numpy as np


def crop_box(bbox: tuple[int, int, int, int], margin: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the subject grown by `margin` px on each side, clipped to the image."""
    x, y, w, h = bbox
    left, top = max(0, x - margin), max(0, y - margin)
    right, bottom = min(width, x + w + margin), min(height, y + h + margin)
    return left, top, right - left, bottom - top


def crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return img[y:y + h, x:x + w]


def fit_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is at most `max_size`, aspect kept; never enlarged."""
    if max_size is None or max(height, width) <= max_size:
        return height, width
    s = max_size / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return img
    interp = cv2.INTER_AREA if height <= img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


def cover(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """The background scaled (aspect kept) to cover height × width, centred and cropped to it."""
    bh, bw = background.shape[:2]
    s = max(height / bh, width / bw)
    sh, sw = max(height, round(bh * s)), max(width, round(bw * s))
    scaled = resize(background, sh, sw)
    top, left = (sh - height) // 2, (sw - width) // 2
    return scaled[top:top + height, left:left + width]
