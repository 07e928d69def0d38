"""Matting and segmentation quality metrics: pure numpy / scipy / OpenCV on (H, W) alpha maps.

Every function takes the prediction and the ground truth as arrays of the same (H, W) shape,
either uint8 (0–255) or float in [0, 1], and an optional boolean `region` (for example the
unknown band of a trimap, `trimap == 128`); without one the whole image counts.

Matting metrics follow the Composition-1k / alphamatting.com evaluation code of Deep Image
Matting (Xu et al., CVPR 2017; MATLAB by Ning Xu: compute_sad_loss.m, compute_mse_loss.m,
compute_gradient_loss.m with Guanglei Xiong's gaussgradient.m, compute_connectivity_error.m)
and its Python ports used by GCA-Matting / MatteFormer (utils/evaluate.py) and P3M-Net
(core/evaluate.py), which report whole-image figures the same way:

- SAD = Σ|α̂ − α| / 1000, MSE = mean (α̂ − α)², MAD = mean |α̂ − α| over the region's pixels.
- Gradient = Σ (|∇α̂| − |∇α|)² / 1000, ∇ by first-derivative-of-Gaussian filters, σ = 1.4,
  kernel half-size ceil(σ·sqrt(−2·ln(sqrt(2π)·σ·0.01))) = 4, L2-normalised, convolved with
  replicated borders (MATLAB imfilter 'replicate','conv' ≡ scipy.ndimage.convolve 'nearest').
- Connectivity, step 0.1, θ = 0.15, / 1000: for each threshold t the largest 4-connected
  component of (α̂ ≥ t) ∧ (α ≥ t); a pixel's level l is the last threshold at which it still
  belonged to it; φ = 1 − d·[d ≥ θ] with d = α − l; error Σ|φ̂ − φ|.

Where the ports disagree with the MATLAB reference, we follow MATLAB:
- Connectivity's largest component is the largest *foreground* component (MATLAB bwconncomp).
  The Python ports take argmax(bincount(labels)), which counts the background label 0 too and
  picks the background whenever it is the larger region.
- Thresholds are exactly k·step (MATLAB 0:step:1), not np.arange's accumulated 0.30000000000000004.
- Gradient takes α in [0, 1] as it is (as the Python ports do); MATLAB's mat2gray rescales each
  map to its own min/max, which is the same for any map that spans 0…1 and otherwise inflates a
  flat prediction's gradients.

Binary masks (salient-object sets such as ECSSD) also get MAE and maxF as the U²-Net authors'
Binary-Segmentation-Evaluation-Tool (xuebinqin, measures.py) computes them: MAE = mean |α̂ − α|;
precision and recall at 256 thresholds (α̂ ≥ k/255, k = 0…255, ground truth foreground α > 0.5),
F_β = (1 + β²)·P·R / (β²·P + R) with β² = 0.3, and maxF the maximum over thresholds. For a set,
precision and recall are first averaged over images at each threshold (`max_f_of_set`). Unlike
that tool we do not divide each map by its own maximum: the matte is scored as the job writes it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

GRADIENT_SIGMA = 1.4
CONNECTIVITY_STEP = 0.1
CONNECTIVITY_THETA = 0.15
F_BETA2 = 0.3
F_THRESHOLDS = 256


def as_unit(a: np.ndarray) -> np.ndarray:
    """uint8 0–255 → float64 0–1; float input is taken to be in [0, 1] already."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W) alpha map, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == bool:
        return a.astype(np.float64)
    a = a.astype(np.float64)
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"float alpha must lie in [0, 1], got [{a.min():.3g}, {a.max():.3g}]; pass uint8 for 0–255")
    return a


def _pair(pred, gt, region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, g = as_unit(pred), as_unit(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    m = np.ones(p.shape, bool) if region is None else np.asarray(region, bool)
    if m.shape != p.shape:
        raise ValueError(f"region {m.shape} and alpha {p.shape} differ in shape")
    return p, g, m


def sad(pred, gt, region=None) -> float:
    p, g, m = _pair(pred, gt, region)
    return float(np.abs(p - g)[m].sum() / 1000.0)


def mse(pred, gt, region=None) -> float:
    """Mean over the region's pixels (0 for an empty region, as the ports' + 1e-8 gives)."""
    p, g, m = _pair(pred, gt, region)
    return float(((p - g)[m] ** 2).sum() / max(int(m.sum()), 1))


def mad(pred, gt, region=None) -> float:
    p, g, m = _pair(pred, gt, region)
    return float(np.abs(p - g)[m].sum() / max(int(m.sum()), 1))


def gaussian_gradient_kernel(sigma: float = GRADIENT_SIGMA, epsilon: float = 1e-2) -> np.ndarray:
    """The x-derivative kernel of gaussgradient.m: G(y)·G'(x), normalised to unit L2 norm."""
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-u ** 2 / (2.0 * sigma ** 2)) / (sigma * math.sqrt(2.0 * math.pi))
    dg = -u * g / sigma ** 2
    hx = np.outer(g, dg)  # rows vary with y (Gaussian), columns with x (its derivative)
    return hx / np.sqrt((hx ** 2).sum())


def gradient_magnitude(a: np.ndarray, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    hx = gaussian_gradient_kernel(sigma)
    gx = ndimage.convolve(a, hx, mode="nearest")
    gy = ndimage.convolve(a, hx.T, mode="nearest")
    return np.sqrt(gx ** 2 + gy ** 2)


def gradient_error(pred, gt, region=None, sigma: float = GRADIENT_SIGMA) -> float:
    p, g, m = _pair(pred, gt, region)
    diff = (gradient_magnitude(p, sigma) - gradient_magnitude(g, sigma)) ** 2
    return float(diff[m].sum() / 1000.0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected foreground component of a boolean mask (all False when empty)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(mask.shape, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # label 0 is the background
    return labels == biggest


def connectivity_error(pred, gt, region=None, step: float = CONNECTIVITY_STEP,
                       theta: float = CONNECTIVITY_THETA) -> float:
    p, g, m = _pair(pred, gt, region)
    n = round(1.0 / step)
    thresholds = np.arange(n + 1) / n  # exactly 0, 0.1, …, 1 (MATLAB's 0:step:1)
    level = np.full(p.shape, -1.0)
    for i in range(1, n + 1):
        omega = largest_component((p >= thresholds[i]) & (g >= thresholds[i]))
        level[(level == -1.0) & ~omega] = thresholds[i - 1]
    level[level == -1.0] = 1.0
    dp, dg = p - level, g - level
    phi_p = 1.0 - dp * (dp >= theta)
    phi_g = 1.0 - dg * (dg >= theta)
    return float(np.abs(phi_p - phi_g)[m].sum() / 1000.0)


def matting_metrics(pred, gt, region=None) -> dict[str, float]:
    """SAD, MSE, MAD, Gradient and Connectivity over `region` (whole image when None)."""
    return {"sad": sad(pred, gt, region), "mse": mse(pred, gt, region), "mad": mad(pred, gt, region),
            "grad": gradient_error(pred, gt, region), "conn": connectivity_error(pred, gt, region)}


def precision_recall(pred, gt, thresholds: int = F_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of (pred ≥ k/(thresholds−1)) against gt > 0.5, k = 0…thresholds−1.

    Counted with one histogram per class, so 256 thresholds cost two passes over the image.
    Precision with nothing predicted and recall with no foreground are 0 (the tool's + 1e-8).
    """
    p, g, _ = _pair(pred, gt, None)
    fg = g > 0.5
    # Bin k holds the values that pass thresholds 0…k: floor(p·(T−1)) with a tolerance for
    # values that sit on a threshold (e.g. 51/255 vs 0.2).
    bins = np.floor(p * (thresholds - 1) + 1e-9).astype(np.int64).clip(0, thresholds - 1)
    tp_hist = np.bincount(bins[fg], minlength=thresholds)
    fp_hist = np.bincount(bins[~fg], minlength=thresholds)
    tp = np.cumsum(tp_hist[::-1])[::-1].astype(np.float64)  # pixels ≥ threshold k
    fp = np.cumsum(fp_hist[::-1])[::-1].astype(np.float64)
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    n_fg = float(fg.sum())
    recall = tp / n_fg if n_fg else np.zeros_like(tp)
    return precision, recall


def f_measure(precision: np.ndarray, recall: np.ndarray, beta2: float = F_BETA2) -> np.ndarray:
    num = (1.0 + beta2) * precision * recall
    den = beta2 * precision + recall
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def max_f(pred, gt, beta2: float = F_BETA2, thresholds: int = F_THRESHOLDS) -> float:
    """One image's maxF: the best F_β over the thresholds."""
    return float(f_measure(*precision_recall(pred, gt, thresholds), beta2).max())


def max_f_of_set(curves: list[tuple[np.ndarray, np.ndarray]], beta2: float = F_BETA2) -> float:
    """A set's maxF: precision and recall averaged over images per threshold, then F, then the max."""
    if not curves:
        return float("nan")
    precision = np.mean([c[0] for c in curves], axis=0)
    recall = np.mean([c[1] for c in curves], axis=0)
    return float(f_measure(precision, recall, beta2).max())


def mae(pred, gt) -> float:
    return mad(pred, gt)


def is_binary(gt: np.ndarray) -> bool:
    """A ground truth with only two levels (0 and the max) is a segmentation mask, not a matte."""
    values = np.unique(np.asarray(gt))
    return len(values) <= 2 and values.min() == 0
