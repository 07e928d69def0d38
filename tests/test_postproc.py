"""Post-processing as pure functions: decoding every mode a catalog holds, alpha ops, outputs."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from postproc import DecodeError, PostprocParams, decode_image, model_input, render
from postproc.alpha import bounding_box, erode, feather, threshold, to_full_resolution
from postproc.colors import parse_color
from postproc.composite import over_color


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w=64, h=48) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                           np.full((h, w, 1), 128, np.float32)], axis=2).astype(np.uint8)


# -- decoding ---------------------------------------------------------------------------------

def test_exif_orientation_is_applied():
    im = Image.fromarray(gradient(64, 48))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = decode_image(pil_bytes(im, "JPEG", exif=exif.tobytes()))
    assert (out.width, out.height) == (48, 64)


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "TIFF"),
                                      ("RGB", "WEBP"), ("RGB", "BMP")])
def test_modes_decode_to_rgb(mode, fmt):
    im = Image.fromarray(gradient()).convert(mode)
    out = decode_image(pil_bytes(im, fmt))
    assert out.rgb.shape == (48, 64, 3) and out.rgb.dtype == np.uint8 and out.alpha is None


def test_16bit_png_is_scaled_not_clipped():
    a = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", a)
    out = decode_image(buf.tobytes())
    assert out.rgb.max() == 255 and out.rgb.min() == 0 and len(np.unique(out.rgb)) > 200


def test_rgba_and_palette_transparency_keep_their_alpha():
    rgba = np.dstack([gradient(), np.tile(np.r_[np.zeros(32), np.full(32, 255)].astype(np.uint8), (48, 1))])
    out = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.alpha is not None and out.alpha[:, :32].max() == 0 and out.alpha[:, 32:].min() == 255
    pal = Image.fromarray(rgba, "RGBA").convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    assert decode_image(pil_bytes(pal, "PNG", transparency=0)).alpha is not None
    # An opaque alpha channel is no transparency at all.
    assert decode_image(pil_bytes(Image.fromarray(gradient()).convert("RGBA"), "PNG")).alpha is None


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 200)]
    data = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(data)
    assert out.rgb.shape == (20, 30, 3) and abs(int(out.rgb.mean()) - 10) < 3


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"plain text, not an image" * 4, "unsupported_format"),
])
def test_bad_inputs_raise_decode_error_with_reason(data, reason):
    with pytest.raises(DecodeError) as e:
        decode_image(data)
    assert e.value.reason == reason


def test_truncated_jpeg_is_corrupt():
    data = pil_bytes(Image.fromarray(gradient(640, 480)), "JPEG")
    with pytest.raises(DecodeError) as e:
        decode_image(data[: len(data) // 2])
    assert e.value.reason == "corrupt"


def test_pixel_limit_refuses_before_decoding():
    data = pil_bytes(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(DecodeError) as e:
        decode_image(data, max_pixels=10_000_000)
    assert e.value.reason == "too_many_pixels" and "12.0 MP" in str(e.value)


def test_model_input_puts_transparency_over_white_and_resizes():
    rgba = np.zeros((40, 40, 4), np.uint8)  # black, fully transparent
    img = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    small = model_input(img, (16, 20))
    assert small.shape == (16, 20, 3) and small.min() == 255


# -- alpha ops (golden cases on synthetic mattes with known alpha) ----------------------------------

def square(size=41, half=10) -> np.ndarray:
    a = np.zeros((size, size), np.uint8)
    c = size // 2
    a[c - half:c + half + 1, c - half:c + half + 1] = 255
    return a


def test_threshold_zeroes_everything_below_it():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    t = threshold(a, 20)
    assert t[a < 20].max() == 0 and np.array_equal(t[a >= 20], a[a >= 20])
    assert threshold(a, 0) is a


@pytest.mark.parametrize("k", [1, 2, 4])
def test_erosion_by_k_shrinks_the_support_by_k(k):
    x, y, w, h = bounding_box(erode(square(), k))
    assert (w, h) == (21 - 2 * k, 21 - 2 * k) and (x, y) == (10 + k, 10 + k)


def test_feathering_stays_in_range_and_is_monotone_across_an_edge():
    a = np.zeros((20, 60), np.uint8)
    a[:, 30:] = 255
    f = feather(a, 3.0)
    row = f[10].astype(int)
    assert f.min() >= 0 and f.max() <= 255
    assert np.all(np.diff(row) >= 0) and 0 < row[29] < 255


def test_alpha_is_resized_to_the_input_resolution():
    prob = np.zeros((32, 32), np.float32)
    prob[8:24, 8:24] = 1.0
    full = to_full_resolution(prob, 300, 400)
    assert full.shape == (300, 400) and full.dtype == np.uint8 and full.max() == 255
    x, y, w, h = bounding_box(full, 128)
    assert abs(x - 100) <= 2 and abs(w - 200) <= 3 and abs(y - 75) <= 2 and abs(h - 150) <= 3


def test_bounding_box_of_empty_matte_is_none():
    assert bounding_box(np.zeros((5, 5), np.uint8)) is None


# -- compositing, encoding, parameters ---------------------------------------------------------

def test_over_opaque_color_blends_and_over_translucent_keeps_alpha():
    rgb = np.full((2, 2, 3), 200, np.uint8)
    alpha = np.array([[0, 255], [128, 255]], np.uint8)
    out = over_color(rgb, alpha, parse_color("black"))
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [200] * 3
    assert abs(int(out[1, 0, 0]) - 100) <= 1
    out = over_color(rgb, alpha, parse_color("#00000080"))
    assert out.shape == (2, 2, 4) and out[0, 0, 3] == 128 and out[0, 1, 3] == 255


@pytest.mark.parametrize("fmt,channels", [("png", 4), ("jpeg", 3), ("webp", 4), ("mask", 1)])
def test_each_format_round_trips_with_the_expected_mode_and_size(fmt, channels):
    rgb = gradient(64, 48)
    prob = np.zeros((20, 20), np.float32)
    prob[5:15, 5:15] = 1
    params = PostprocParams.create(format=fmt)
    out = render(rgb, prob, params)
    decoded = cv2.imdecode(np.frombuffer(out.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape[:2] == (48, 64)
    assert (decoded.shape[2] if decoded.ndim == 3 else 1) == channels
    assert out.bbox is not None


def test_png_is_lossless_with_either_writer():
    rgb = gradient(64, 48)
    prob = np.full((8, 8), 0.5, np.float32)
    for level in (None, 6):
        out = render(rgb, prob, PostprocParams.create(png_compression=level))
        back = cv2.cvtColor(cv2.imdecode(np.frombuffer(out.data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        assert np.array_equal(back[..., :3], rgb) and np.array_equal(back[..., 3], out.alpha)


def test_input_transparency_stays_transparent():
    rgb = gradient(64, 48)
    in_alpha = np.zeros((48, 64), np.uint8)
    in_alpha[:, 32:] = 255
    out = render(rgb, np.ones((10, 10), np.float32), PostprocParams(), in_alpha)
    assert out.alpha[:, :32].max() == 0 and out.alpha[:, 32:].min() == 255


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha_threshold": 300}, "alpha_threshold"), ({"erode": -1}, "erode"), ({"format": "gif"}, "format"),
    ({"background": "nocolour"}, "unknown colour"), ({"quality": 0}, "quality"), ({"png_compression": 12}, "png"),
    ({"sharpen": 1}, "unknown post-processing parameter"),
])
def test_out_of_range_parameters_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PostprocParams.create(**kwargs)


def test_params_hash_is_stable_and_tracks_effective_values():
    a = PostprocParams.create(background="white", alpha_threshold=10)
    assert a.params_hash() == PostprocParams.create(background="#fff", alpha_threshold=10).params_hash()
    assert a.params_hash() != PostprocParams.create(background="white", alpha_threshold=11).params_hash()
    assert len(a.params_hash()) == 16 and a.params_hash() == a.params_hash()
    assert PostprocParams.create(format="jpeg").background == "white"  # JPEG needs a colour


@pytest.mark.parametrize("text,rgba", [("white", (255, 255, 255, 255)), ("#f00", (255, 0, 0, 255)),
                                       ("#00ff0080", (0, 255, 0, 128)), ("0000FF", (0, 0, 255, 255))])
def test_colours(text, rgba):
    assert parse_color(text) == rgba
