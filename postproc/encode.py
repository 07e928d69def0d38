"""Pixels → file bytes. PNG goes through fpng by default: lossless and ~10× faster than zlib level 1."""

from __future__ import annotations

import cv2
import numpy as np


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)


def _imencode(ext: str, img: np.ndarray, flags: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, _bgr(img), flags)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {img.shape} image as {ext}")
    return buf.tobytes()


def encode_png(img: np.ndarray, compression: int | None = None) -> bytes:
    """RGB(A) or gray → PNG. `compression` None: fpng (RGB/RGBA); 0–9: zlib level."""
    if compression is None and img.ndim == 3:
        import fpng

        return fpng.from_ndarray(np.ascontiguousarray(img))
    return _imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1 if compression is None else compression])


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    if img.ndim == 3 and img.shape[2] == 4:
        raise ValueError("JPEG has no alpha channel: composite over a background first")
    return _imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])


def encode_webp(img: np.ndarray, quality: int = 90) -> bytes:
    return _imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, quality])
