"""The GPU path's torch twins against the numpy reference in postproc/, side by side on CPU tensors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from catalog import real_photos
from pipelines.batch import torch_ops
from model.preprocess import UPSAMPLE_FILTERS
from model.specs import PreprocessSpec
from postproc import PostprocParams, decode_image, model_input
from postproc import alpha as alpha_ops
from postproc.render import refine_alpha

TOL = 1  # 1/255


def _photo(i: int = 0) -> np.ndarray:
    return decode_image(real_photos(5)[i][1]).rgb


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def _prob(seed: int, size=(320, 320)) -> np.ndarray:
    """A smooth matte with a soft edge and a sharp blob, like a model's output."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[0], :size[1]] / max(size)
    p = 1 / (1 + np.exp(-((0.3 - np.hypot(yy - 0.5, xx - 0.45)) * rng.uniform(15, 60))))
    p[40:60, 200:230] = 1.0
    return p.astype(np.float32)


def _close(got: torch.Tensor, want: np.ndarray, tol: int = TOL) -> None:
    g = got.numpy().astype(int)
    assert g.shape == want.shape
    diff = np.abs(g - want.astype(int)).max()
    assert diff <= tol, f"max |Δ| {diff} > {tol}"


@pytest.mark.parametrize("size", [(320, 320), (192, 192), (700, 900)])
def test_model_input_matches_opencv(size):
    for i in range(3):
        rgb = _photo(i)
        want = model_input(decode_image(real_photos(5)[i][1]), PreprocessSpec(input_size=size, resize="area"))
        # to the bit: the models turn one level of input into several of alpha
        _close(torch_ops.model_input(_chw(rgb), size).permute(1, 2, 0), want, 0)


@pytest.mark.parametrize("resize", ["pil_lanczos", "pil_bilinear", "pil_bicubic", "linear"])
@pytest.mark.parametrize("preshrink", [0.0, 2.0])
def test_model_input_follows_the_specs_filter(resize, preshrink):
    """The spec's filter and pre-shrink on the GPU path: Pillow's antialiased kernels in one float pass
    per axis (Pillow rounds to 8 bits between its two passes, hence a level of tolerance)."""
    spec = PreprocessSpec(input_size=(320, 320), resize=resize, preshrink=preshrink)
    for i in range(2):
        img = decode_image(real_photos(5)[i][1])
        want = model_input(img, spec)
        got = torch_ops.model_input(_chw(img.rgb), spec.input_size, None, torch_ops.spec_filter(spec),
                                    spec.preshrink).permute(1, 2, 0)
        _close(got, want, 0 if resize == "linear" else 1)


def test_model_input_composites_transparency_over_white():
    rgb = _photo(1)
    a = np.zeros(rgb.shape[:2], np.uint8)
    a[100:300, 50:400] = 255
    a[:, :40] = 128
    from postproc.decode import DecodedImage

    want = model_input(DecodedImage(rgb, a, "PNG"), PreprocessSpec(resize="area"))
    _close(torch_ops.model_input(_chw(rgb), (320, 320), alpha=torch.from_numpy(a)).permute(1, 2, 0), want)


@pytest.mark.parametrize("name,interp", [("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC),
                                         ("lanczos", cv2.INTER_LANCZOS4), ("area", cv2.INTER_AREA),
                                         ("nearest", cv2.INTER_NEAREST)])
@pytest.mark.parametrize("out", [(320, 320), (100, 137), (900, 1000)])
def test_each_filter_matches_opencv(name, interp, out):
    rgb = _photo(2)
    if name == "area" and (out[0] > rgb.shape[0] or out[1] > rgb.shape[1]):
        interp = cv2.INTER_LINEAR  # the spec's "area" (model/preprocess.py): INTER_LINEAR when enlarging
    want = cv2.resize(rgb, (out[1], out[0]), interpolation=interp)
    exact = name in ("bilinear", "nearest") or interp == cv2.INTER_LINEAR  # OpenCV's area sums in float: ties may round apart
    _close(torch_ops.resize(_chw(rgb), *out, filter=name).permute(1, 2, 0), want, 0 if exact else TOL)


def test_unknown_filter_names_the_valid_ones():
    with pytest.raises(ValueError, match="known: area, bilinear"):
        torch_ops.resize(torch.zeros(3, 10, 10, dtype=torch.uint8), 5, 5, filter="gaussian")


@pytest.mark.parametrize("hw", [(768, 1024), (300, 451), (64, 48)])
def test_alpha_ops_match_numpy(hw):
    prob = _prob(hw[0])
    want = alpha_ops.to_full_resolution(prob, *hw)
    got = torch_ops.to_full_resolution(torch.from_numpy(prob), *hw)
    _close(got, want)
    a = want
    _close(torch_ops.threshold(torch.from_numpy(a), 100), alpha_ops.threshold(a, 100), 0)
    for px in (1, 3, 10):
        _close(torch_ops.erode(torch.from_numpy(a), px), alpha_ops.erode(a, px), 0)
    for sigma in (0.8, 2.0, 5.5):
        _close(torch_ops.feather(torch.from_numpy(a), sigma), alpha_ops.feather(a, sigma))
    assert torch_ops.bounding_box(torch.from_numpy(a)) == alpha_ops.bounding_box(a)
    assert torch_ops.bounding_box(torch.zeros(5, 5, dtype=torch.uint8)) is None


@pytest.mark.parametrize("upsample", UPSAMPLE_FILTERS)
@pytest.mark.parametrize("hw", [(768, 1024), (300, 451), (200, 333)])
def test_upsample_filters_match_numpy(upsample, hw):
    """Every PreprocessSpec.upsample filter, enlarging and shrinking an axis (ecssd60's photos are
    ≤ 400 px, so one axis of a 320² alpha can shrink), to within one level of the reference."""
    for seed in (1, 7):
        prob = _prob(seed)
        want = alpha_ops.to_full_resolution(prob, *hw, upsample)
        _close(torch_ops.to_full_resolution(torch.from_numpy(prob), *hw, upsample), want)
    # A different filter gives a different matte: the field is not ignored (Pillow's bilinear is
    # OpenCV's when both axes grow; they differ only where Pillow antialiases a shrinking axis).
    if upsample not in ("linear", "pil_bilinear"):
        assert (want != alpha_ops.to_full_resolution(prob, *hw)).any()
    # GPU post-processing passes the spec's filter through
    params = PostprocParams()
    _close(torch_ops.refine_alpha(torch.from_numpy(prob), *hw, params, upsample=upsample),
           refine_alpha(prob, *hw, params, upsample=upsample))


PARAMS = [
    dict(),
    dict(alpha_threshold=30, erode=2, feather=1.5),
    dict(format="jpeg"),
    dict(background="#3366cc80", format="webp", crop=True, crop_margin=10),
    dict(crop=True, max_size=400),
    dict(format="mask", erode=1),
    dict(background_image="bg.jpg", max_size=500),
]


@pytest.mark.parametrize("kwargs", PARAMS, ids=[str(p) or "default" for p in PARAMS])
def test_refine_and_compose_match_the_reference(kwargs):
    """The whole GPU post-processing against postproc.render on the same inputs, before encoding."""
    from postproc import geometry
    from postproc.alpha import bounding_box
    from postproc.composite import cutout, over_color, over_image

    params = PostprocParams.create(**kwargs)
    rgb = _photo(3)
    h, w = rgb.shape[:2]
    prob = _prob(7)
    bg = _photo(4) if params.background_image else None
    in_alpha = np.full((h, w), 255, np.uint8)
    in_alpha[:, : w // 5] = 90
    want_a = refine_alpha(prob, h, w, params, in_alpha)
    got_a = torch_ops.refine_alpha(torch.from_numpy(prob), h, w, params, torch.from_numpy(in_alpha))
    _close(got_a, want_a)
    got = torch_ops.compose(_chw(rgb), torch.from_numpy(want_a), params,
                            None if bg is None else _chw(bg))
    # The reference's composition, step by step as compose_and_encode does it (it encodes at the end).
    r, a = rgb, want_a
    if params.crop:
        box = geometry.crop_box(bounding_box(a), params.crop_margin, h, w)
        r, a = geometry.crop(r, box), geometry.crop(a, box)
    hh, ww = geometry.fit_size(*a.shape, params.max_size)
    r, a = geometry.resize(r, hh, ww), geometry.resize(a, hh, ww)
    if params.format == "mask":
        want = a[..., None]
    elif bg is not None:
        want = over_image(r, a, geometry.cover(bg, hh, ww))
    elif params.background_rgba is not None:
        want = over_color(r, a, params.background_rgba)
    else:
        want = cutout(r, a)
    _close(got, want)


def test_refinement_and_decontamination_are_not_eligible():
    from pipelines.batch.gpu_path import gpu_eligible

    assert gpu_eligible(PostprocParams.create())[0]
    assert not gpu_eligible(PostprocParams.create(refine="guided"))[0]
    assert not gpu_eligible(PostprocParams.create(decontaminate=True))[0]
    assert gpu_eligible(PostprocParams.create(decontaminate=True, format="mask"))[0]


@pytest.mark.parametrize("name,resample", [("pil_lanczos", "LANCZOS"), ("pil_bilinear", "BILINEAR"),
                                           ("pil_bicubic", "BICUBIC")])
@pytest.mark.parametrize("out", [(320, 320), (192, 192), (900, 1000)])
def test_pillow_filters_match_pillow_to_the_bit(name, resample, out):
    """The spec's Pillow filters (model/preprocess.py's resize names): fixed-point passes as Pillow runs them."""
    from PIL import Image

    rgb = _photo(0)
    want = np.asarray(Image.fromarray(rgb).resize((out[1], out[0]), getattr(Image.Resampling, resample),
                                                  reducing_gap=None))
    _close(torch_ops.resize(_chw(rgb), *out, filter=name).permute(1, 2, 0), want, 0)
