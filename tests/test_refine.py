"""Refinement and decontamination: golden cases on small synthetic images with known alpha.

pymatting runs here on images of a few thousand pixels; its numba kernels come from the cache
that `matting warmup` (the Makefile's install step) fills.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from postproc import PostprocParams, render
from postproc.refine import (RefinementSkipped, closed_form, decontaminate, degenerate_reason, guided,
                             make_trimap, working_scale)


def edge_scene(h=48, w=64, edge=37, blur_from=24, blur_to=48):
    """A blue subject left of column `edge` on a yellow background, with its true hard matte, and a
    'predicted' matte whose soft ramp is centred a few px off the true edge (as an upsampled model's is)."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :edge] = (30, 60, 200)
    rgb[:, edge:] = (230, 210, 40)
    truth = np.zeros((h, w), np.uint8)
    truth[:, :edge] = 255
    ramp = np.clip((blur_to - np.arange(w)) / (blur_to - blur_from), 0, 1)
    predicted = np.tile((ramp * 255 + 0.5).astype(np.uint8), (h, 1))
    return rgb, truth, predicted


def sad(a, b) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).sum()) / 255.0


# -- trimap --------------------------------------------------------------------------------------

def test_trimap_marks_sure_regions_and_erodes_them_by_k():
    alpha = np.zeros((20, 40), np.uint8)
    alpha[:, 20:] = 255
    alpha[:, 18:20] = 128
    t = make_trimap(alpha, fg_level=240, bg_level=10, erode_px=3)
    row = t[10]
    assert set(np.unique(t)) == {0, 128, 255}
    # Background ends at column 17 → eroded to 14; foreground starts at 20 → eroded to 23.
    assert row[:15].max() == 0 and row[15:23].tolist() == [128] * 8 and row[23:].min() == 255


@pytest.mark.parametrize("alpha,reason", [
    (np.full((16, 16), 255, np.uint8), "no unknown band"),  # all foreground
    (np.zeros((16, 16), np.uint8), "no unknown band"),  # all background
    (np.where(np.arange(16) < 8, 0, 255).astype(np.uint8)[None].repeat(16, 0), "no unknown band"),  # hard: empty band
    (np.full((16, 16), 128, np.uint8), "no sure foreground"),  # all unknown
    (np.where(np.arange(16) < 8, 128, 255).astype(np.uint8)[None].repeat(16, 0), "no sure background"),
])
def test_degenerate_trimaps_return_the_matte_unrefined_with_a_warning(alpha, reason):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert reason in degenerate_reason(make_trimap(alpha, 240, 10, 0))
    with pytest.warns(RefinementSkipped, match=reason):
        out = closed_form(rgb, alpha, fg_level=240, bg_level=10, erode_px=0, max_pixels=10**6)
    assert out is alpha


def test_degenerate_trimap_through_render_gives_an_output_not_an_error():
    rgb = np.full((32, 32, 3), 90, np.uint8)
    with pytest.warns(RefinementSkipped):
        out = render(rgb, np.ones((8, 8), np.float32), PostprocParams.create(refine="trimap"))
    assert out.alpha.min() == 255 and out.data[:4] == b"\x89PNG"


def test_closed_form_snaps_the_matte_to_the_image_edge():
    rgb, truth, predicted = edge_scene()
    refined = closed_form(rgb, predicted, fg_level=240, bg_level=10, erode_px=2, max_pixels=10**6)
    assert refined.shape == truth.shape and refined.dtype == np.uint8
    assert sad(refined, truth) < 0.3 * sad(predicted, truth)
    # The predicted ramp was centred at column 36: the refined edge is a step at the image's edge (37),
    # with the linear drift closed-form matting gives across flat colour on either side.
    assert refined[:, 36].min() > 200 and refined[:, 37].max() < 60
    # The sure regions of the trimap are kept exactly.
    sure = make_trimap(predicted, 240, 10, 2)
    assert np.array_equal(refined[sure == 255], np.full((sure == 255).sum(), 255))
    assert refined[sure == 0].max() == 0


def test_closed_form_above_the_pixel_limit_solves_small_and_returns_full_size():
    rgb, truth, predicted = edge_scene(h=96, w=128, edge=74, blur_from=48, blur_to=96)
    assert working_scale(96, 128, 3000) < 0.5
    refined = closed_form(rgb, predicted, fg_level=240, bg_level=10, erode_px=1, max_pixels=3000)
    assert refined.shape == (96, 128)
    assert sad(refined, truth) < 0.3 * sad(predicted, truth)
    assert refined[:, :40].min() == 255 and refined[:, 110:].max() == 0


def test_a_wide_band_is_solved_coarser_and_still_returns_full_size(monkeypatch):
    """A matte grey over most of the image: the band exceeds a quarter of the pixel limit."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    alpha = np.full((80, 80), 128, np.uint8)
    alpha[:, :10] = 255
    alpha[:, 70:] = 0
    import postproc.refine as refine_mod

    sizes = []
    real = refine_mod.make_trimap
    monkeypatch.setattr(refine_mod, "make_trimap", lambda a, *args: sizes.append(a.shape) or real(a, *args))
    out = closed_form(rgb, alpha, fg_level=240, bg_level=10, erode_px=2, max_pixels=6400)
    assert sizes[0] == (80, 80) and sizes[1][0] * sizes[1][1] <= 6400 // 4 * 1.5  # band ≤ ~1600 px
    assert out.shape == (80, 80) and out[:, :6].min() == 255 and out[:, 75:].max() == 0


# -- guided filter -------------------------------------------------------------------------------

@pytest.mark.parametrize("max_pixels", [10**6, 800])  # at full resolution, and the fast (subsampled) path
def test_guided_filter_puts_the_edge_on_the_image_edge(max_pixels):
    rgb, truth, predicted = edge_scene(blur_from=20, blur_to=46)  # predicted edge (alpha 128) at 33, true at 37
    out = guided(rgb, predicted, radius=6 if max_pixels > 1000 else 3, eps=1e-4, max_pixels=max_pixels)
    assert out.shape == truth.shape and out.dtype == np.uint8
    # Nothing leaks past the image's edge, the matte falls monotonically towards it, and it is
    # closer to the truth than the predicted ramp.
    assert out[:, 37:].max() <= 2 and out[:, 36].min() > 80
    assert np.all(np.diff(out[10].astype(int)) <= 0)
    assert sad(out, truth) < 0.6 * sad(predicted, truth)


def test_guided_filter_keeps_a_flat_matte_flat():
    rgb = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for v in (0, 255):
        out = guided(rgb, np.full((40, 40), v, np.uint8), radius=4, eps=1e-3, max_pixels=10**6)
        assert np.abs(out.astype(int) - v).max() <= 1


def test_refinement_needs_the_image():
    from postproc.render import refine_alpha

    with pytest.raises(ValueError, match="needs the"):
        refine_alpha(np.ones((8, 8), np.float32), 16, 16, PostprocParams.create(refine="guided"))


# -- decontamination -----------------------------------------------------------------------------

def test_decontamination_removes_a_known_background_colour_from_the_edge():
    h, w = 32, 48
    fg_colour, bg_colour = np.array([220, 40, 30], float), np.array([20, 200, 60], float)
    ramp = np.clip((np.arange(w) - 16) / 16.0, 0, 1)  # alpha 0 → 1 over 16 px
    alpha_f = np.tile(ramp, (h, 1))
    composite = (alpha_f[..., None] * fg_colour + (1 - alpha_f[..., None]) * bg_colour + 0.5).astype(np.uint8)
    alpha = (alpha_f * 255 + 0.5).astype(np.uint8)
    out = decontaminate(composite, alpha, max_pixels=10**6)
    edge = (alpha >= 64) & (alpha <= 230)
    before = np.abs(composite[edge].astype(float) - fg_colour).max(axis=1).mean()
    after = np.abs(out[edge].astype(float) - fg_colour).max(axis=1).mean()
    assert before > 50 and after < 12, (before, after)
    # Opaque and transparent pixels keep the image's colour.
    assert np.array_equal(out[alpha == 255], composite[alpha == 255])
    assert np.array_equal(out[alpha == 0], composite[alpha == 0])


def test_decontamination_of_a_hard_matte_changes_nothing():
    rgb = np.random.default_rng(2).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    alpha = np.zeros((10, 10), np.uint8)
    alpha[:, 5:] = 255
    assert decontaminate(rgb, alpha, max_pixels=10**6) is rgb


def test_decontaminated_cutout_over_a_new_background_has_no_old_background_colour():
    h, w = 32, 48
    ramp = np.clip((28 - np.arange(w)) / 16.0, 0, 1)  # a white subject fading into a green screen
    rgb = (np.tile(ramp, (h, 1))[..., None] * np.array([250, 250, 250]) +
           (1 - np.tile(ramp, (h, 1))[..., None]) * np.array([0, 255, 0]) + 0.5).astype(np.uint8)
    prob = np.tile(ramp, (h, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no refinement warnings on a plain case
        plain = render(rgb, prob, PostprocParams.create(background="black", format="jpeg", quality=100))
        clean = render(rgb, prob, PostprocParams.create(background="black", format="jpeg", quality=100,
                                                        decontaminate=True))
    def greenness(data):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(int)  # BGR
        band = img[:, 14:28]
        return float((band[..., 1] - band[..., 2]).mean())  # green minus red over the soft edge

    assert greenness(plain.data) > 20 and greenness(clean.data) < 5
