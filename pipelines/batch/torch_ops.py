"""Torch twins of the post-processing (and the model-input resize) for the GPU data path.

postproc/ stays the reference: pure numpy/OpenCV, what CPU nodes and the server run. These
functions do the same on (C, H, W) / (H, W) tensors on any device, so the GPU path is tested on
CPU tensors in CI side by side with the numpy functions (tests/test_torch_ops.py: within 1/255).

Why here: postproc/ must stay free of torch (the server and CPU nodes import it, and it is the
reference); model/ is the networks, their specs and runtimes, with no image post-processing or its
parameters; pipelines/ may import both, and the batch job is the only user today.

Resizes are separable weight matrices (out = Wy · img · Wxᵀ) built the way OpenCV samples:
half-pixel centres, replicated borders, and for `area` the exact overlap of each output pixel's
footprint (cv2.INTER_AREA when shrinking). One matrix product per axis, on any image size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from model.preprocess import LEGACY_UPSAMPLE, check_upsample
from postproc.params import PostprocParams

# Filter names: OpenCV's (area, bilinear, bicubic, lanczos = INTER_LANCZOS4, nearest) and Pillow's
# antialiased ones (pil_bilinear, pil_bicubic, pil_lanczos), as a PreprocessSpec's `resize` names
# them. None keeps today's choice (postproc.decode.model_input): area when shrinking, else bilinear.
FILTERS = ("area", "bilinear", "bicubic", "lanczos", "nearest", "pil_bilinear", "pil_bicubic", "pil_lanczos")
_ALIASES = {"linear": "bilinear", "cubic": "bicubic", "lanczos4": "lanczos", "inter_area": "area"}


def spec_filter(preprocess) -> str | None:
    """A PreprocessSpec's resize filter as this module names it: `area` keeps the numpy twin's rule
    (area when shrinking both sides, else bilinear), `linear` is OpenCV's bilinear, pil_* as they are."""
    name = getattr(preprocess, "resize", "area")
    return None if name == "area" else filter_name(name, shrinking=True)


def filter_name(name: str | None, shrinking: bool) -> str:
    if name is None or name == "auto" or name == "area":  # "area": INTER_AREA shrinking, else linear
        return "area" if shrinking else "bilinear"
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in FILTERS:
        raise ValueError(f"unknown resize filter {name!r}; known: {', '.join(FILTERS)}")
    return key


_PIL_SUPPORT = {"pil_bilinear": 1.0, "pil_bicubic": 2.0, "pil_lanczos": 3.0}


def _pil_kernel(kind: str, x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    if kind == "pil_bilinear":
        return np.where(ax < 1, 1 - ax, 0.0)
    if kind == "pil_bicubic":
        a = -0.5
        return np.where(ax < 1, ((a + 2) * ax - (a + 3)) * ax * ax + 1,
                        np.where(ax < 2, (((ax - 5) * ax + 8) * ax - 4) * a, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = lambda v: np.where(v == 0, 1.0, np.sin(np.pi * v) / (np.pi * v))  # noqa: E731
        return np.where(ax < 3, sinc(x) * sinc(x / 3), 0.0)


@lru_cache(maxsize=256)
def _pil_coeffs(n_in: int, n_out: int, kind: str) -> np.ndarray:
    """Pillow's resampling coefficients (Resample.c precompute_coeffs), normalised, in float64:
    what its float ("F") images are resampled with."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = _PIL_SUPPORT[kind] * fscale
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        k = _pil_kernel(kind, (np.arange(lo, hi) - center + 0.5) / fscale)
        total = k.sum()
        w[i, lo:hi] = k / total if total != 0 else k
    return w


@lru_cache(maxsize=256)
def _pil_weights(n_in: int, n_out: int, kind: str) -> np.ndarray:
    """Pillow's coefficients for 8-bit images, in its 22-bit fixed point."""
    w = _pil_coeffs(n_in, n_out, kind)
    return np.where(w >= 0, np.trunc(0.5 + w * (1 << 22)), np.trunc(-0.5 + w * (1 << 22)))


def _pil_resize(img: torch.Tensor, height: int, width: int, kind: str) -> torch.Tensor:
    """Pillow's Image.resize with an antialiased filter (reducing_gap=None): one pass per axis,
    rounding to 8 bits in between; integer sums exact in float64. Exact on most photos, but NOT on
    all: Pillow 13 orders or crops its passes in a way not reproduced here (an 832×550 photo to 320²
    differed by up to 10 levels), so the GPU path makes Pillow-filter model inputs with the numpy
    reference (pipelines/batch/gpu_path.py) until this twin is exact."""
    x = img.to(torch.float64)
    h, w = x.shape[-2:]

    def horizontal(x):
        k = torch.from_numpy(_pil_weights(w, width, kind)).to(x.device)
        return torch.floor((x @ k.T + float(1 << 21)) / float(1 << 22)).clamp_(0, 255)

    def vertical(x):
        k = torch.from_numpy(_pil_weights(h, height, kind)).to(x.device)
        return torch.floor((k @ x + float(1 << 21)) / float(1 << 22)).clamp_(0, 255)

    passes = [horizontal] * (w != width), [vertical] * (h != height)
    horizontal_first = True
    for step in (passes[0] + passes[1]) if horizontal_first else (passes[1] + passes[0]):
        x = step(x)
    return x.to(torch.uint8)


def _taps(kind: str, x: np.ndarray) -> np.ndarray:
    """OpenCV's interpolation kernels at offsets x (bicubic: A = -0.75; Lanczos: 8 taps)."""
    ax = np.abs(x)
    if kind == "bilinear":
        return np.clip(1.0 - ax, 0.0, None)
    if kind == "bicubic":
        a = -0.75
        return np.where(ax <= 1, ((a + 2) * ax - (a + 3)) * ax * ax + 1,
                        np.where(ax < 2, ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a, 0.0))
    # lanczos, a = 4
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(ax < 1e-9, 1.0, 4 * np.sin(np.pi * x) * np.sin(np.pi * x / 4) / (np.pi * np.pi * x * x))
    return np.where(ax < 4, w, 0.0)


@lru_cache(maxsize=256)
def _weights(n_in: int, n_out: int, kind: str) -> np.ndarray:
    """(n_out, n_in) float64 matrix resampling one axis."""
    if kind in _PIL_SUPPORT:  # float images (resize_float): Pillow's "F" mode coefficients
        return _pil_coeffs(n_in, n_out, kind)
    scale = n_in / n_out
    w = np.zeros((n_out, n_in))
    dst = np.arange(n_out)
    if kind == "area":  # exact footprint overlap, like cv2.INTER_AREA when both axes shrink
        start, end = dst * scale, (dst + 1) * scale
        k = np.arange(n_in)
        overlap = np.clip(np.minimum(end[:, None], k[None] + 1) - np.maximum(start[:, None], k[None]), 0, None)
        return overlap / scale
    if kind in ("area", "area_up"):  # cv2.INTER_AREA unless both axes shrink: a linear ramp over the cell
        sx = np.floor(dst * scale).astype(int)
        fx = (dst + 1) - (sx + 1) * (n_out / n_in)
        fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
        np.add.at(w, (dst, np.clip(sx, 0, n_in - 1)), 1 - fx)
        np.add.at(w, (dst, np.clip(sx + 1, 0, n_in - 1)), fx)
        return w
    if kind == "nearest":  # cv2.INTER_NEAREST: floor(dst · scale), no half-pixel shift
        ifx = 1.0 / (n_out / n_in)  # OpenCV's own arithmetic: x / y differs from 1 / (y / x) in the last bit
        w[dst, np.minimum(np.floor(dst * ifx).astype(int), n_in - 1)] = 1.0
        return w
    half = {"bilinear": 1, "bicubic": 2, "lanczos": 4}[kind]
    src = (dst + 0.5) * scale - 0.5
    x0 = np.floor(src).astype(int)
    fx = src - x0
    if kind == "bilinear":  # OpenCV clamps the left edge instead of replicating through it
        fx = np.where(x0 < 0, 0.0, fx)
        x0 = np.maximum(x0, 0)
    for off in range(1 - half, half + 1):
        tw = _taps(kind, fx - off)
        np.add.at(w, (dst, np.clip(x0 + off, 0, n_in - 1)), tw)
    return w / w.sum(axis=1, keepdims=True)


_MAKERS = {
    "weights": lambda n_in, n_out, kind: _weights(n_in, n_out, kind).astype(np.float32),
    "taps": lambda n_in, n_out, columns, i: _linear_taps(n_in, n_out, columns)[i],
    "gaussian": lambda sigma: _gaussian(sigma).astype(np.float32),
}


@lru_cache(maxsize=512)
def _on(device: str, what: str, *key) -> torch.Tensor:
    """A small constant (weights, taps, a kernel) uploaded once per device, not once per image."""
    return torch.from_numpy(_MAKERS[what](*key)).to(device)


def _matrix(n_in: int, n_out: int, kind: str, device) -> torch.Tensor:
    return _on(str(device), "weights", n_in, n_out, kind)


def resize_float(x: torch.Tensor, height: int, width: int, kind: str) -> torch.Tensor:
    """(..., H, W) float → (..., height, width) float with one filter."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    if kind == "area" and (height > h or width > w):
        kind = "area_up"  # OpenCV averages footprints only when neither axis grows
    wy, wx = _matrix(h, height, kind, x.device), _matrix(w, width, kind, x.device)
    return wy @ x @ wx.T


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x + 0.5).clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=256)
def _linear_taps(n_in: int, n_out: int, columns: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's 8-bit INTER_LINEAR taps along one axis: first index, second index, first weight in 1/2048.

    Columns past an edge take the edge pixel whole; rows past an edge keep their weights over the
    replicated edge row (OpenCV's resize.cpp does the two axes differently, and it shows in the last bit).
    """
    scale = 1.0 / (n_out / n_in)
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    if columns:
        f = np.where((s < 0) | (s >= n_in - 1), np.float32(0), f)
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    return np.clip(s, 0, n_in - 1), np.clip(s + 1, 0, n_in - 1), w0


def _bilinear_u8(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """OpenCV's 8-bit bilinear resize to the bit: 11-bit weights, its SIMD vertical pass's shifts.

    Plain float bilinear differs by one level on a tenth of the pixels, and the models turn one
    level of input into several of alpha (tests/test_gpu_path.py).
    """
    h, w = img.shape[-2:]
    dev = img.device
    x0, x1, a0 = (_on(str(dev), "taps", w, width, True, i) for i in range(3))
    y0, y1, b0 = (_on(str(dev), "taps", h, height, False, i) for i in range(3))
    src = img.to(torch.int32)
    a0, b0 = a0.to(torch.int32), b0.to(torch.int32)[:, None]
    rows = src[..., x0] * a0 + src[..., x1] * (2048 - a0)  # (.., H, width), in 1/2048
    top, bottom = rows[..., y0, :] >> 4, rows[..., y1, :] >> 4
    out = (((top * b0) >> 16) + ((bottom * (2048 - b0)) >> 16) + 2) >> 2
    return out.clamp_(0, 255).to(torch.uint8)


def resize(img: torch.Tensor, height: int, width: int, filter: str | None = None) -> torch.Tensor:
    """uint8 (C, H, W) or (H, W) → (height, width). `filter` None: area when shrinking, else bilinear."""
    h, w = img.shape[-2:]
    if (h, w) == (height, width):
        return img
    kind = filter_name(filter, shrinking=height <= h and width <= w)
    if kind == "bilinear":
        return _bilinear_u8(img, height, width)
    if kind.startswith("pil_"):
        return _pil_resize(img, height, width, kind)
    return _to_uint8(resize_float(img.float(), height, width, kind))


def model_input(rgb: torch.Tensor, size: tuple[int, int], alpha: torch.Tensor | None = None,
                filter: str | None = None, preshrink: float = 0.0) -> torch.Tensor:
    """Twin of postproc.decode.model_input: (3, H, W) uint8 → (3, h, w) uint8, transparency over white.

    `preshrink` k > 0 (Pillow's filters only): an axis longer than k × the input's is first shrunk
    to k × with INTER_AREA, as the spec's numpy resize does.
    """
    if alpha is not None:
        a = alpha.float()[None] / 255.0
        rgb = torch.round(rgb.float() * a + 255.0 * (1.0 - a)).to(torch.uint8)
    h, w = size
    if preshrink > 0 and filter is not None and filter.startswith("pil_"):
        ph, pw = min(rgb.shape[-2], round(preshrink * h)), min(rgb.shape[-1], round(preshrink * w))
        if (ph, pw) != tuple(rgb.shape[-2:]):
            rgb = _to_uint8(resize_float(rgb.float(), ph, pw, "area"))
    return resize(rgb, h, w, filter_name(filter, shrinking=rgb.shape[-2] >= h and rgb.shape[-1] >= w))


def to_full_resolution(prob: torch.Tensor, height: int, width: int, upsample: str = LEGACY_UPSAMPLE) -> torch.Tensor:
    """Twin of postproc.alpha.to_full_resolution: (h, w) float in [0, 1] → (height, width) uint8 with
    the spec's `upsample` filter. The float filters agree with the numpy reference to within one
    level (rounding at .5). The `_u8` ones run Pillow's 8-bit arithmetic (_pil_resize): exact when
    both axes grow (a photo larger than the model input, the usual case); when an axis shrinks,
    Pillow 13 orders its two rounded passes in a way _pil_resize does not reproduce (up to ~10
    levels apart), so that alpha is made by the numpy reference on the host and moved back."""
    check_upsample(upsample)
    if upsample.endswith("_u8"):
        if height < prob.shape[-2] or width < prob.shape[-1]:
            from postproc.alpha import to_full_resolution as reference

            a = reference(prob.float().cpu().numpy(), height, width, upsample)
            return torch.from_numpy(a).to(prob.device)
        return _pil_resize(_to_uint8(prob.float().clamp(0.0, 1.0) * 255.0), height, width, upsample[:-3])
    kind = {"linear": "bilinear", "cubic": "bicubic"}.get(upsample, upsample)
    up = resize_float(prob.float(), height, width, kind)
    return (up.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def threshold(alpha: torch.Tensor, level: int) -> torch.Tensor:
    if level <= 0:
        return alpha
    return torch.where(alpha < level, torch.zeros_like(alpha), alpha)


@lru_cache(maxsize=64)
def _disc_rows(px: int) -> tuple[tuple[int, int], ...]:
    """For each row offset dy of OpenCV's elliptic structuring element: its half-width (all rows are runs)."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    rows = []
    for dy in range(-px, px + 1):
        xs = np.flatnonzero(k[dy + px])
        if len(xs):
            assert xs[0] + xs[-1] == 2 * px, "the disc is symmetric"
            rows.append((dy, int(px - xs[0])))
    return tuple(rows)


def erode(alpha: torch.Tensor, px: int) -> torch.Tensor:
    """Twin of postproc.alpha.erode: minimum over a disc, borders replicated."""
    if px <= 0:
        return alpha
    h, w = alpha.shape
    # max_pool of the negation is a min filter; one horizontal run per row width, then the rows' minimum.
    x = -F.pad(alpha.float()[None, None], (px, px, px, px), mode="replicate")
    runs: dict[int, torch.Tensor] = {}
    out = None
    for dy, r in _disc_rows(px):
        if r not in runs:
            runs[r] = -F.max_pool2d(x, (1, 2 * r + 1), stride=1)[0, 0]  # width W + 2px - 2r
        row = runs[r][px + dy:px + dy + h, px - r:px - r + w]
        out = row if out is None else torch.minimum(out, row)
    return out.to(torch.uint8)


@lru_cache(maxsize=64)
def _gaussian(sigma: float) -> np.ndarray:
    import cv2

    ksize = int(round(sigma * 3 * 2 + 1)) | 1  # OpenCV's size for 8-bit images with ksize (0, 0)
    return cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F)[:, 0]


def feather(alpha: torch.Tensor, px: float) -> torch.Tensor:
    """Twin of postproc.alpha.feather: separable Gaussian of sigma `px`, borders replicated."""
    if px <= 0:
        return alpha
    k = _on(str(alpha.device), "gaussian", float(px))
    r = len(k) // 2
    x = alpha.float()[None, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return _to_uint8(x[0, 0])


def bounding_box(alpha: torch.Tensor, level: int = 1) -> tuple[int, int, int, int] | None:
    """Twin of postproc.alpha.bounding_box: (left, top, width, height) of alpha ≥ level, or None."""
    mask = alpha >= level
    rows, cols = mask.any(dim=1), mask.any(dim=0)
    if not bool(rows.any()):
        return None
    ys, xs = torch.nonzero(rows)[:, 0], torch.nonzero(cols)[:, 0]
    top, bottom, left, right = int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])
    return left, top, right - left + 1, bottom - top + 1


def refine_alpha(prob: torch.Tensor, height: int, width: int, params: PostprocParams,
                 input_alpha: torch.Tensor | None = None, upsample: str = LEGACY_UPSAMPLE) -> torch.Tensor:
    """Twin of postproc.render.refine_alpha without refinement (which stays on the CPU)."""
    if params.refine != "none":
        raise ValueError("refinement runs on the CPU (postproc.render.refine_alpha); see pipelines.batch.gpu_path.gpu_eligible")
    a = to_full_resolution(prob, height, width, upsample)
    a = threshold(a, params.alpha_threshold)
    a = erode(a, params.erode)
    a = feather(a, params.feather)
    if input_alpha is not None:
        a = (a.to(torch.int32) * input_alpha.to(torch.int32) // 255).to(torch.uint8)
    return a


def cover(background: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Twin of postproc.geometry.cover on (3, h, w) uint8."""
    bh, bw = background.shape[-2:]
    s = max(height / bh, width / bw)
    sh, sw = max(height, round(bh * s)), max(width, round(bw * s))
    scaled = resize(background, sh, sw, "area" if sh <= bh else "bilinear")
    top, left = (sh - height) // 2, (sw - width) // 2
    return scaled[:, top:top + height, left:left + width]


def compose(rgb: torch.Tensor, alpha: torch.Tensor, params: PostprocParams,
            background: torch.Tensor | None = None) -> torch.Tensor:
    """Twin of postproc.render.compose_and_encode up to the encoder: (3, H, W) + (H, W) uint8 →
    the (h, w, C) uint8 picture to encode (C = 1 for a mask, 3 or 4 otherwise). No decontamination."""
    if params.decontaminate and not params.output.matte:
        raise ValueError("decontamination runs on the CPU (postproc.refine.decontaminate); see pipelines.batch.gpu_path.gpu_eligible")
    if params.crop:
        bbox = bounding_box(alpha)
        if bbox is not None:
            from postproc.geometry import crop_box

            x, y, w, h = crop_box(bbox, params.crop_margin, *alpha.shape)
            rgb, alpha = rgb[:, y:y + h, x:x + w], alpha[y:y + h, x:x + w]
    from postproc.geometry import fit_size

    h, w = fit_size(*alpha.shape, params.max_size)
    # geometry.resize: area when shrinking (max_size never enlarges)
    rgb, alpha = resize(rgb, h, w, "area"), resize(alpha, h, w, "area")
    if params.output.matte:
        return alpha[..., None]
    a = alpha.float()[None] / 255.0
    color = params.background_rgba
    if params.background_image is not None:
        if background is None:
            raise ValueError("params.background_image needs the decoded background as a (3, h, w) tensor")
        bg = cover(background[:3], h, w).float()
        img = _to_uint8(rgb.float() * a + bg * (1.0 - a))
    elif color is not None:
        bg_a = color[3] / 255.0
        bg = torch.tensor(color[:3], dtype=torch.float32, device=rgb.device).view(3, 1, 1)
        if bg_a >= 1.0:
            img = _to_uint8(rgb.float() * a + bg * (1.0 - a))
        else:
            out_a = a + bg_a * (1.0 - a)
            out_rgb = (rgb.float() * a + bg * bg_a * (1.0 - a)) / out_a.clamp(min=1e-6)
            img = torch.cat([_to_uint8(out_rgb), _to_uint8(out_a * 255.0)])
    else:
        img = torch.cat([rgb, alpha[None]])
    return img.permute(1, 2, 0)
