"""The preprocessing contract (model/preprocess.py): numpy and torch twins held against each other,
the resize filter carried by the spec, and the filter applied where the model input is made."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.preprocess import (RESIZE_FILTERS, UPSAMPLE_FILTERS, finish_output, finish_output_torch, normalize_batch,
                              normalize_batch_torch, probabilities_to_ship, resize_rgb)
from model.specs import MODEL_SPECS, ModelSpec, PreprocessSpec
from postproc import decode_image, model_input

SAMPLES = Path(__file__).resolve().parent.parent / "pipelines" / "samples"


def photo(name: str = "chelsea.jpg") -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / name).convert("RGB"))


@pytest.mark.parametrize("scale", ["max", "unit"])
def test_normalize_twins_agree(scale):
    spec = PreprocessSpec(input_scale=scale, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (3, 24, 20, 3), dtype=np.uint8)  # peaks below 255: "max" differs from "unit"
    images[2] = 0  # all black: "max" must not divide by zero
    want = normalize_batch(images, spec)
    got = normalize_batch_torch(torch.from_numpy(images), spec)
    assert got.shape == want.shape == (3, 3, 24, 20) and got.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)
    assert normalize_batch_torch(torch.from_numpy(images), spec, torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match="uint8"):
        normalize_batch_torch(torch.zeros(1, 4, 4, 3), spec)


@pytest.mark.parametrize("activation", ["sigmoid", "none"])
@pytest.mark.parametrize("normalization", ["minmax", "none"])
def test_finish_twins_agree(activation, normalization):
    spec = PreprocessSpec(output_activation=activation, output_normalization=normalization)
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 3, (2, 1, 16, 12)).astype(np.float32)
    if activation == "sigmoid":
        raw = 1 / (1 + np.exp(-raw)) * 0.8 + 0.05  # probabilities that minmax visibly stretches
    raw[1] = 0.3  # a flat prediction: minmax must not divide by zero
    want = finish_output(raw, spec)
    got = finish_output_torch(torch.from_numpy(raw), spec).numpy()
    assert got.shape == want.shape == (2, 16, 12)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert want.min() >= 0 and want.max() <= 1


@pytest.mark.parametrize("resize,mode,max_diff", [("pil_bilinear", "bilinear", 1), ("pil_bicubic", "bicubic", 2)])
def test_pillow_antialiased_filters_are_torchs(resize, mode, max_diff):
    """torch's interpolate(antialias=True) ports Pillow's kernels: one candidate covers both.

    Pillow rounds to uint8 between its horizontal and vertical passes, torch does not: bicubic's
    overshoot makes that up to 2 grey levels at a few pixels."""
    src = photo()
    ours = resize_rgb(src, (200, 150), resize).astype(int)
    t = torch.from_numpy(src.copy()).permute(2, 0, 1)[None].float()
    theirs = torch.nn.functional.interpolate(t, size=(200, 150), mode=mode, antialias=True, align_corners=False)
    theirs = theirs.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - theirs).max() <= max_diff and np.abs(ours - theirs).mean() < 0.25


def test_each_filter_is_what_it_names():
    src = photo()
    size = (120, 160)
    pil = Image.fromarray(src)
    exact = {"pil_lanczos": Image.Resampling.LANCZOS, "pil_bilinear": Image.Resampling.BILINEAR,
             "pil_bicubic": Image.Resampling.BICUBIC}
    outs = {}
    for f in RESIZE_FILTERS:
        outs[f] = resize_rgb(src, size, f, preshrink=0)
        assert outs[f].shape == (*size, 3) and outs[f].dtype == np.uint8
        if f in exact:
            assert np.array_equal(outs[f], np.asarray(pil.resize(size[::-1], exact[f], reducing_gap=None)))
    assert len({o.tobytes() for o in outs.values()}) == len(RESIZE_FILTERS)  # five different images
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_rgb(src, size, "nearest")


def test_preshrink_changes_large_inputs_little_and_small_ones_not_at_all():
    big = np.asarray(Image.fromarray(photo()).resize((1800, 1200), Image.Resampling.BICUBIC))
    exact = resize_rgb(big, (320, 320), "pil_lanczos", preshrink=0).astype(int)
    shortcut = resize_rgb(big, (320, 320), "pil_lanczos", preshrink=2).astype(int)
    assert not np.array_equal(exact, shortcut)  # it did take the shortcut
    assert np.abs(exact - shortcut).mean() < 1.0  # ...and it costs under one grey level on average
    small = photo()  # 451×300: no axis over 2 × 320
    assert np.array_equal(resize_rgb(small, (320, 320), "pil_lanczos", 2), resize_rgb(small, (320, 320),
                                                                                         "pil_lanczos", 0))


def test_model_input_uses_the_specs_filter():
    data = (SAMPLES / "coffee.jpg").read_bytes()
    img = decode_image(data)
    for f in RESIZE_FILTERS:
        pre = PreprocessSpec(input_size=(96, 128), resize=f)
        assert np.array_equal(model_input(img, pre), resize_rgb(img.rgb, (96, 128), f, pre.preshrink))
    # size overrides the spec's input size (the training cache), with the spec's filter
    pre = PreprocessSpec(resize="pil_lanczos")
    assert np.array_equal(model_input(img, pre, (64, 64)), resize_rgb(img.rgb, (64, 64), "pil_lanczos",
                                                                            pre.preshrink))


def test_spec_carries_the_filter_and_old_specs_keep_inter_area():
    for spec in MODEL_SPECS.values():
        assert spec.preprocess.resize in RESIZE_FILTERS
    spec = replace(MODEL_SPECS["unet-small"], preprocess=replace(MODEL_SPECS["unet-small"].preprocess,
                                                                 resize="pil_bicubic", preshrink=3.0))
    back = ModelSpec.from_json_dict(json.loads(json.dumps(spec.to_json_dict())))
    assert back.preprocess == spec.preprocess
    old = spec.to_json_dict()
    del old["preprocess"]["resize"], old["preprocess"]["preshrink"]  # a file written before the fields
    assert ModelSpec.from_json_dict(old).preprocess.resize == "area"
    with pytest.raises(ValueError, match="resize must be one of"):
        PreprocessSpec(resize="lanczos")
    with pytest.raises(ValueError, match="preshrink"):
        PreprocessSpec(preshrink=0.5)


def test_spec_carries_the_upsample_filter_and_old_specs_keep_linear():
    for spec in MODEL_SPECS.values():
        assert spec.preprocess.upsample in UPSAMPLE_FILTERS
    pre = replace(MODEL_SPECS["u2netp"].preprocess, upsample="pil_bicubic_u8")
    spec = replace(MODEL_SPECS["u2netp"], preprocess=pre)
    d = json.loads(json.dumps(spec.to_json_dict()))
    assert d["preprocess"]["upsample"] == "pil_bicubic_u8"
    assert ModelSpec.from_json_dict(d).preprocess == spec.preprocess
    del d["preprocess"]["upsample"]  # a file written before the field: the filter it was used with
    assert ModelSpec.from_json_dict(d).preprocess.upsample == "linear"
    with pytest.raises(ValueError, match="upsample must be one of"):
        PreprocessSpec(upsample="area")


def test_transparent_input_goes_over_white_before_any_filter():
    rgba = np.zeros((40, 40, 4), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    img = decode_image(buf.getvalue())
    for f in RESIZE_FILTERS:
        assert model_input(img, PreprocessSpec(input_size=(32, 32), resize=f)).min() == 255


def test_training_makes_its_photos_with_the_teachers_filter(tmp_path):
    from model.specs import get_spec
    from pipelines.training.train import TrainConfig
    from pipelines.training.train_data import cache_path, read_rgb

    p = SAMPLES / "coffee.jpg"
    pre = replace(get_spec("u2netp").preprocess, resize="pil_bicubic")
    assert np.array_equal(read_rgb(p, 64, pre), resize_rgb(decode_image(p.read_bytes()).rgb, (64, 64), "pil_bicubic",
                                                           pre.preshrink))
    # Another filter makes other photos and teacher alphas: its own cache folder; "area" keeps the old name.
    assert cache_path(tmp_path, p, "v", 64, "area").parent.name == "v-64"
    assert cache_path(tmp_path, p, "v", 64, "pil_lanczos").parent.name == "v-pil_lanczos-64"
    student = TrainConfig(images=("photos",), out="o.safetensors").student_spec(0)
    assert student.preprocess.resize == get_spec("u2netp").preprocess.resize


def test_eval_overrides_the_filter_per_model_entry():
    from pipelines.evaluation.evaluate import parse_model

    c = parse_model("u2netp:resize=pil_lanczos,preshrink=0")
    assert c.label == "u2netp:resize=pil_lanczos,preshrink=0" and c.name == "u2netp"
    assert c.spec().preprocess.resize == "pil_lanczos" and c.spec().preprocess.preshrink == 0
    assert parse_model("unet-small").spec() == MODEL_SPECS["unet-small"]
    with pytest.raises(ValueError, match="resize must be one of"):
        parse_model("u2netp:resize=lanczos")
    with pytest.raises(ValueError, match="preshrink must be a number"):
        parse_model("u2netp:preshrink=two")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model("u2netp:resize=area,mean=0")
    c = parse_model("u2netp:upsample=pil_lanczos_u8")
    assert c.label == "u2netp:upsample=pil_lanczos_u8" and c.spec().preprocess.upsample == "pil_lanczos_u8"
    with pytest.raises(ValueError, match="upsample must be one of"):
        parse_model("u2netp:upsample=area")


@pytest.mark.parametrize("upsample", ["pil_lanczos_u8", "pil_bilinear_u8"])
def test_shipped_probabilities_render_the_cut_out_eval_scores(upsample):
    """The job and Serve ship float16 probabilities; for an `_u8` filter the cut-out must be the one
    rendered from the model's float32 output (what `matting eval` scores), level for level."""
    from postproc.alpha import to_full_resolution

    rng = np.random.default_rng(3)
    k = rng.integers(0, 255, (64, 64))
    # Values just either side of the 8-bit rounding boundaries, where a float16 cast tips over.
    prob = ((k + 0.5 + rng.choice([-1, 1], k.shape) * rng.uniform(1e-5, 4e-4, k.shape)) / 255).astype(np.float32)
    want = to_full_resolution(prob, 150, 110, upsample)
    assert np.array_equal(to_full_resolution(probabilities_to_ship(prob, upsample), 150, 110, upsample), want)
    assert not np.array_equal(to_full_resolution(prob.astype(np.float16), 150, 110, upsample), want)  # the cast alone
    assert probabilities_to_ship(prob, upsample).dtype == np.float16


def test_shipped_probabilities_keep_float16_precision_for_float_filters():
    prob = np.random.default_rng(4).random((32, 32), dtype=np.float32)
    assert np.array_equal(probabilities_to_ship(prob, "linear"), prob.astype(np.float16))
