"""The metric code against small cases worked out on paper (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.evaluation import metrics

# A 4×4 ground truth with a 2×2 foreground, and a prediction that gets three pixels wrong:
# (1,2) is 0.2 instead of 1, (2,2) is 0.8 instead of 1, background pixel (2,3) is 0.6.
GT = np.array([[0, 0, 0, 0],
               [0, 1, 1, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]], np.float64)
PRED = np.array([[0, 0, 0, 0],
                 [0, 1, 0.2, 0],
                 [0, 1, 0.8, 0.6],
                 [0, 0, 0, 0]], np.float64)


def test_sad_mse_mad_mae_by_hand():
    # |Δ| = 0.8, 0.2, 0.6 → Σ = 1.6; Σ Δ² = 0.64 + 0.04 + 0.36 = 1.04; 16 pixels.
    assert metrics.sad(PRED, GT) == pytest.approx(1.6 / 1000)
    assert metrics.mse(PRED, GT) == pytest.approx(1.04 / 16)
    assert metrics.mad(PRED, GT) == pytest.approx(1.6 / 16)
    assert metrics.mae(PRED, GT) == pytest.approx(0.1)


def test_region_restricts_the_sums_and_the_means():
    band = np.zeros((4, 4), bool)
    band[1:3] = True  # 8 pixels, holding all three errors
    assert metrics.sad(PRED, GT, band) == pytest.approx(1.6 / 1000)
    assert metrics.mse(PRED, GT, band) == pytest.approx(1.04 / 8)
    assert metrics.mad(PRED, GT, band) == pytest.approx(1.6 / 8)
    assert metrics.sad(PRED, GT, ~band) == 0.0
    assert metrics.mse(PRED, GT, np.zeros((4, 4), bool)) == 0.0  # empty region: 0, not a division error


def test_uint8_input_means_0_to_255():
    assert metrics.sad((PRED * 255).round().astype(np.uint8), (GT * 255).astype(np.uint8)) == pytest.approx(1.6 / 1000)
    with pytest.raises(ValueError, match="pass uint8"):
        metrics.sad(PRED * 255, GT)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.sad(PRED, GT[:3])


def test_max_f_by_hand():
    # 4 foreground pixels. Predicted positives at threshold t (pred ≥ t):
    #   t = 0:          all 16      P = 4/16, R = 1      F = 1.3·0.25/(0.075 + 1)   = 0.3023
    #   0 < t ≤ 0.2:    1,1,.8,.2,.6 P = 4/5, R = 1      F = 1.3·0.8/(0.24 + 1)     = 0.8387
    #   0.2 < t ≤ 0.6:  1,1,.8,.6    P = 3/4, R = 3/4    F = 0.75
    #   0.6 < t ≤ 0.8:  1,1,.8       P = 1,   R = 3/4    F = 1.3·0.75/(0.3 + 0.75)  = 13/14
    #   0.8 < t ≤ 1:    1,1          P = 1,   R = 1/2    F = 0.65/0.8               = 0.8125
    p, r = metrics.precision_recall(PRED, GT)
    assert len(p) == len(r) == 256
    assert (p[0], r[0]) == (pytest.approx(0.25), 1.0)
    assert (p[51], r[51]) == (pytest.approx(0.8), 1.0)  # t = 51/255 = 0.2: the 0.2 pixel still counts
    assert (p[52], r[52]) == (pytest.approx(0.75), 0.75)
    assert (p[204], r[204]) == (1.0, 0.75)  # t = 0.8
    assert (p[205], r[205]) == (1.0, 0.5)
    assert metrics.max_f(PRED, GT) == pytest.approx(13 / 14)


def test_max_f_of_a_set_averages_precision_and_recall_first():
    # With a perfect second image: at 0.6 < t ≤ 0.8, P = (1 + 1)/2, R = (0.75 + 1)/2 = 0.875
    # → F = 1.3·0.875/(0.3 + 0.875) = 1.1375/1.175 — not the mean of the two maxF (0.964).
    curves = [metrics.precision_recall(PRED, GT), metrics.precision_recall(GT, GT)]
    assert metrics.max_f_of_set(curves) == pytest.approx(1.1375 / 1.175)
    assert metrics.max_f(GT, GT) == 1.0
    # Nothing predicted anywhere: precision is 0, not NaN.
    assert metrics.max_f(np.zeros((4, 4)), GT) == pytest.approx(1.3 * 0.25 / 1.075)


def test_gradient_kernel_is_gaussgradient_m():
    """The kernel built with gaussgradient.m's own loops: half-size 4 for σ = 1.4, unit L2 norm."""
    sigma, eps = 1.4, 1e-2
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * eps)))
    assert half == 4

    def gauss(x):
        return math.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))

    hx = np.array([[gauss(i - half) * (-(j - half) * gauss(j - half) / sigma ** 2)
                    for j in range(2 * half + 1)] for i in range(2 * half + 1)])
    hx /= math.sqrt((hx ** 2).sum())
    np.testing.assert_allclose(metrics.gaussian_gradient_kernel(1.4), hx, rtol=1e-12)


def test_gradient_is_zero_for_constant_maps_and_sees_a_ramp():
    # Zero up to rounding: the antisymmetric kernel sums to ~1e-17, not exactly 0.
    assert metrics.gradient_error(np.full((20, 20), 0.3), np.full((20, 20), 0.7)) == pytest.approx(0.0, abs=1e-20)
    assert metrics.gradient_error(GT, GT) == 0.0
    # A ramp of slope c: away from the borders the x-gradient is c · Σ_u g(u) · Σ_v v² g(v) / σ² / ‖h‖,
    # the same at every pixel; the y-gradient is 0.
    c, sigma = 0.01, 1.4
    ramp = np.tile(np.arange(60) * c, (30, 1))
    u = np.arange(-4, 5)
    g = np.exp(-u ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    norm = np.sqrt(((np.outer(g, -u * g / sigma ** 2)) ** 2).sum())
    expected = c * g.sum() * (u ** 2 * g).sum() / sigma ** 2 / norm
    np.testing.assert_allclose(metrics.gradient_magnitude(ramp)[5:-5, 5:-5], expected, rtol=1e-9)
    # Against a flat prediction, the error is Σ |∇gt|² / 1000 over the region.
    region = np.zeros((30, 60), bool)
    region[10:20, 10:50] = True
    assert metrics.gradient_error(np.zeros((30, 60)), ramp, region) == pytest.approx(400 * expected ** 2 / 1000)


def test_connectivity_is_zero_for_a_perfect_prediction():
    assert metrics.connectivity_error(GT, GT) == 0.0
    assert metrics.connectivity_error(PRED, PRED) == 0.0


def test_connectivity_by_hand():
    # One row, 4-connectivity: gt = 1 1 0 1, pred = 1 .5 0 1.
    # t = 0.1…0.5: both ≥ t at pixels {0, 1} and {3}; the largest is {0, 1}, so pixels 2 and 3
    #   leave it at t = 0.1 and get level 0.
    # t = 0.6…1.0: {0} and {3} (a tie: either way gives the same error); pixel 1 leaves at t = 0.6
    #   and gets level 0.5; the pixel that stays to the end gets level 1.
    # levels 1, .5, 0, 0 → d_pred = 0, 0, 0, 1 and d_gt = 0, .5, 0, 1
    # φ = 1 − d·[d ≥ 0.15]: φ_pred = 1, 1, 1, 0 and φ_gt = 1, .5, 1, 0 → Σ|Δφ| = 0.5 → 0.0005.
    gt = np.array([[1.0, 1.0, 0.0, 1.0]])
    pred = np.array([[1.0, 0.5, 0.0, 1.0]])
    assert metrics.connectivity_error(pred, gt) == pytest.approx(0.5 / 1000)
    assert metrics.connectivity_error(pred, gt, np.array([[True, False, True, True]])) == 0.0


def test_largest_component_counts_foreground_only_with_4_connectivity():
    m = np.array([[1, 0, 0, 0, 0],
                  [0, 1, 0, 1, 1],
                  [0, 0, 0, 1, 0]], bool)
    # Diagonal neighbours are not connected: {(0,0)}, {(1,1)}, {(1,3),(1,4),(2,3)}; the background is larger.
    assert metrics.largest_component(m).sum() == 3
    assert not metrics.largest_component(np.zeros((3, 3), bool)).any()


def test_is_binary():
    assert metrics.is_binary(np.array([[0, 255], [255, 0]], np.uint8))
    assert not metrics.is_binary(np.array([[0, 128], [255, 0]], np.uint8))
