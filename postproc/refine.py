"""Edge refinement guided by the image: closed-form matting on a trimap band, and a guided filter.

Both take the predicted matte at full resolution and the image, and work at a *working
resolution* of at most `max_pixels` pixels. The model sees 320×320, so the uncertain band of
its matte widens with the image; working at a bounded size keeps the band, the cost and the
meaning of every size parameter (erosion, radius) the same whatever the input's size.
Above the limit the result is brought back to full size from the working resolution.

pymatting (closed-form matting) compiles numba kernels on first import; `warm_up()` does that
once at set-up into a persistent cache directory, so workers only load them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

class RefinementSkipped(UserWarning):
    """The refinement could not run on this matte (degenerate trimap); the matte is returned unrefined."""


# -- pymatting and its numba cache -------------------------------------------------------------

def numba_cache_dir() -> Path:
    """Where numba keeps compiled kernels: $NUMBA_CACHE_DIR, else ~/.cache/unet-matting/numba."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "unet-matting" / "numba"


def load_pymatting():
    """Import pymatting with numba's cache in a persistent, writable place.

    Numba reads NUMBA_CACHE_DIR when it is first imported, so the default is set only then;
    without it numba caches beside the package, which fails on a read-only install.
    """
    if "pymatting" in sys.modules:
        return sys.modules["pymatting"]
    if "numba" not in sys.modules and "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
    cache = numba_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if not any(cache.rglob("estimate_foreground_ml.*.nbi")):
        # A cold cache means minutes of compiling in this process, in every worker that gets here.
        log.warning("pymatting's kernels are not in the numba cache %s: compiling them now (1–3 min) in "
                    "pid %d; run `matting warmup` once per machine at set-up", cache, os.getpid())
    import pymatting

    return pymatting


def warm_up() -> float:
    """Compile (first time) or load (afterwards) pymatting's kernels and run each once; seconds taken."""
    t0 = time.perf_counter()
    load_pymatting()
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[:, 6:] = 255
    alpha = np.zeros((12, 12), np.uint8)
    alpha[:, 5:8] = 128
    alpha[:, 8:] = 255
    closed_form(rgb, alpha, fg_level=240, bg_level=10, erode_px=0, max_pixels=10**6)
    decontaminate(rgb, alpha, max_pixels=10**6)
    return time.perf_counter() - t0


# -- working resolution ----------------------------------------------------------------------

def working_scale(height: int, width: int, max_pixels: int) -> float:
    """The factor (≤ 1) that brings an image to at most `max_pixels` pixels."""
    return min(1.0, math.sqrt(max_pixels / float(height * width)))


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)  # averages: no aliasing when shrinking


def _to_u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# -- trimap + closed-form matting ------------------------------------------------------------

def make_trimap(alpha: np.ndarray, fg_level: int, bg_level: int, erode_px: int) -> np.ndarray:
    """(H, W) uint8 matte → trimap: 255 sure foreground, 0 sure background, 128 unknown.

    Foreground is alpha ≥ fg_level and background alpha ≤ bg_level, each eroded by a disc of
    `erode_px`, so the unknown band reaches that far into both sides of the predicted edge.
    Outside the frame counts as whatever touches it: a subject cut by the frame stays foreground.
    """
    fg = (alpha >= fg_level).astype(np.uint8)
    bg = (alpha <= bg_level).astype(np.uint8)
    if erode_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        fg = cv2.erode(fg, kernel, borderType=cv2.BORDER_REPLICATE)
        bg = cv2.erode(bg, kernel, borderType=cv2.BORDER_REPLICATE)
    trimap = np.full(alpha.shape, 128, np.uint8)
    trimap[fg > 0] = 255
    trimap[bg > 0] = 0
    return trimap


def degenerate_reason(trimap: np.ndarray) -> str | None:
    """Why closed-form matting cannot run on this trimap, or None when it can."""
    if not (trimap == 128).any():
        return "the trimap has no unknown band (the matte is already hard at these thresholds)"
    if not (trimap == 255).any():
        return "the trimap has no sure foreground (nothing reaches the foreground threshold after erosion)"
    if not (trimap == 0).any():
        return "the trimap has no sure background (nothing reaches the background threshold after erosion)"
    return None


def _band_window(trimap: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The unknown band's bounding box plus `margin`: the only part of the image the solve needs."""
    x, y, w, h = cv2.boundingRect((trimap == 128).astype(np.uint8))
    H, W = trimap.shape
    return slice(max(0, y - margin), min(H, y + h + margin)), slice(max(0, x - margin), min(W, x + w + margin))


def closed_form(rgb: np.ndarray, alpha: np.ndarray, *, fg_level: int, bg_level: int, erode_px: int,
                max_pixels: int, epsilon: float = 1e-7, max_iterations: int = 2000) -> np.ndarray:
    """Closed-form matting (Levin et al. 2008, pymatting) on the unknown band of the matte's trimap.

    Degenerate trimaps give the matte back unrefined with a RefinementSkipped warning.
    The cost grows with the band, so it is bounded twice: the image is brought to at most
    `max_pixels`, and a band larger than a quarter of that (a matte that is grey over large
    areas) is solved at a coarser scale still, its erosion scaled with it. The result is resized up.
    """
    H, W = alpha.shape
    scale = working_scale(H, W, max_pixels)
    trimap = make_trimap(_resize(alpha, scale), fg_level, bg_level, erode_px)
    band, band_limit = int((trimap == 128).sum()), max(1, max_pixels // 4)
    if band > band_limit:
        coarser = scale * math.sqrt(band_limit / band)
        trimap = make_trimap(_resize(alpha, coarser), fg_level, bg_level, round(erode_px * coarser / scale))
        scale = coarser
    reason = degenerate_reason(trimap)
    if reason is not None:
        warnings.warn(f"closed-form refinement skipped: {reason}", RefinementSkipped, stacklevel=2)
        return alpha
    pm = load_pymatting()
    small_rgb = _resize(rgb, scale)
    if small_rgb.shape[:2] != trimap.shape:  # the two roundings of a coarser scale can differ by a pixel
        small_rgb = cv2.resize(small_rgb, trimap.shape[::-1], interpolation=cv2.INTER_AREA)

    def solve(image: np.ndarray, tri: np.ndarray) -> np.ndarray:
        return pm.estimate_alpha_cf(image.astype(np.float64) / 255.0, tri.astype(np.float64) / 255.0,
                                    laplacian_kwargs={"epsilon": epsilon}, cg_kwargs={"maxiter": max_iterations})

    # Only the band and the ring of sure pixels around it enter the solve (3×3 windows need 1 px;
    # a few more keep both sure sides in the crop).
    ys, xs = _band_window(trimap, margin=4)
    if degenerate_reason(trimap[ys, xs]) is None:
        out = trimap.astype(np.float64) / 255.0
        out[ys, xs] = solve(small_rgb[ys, xs], trimap[ys, xs])
    else:  # the crop holds one sure side only (the band runs into the frame): the whole image has both
        out = solve(small_rgb, trimap)
    refined = _to_u8(out)
    if scale < 1.0:
        # Linear upsampling keeps the sure regions exactly 0 and 255 (they are constant), and the
        # band's values come from the solve; no full-resolution pass is needed.
        refined = cv2.resize(refined, (W, H), interpolation=cv2.INTER_LINEAR)
    return refined


# -- guided filter ---------------------------------------------------------------------------

def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (TPAMI 2013) with a colour guide: box filters and a 3×3 solve per pixel.

    guide: (H, W, 3) float32 in [0, 1]; src: (H, W) float32. Returns the linear coefficients'
    means (a: (H, W, 3), b: (H, W)), so a caller can apply them at another resolution
    (the "fast guided filter": q = a·I + b with a, b upsampled).
    """
    def box(x):
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    I = guide
    mean_i = box(I)
    mean_p = box(src)
    cov_ip = box(I * src[..., None]) - mean_i * mean_p[..., None]
    # Σ + εU, symmetric 3×3 per pixel: six unique entries.
    idx = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    s = {(i, j): box(I[..., i] * I[..., j]) - mean_i[..., i] * mean_i[..., j] + (eps if i == j else 0.0)
         for i, j in idx}
    a00, a01, a02, a11, a12, a22 = (s[k] for k in idx)
    # Inverse through the adjugate: cofactors of a symmetric matrix.
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    v0, v1, v2 = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    a = np.dstack([c00 * v0 + c01 * v1 + c02 * v2, c01 * v0 + c11 * v1 + c12 * v2,
                   c02 * v0 + c12 * v1 + c22 * v2]) / det[..., None]
    b = mean_p - (a * mean_i).sum(axis=2)
    return box(a), box(b)


def guided(rgb: np.ndarray, alpha: np.ndarray, *, radius: int, eps: float, max_pixels: int) -> np.ndarray:
    """He et al.'s "guided feathering": the matte cut at one half, then guided-filtered with the
    image as guide, so the edge moves to the image's edges and gets a soft profile from the image.

    The cut matters: a soft ramp wider than the radius would pass through the filter unchanged.
    Coefficients are computed at the working resolution and applied at full resolution.
    """
    H, W = alpha.shape
    scale = working_scale(H, W, max_pixels)
    small_i = _resize(rgb, scale).astype(np.float32) / 255.0
    small_p = (_resize(alpha, scale) >= 128).astype(np.float32)
    a, b = guided_filter(small_i, small_p, radius, eps)
    if scale >= 1.0:
        return _to_u8((a * small_i).sum(axis=2) + b)
    # q = b + Σ_c a_c·I_c at full resolution, one channel at a time: a 24 MP image needs a few
    # hundred MB of temporaries instead of a gigabyte.
    q = cv2.resize(b, (W, H), interpolation=cv2.INTER_LINEAR)
    for c in range(3):
        q += cv2.resize(np.ascontiguousarray(a[..., c]), (W, H), interpolation=cv2.INTER_LINEAR) * \
            (rgb[..., c].astype(np.float32) * (1.0 / 255.0))
    return _to_u8(q)


# -- colour decontamination ------------------------------------------------------------------

def decontaminate(rgb: np.ndarray, alpha: np.ndarray, *, max_pixels: int) -> np.ndarray:
    """The foreground colour at semi-transparent pixels (Germer et al.'s multilevel estimate, pymatting).

    Pixels with alpha 255 or 0 keep the image's colour; the estimate replaces only the edge,
    so no background colour bleeds into it when the cut-out is put on another background.
    Above `max_pixels` the estimate runs on the working resolution and is resized up.
    """
    soft = (alpha > 0) & (alpha < 255)
    if not soft.any():
        return rgb
    pm = load_pymatting()
    H, W = alpha.shape
    # Only the soft pixels' neighbourhood matters: estimate in their bounding box (plus a margin).
    x, y, w, h = cv2.boundingRect(soft.astype(np.uint8))
    m = 16
    ys, xs = slice(max(0, y - m), min(H, y + h + m)), slice(max(0, x - m), min(W, x + w + m))
    crop_rgb, crop_a = rgb[ys, xs], alpha[ys, xs]
    scale = working_scale(*crop_a.shape, max_pixels)
    fg = pm.estimate_foreground_ml(_resize(crop_rgb, scale).astype(np.float32) / 255.0,
                                   _resize(crop_a, scale).astype(np.float32) / 255.0)
    out = rgb.copy()
    view, crop_soft = out[ys, xs], soft[ys, xs]
    for c in range(3):  # channel by channel: full-size float copies of a large crop stay small
        f = fg[..., c] if scale >= 1.0 else cv2.resize(np.ascontiguousarray(fg[..., c]),
                                                      (crop_a.shape[1], crop_a.shape[0]),
                                                      interpolation=cv2.INTER_LINEAR)
        view[..., c][crop_soft] = _to_u8(f[crop_soft])
    return out
