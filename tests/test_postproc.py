"""Post-processing as pure functions: decoding every mode a catalog holds, alpha ops, outputs."""

from __future__ import annotations

import hashlib
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from model.specs import PreprocessSpec
from postproc import DecodeError, PostprocParams, decode_image, model_input, render
from postproc.alpha import bounding_box, erode, feather, threshold, to_full_resolution
from postproc.colors import NAMED_COLORS, parse_color, to_hex
from postproc.composite import over_color
from postproc.geometry import cover, crop_box, fit_size
from postproc.render import compose_and_encode


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
    small = model_input(img, PreprocessSpec(), (16, 20))
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


def test_the_alpha_is_enlarged_with_the_specs_upsample_filter():
    """Each PreprocessSpec.upsample filter is the library call it names, and refine_alpha/render use it."""
    rng = np.random.default_rng(3)
    prob = cv2.GaussianBlur(rng.random((40, 40)).astype(np.float32), (0, 0), 2.0)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    size = (90, 130)
    want = {
        "linear": cv2.resize(prob, size[::-1], interpolation=cv2.INTER_LINEAR),
        "cubic": cv2.resize(prob, size[::-1], interpolation=cv2.INTER_CUBIC),
        "pil_lanczos": np.asarray(Image.fromarray(prob).resize(size[::-1], Image.Resampling.LANCZOS)),
    }
    for name, up in want.items():
        assert np.array_equal(to_full_resolution(prob, *size, name),
                              (np.clip(up, 0, 1) * 255 + 0.5).astype(np.uint8)), name
    # _u8: rounded to 8 bits at model size first, then Pillow's filter on the 8-bit image (rembg's way)
    small = Image.fromarray((prob * 255 + 0.5).astype(np.uint8))
    assert np.array_equal(to_full_resolution(prob, *size, "pil_lanczos_u8"),
                          np.asarray(small.resize(size[::-1], Image.Resampling.LANCZOS)))
    assert np.array_equal(to_full_resolution(prob, *size), to_full_resolution(prob, *size, "linear"))
    with pytest.raises(ValueError, match="upsample must be one of"):
        to_full_resolution(prob, *size, "lanczos")
    # the whole post-processing takes the filter through
    from postproc.render import refine_alpha

    params = PostprocParams(format="mask")
    a = refine_alpha(prob, *size, params, upsample="pil_bicubic_u8")
    assert np.array_equal(a, to_full_resolution(prob, *size, "pil_bicubic_u8"))
    rgb = np.zeros((*size, 3), np.uint8)
    assert np.array_equal(render(rgb, prob, params, upsample="cubic").alpha, to_full_resolution(prob, *size, "cubic"))
    assert not np.array_equal(to_full_resolution(prob, *size, "cubic"), to_full_resolution(prob, *size, "linear"))


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


# -- outputs: crop, maximum size, backgrounds ----------------------------------------------------

def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def square_scene(h=48, w=64, box=(20, 10, 16, 12)):
    """A gradient image and a matte that is 255 inside the (left, top, width, height) box."""
    x, y, bw, bh = box
    alpha = np.zeros((h, w), np.uint8)
    alpha[y:y + bh, x:x + bw] = 255
    return gradient(w, h), alpha


@pytest.mark.parametrize("margin,expected", [(0, (12, 16)), (3, (18, 22)), (15, (37, 46))])
def test_crop_returns_the_exact_bounding_box_plus_margin(margin, expected):
    rgb, alpha = square_scene()
    out = decode(compose_and_encode(rgb, alpha, PostprocParams.create(crop=True, crop_margin=margin)))
    assert out.shape[:2] == expected  # margin 15 is clipped by the frame: top 0, left 5, bottom 37, right 51
    back = cv2.cvtColor(out, cv2.COLOR_BGRA2RGBA)
    x, y, w, h = crop_box((20, 10, 16, 12), margin, 48, 64)
    assert np.array_equal(back[..., :3], rgb[y:y + h, x:x + w])
    assert np.array_equal(back[..., 3], alpha[y:y + h, x:x + w])


def test_crop_box_is_clipped_to_the_frame():
    assert crop_box((2, 3, 10, 10), 5, 20, 14) == (0, 0, 14, 18)


def test_crop_of_an_empty_matte_keeps_the_frame():
    rgb, _ = square_scene()
    out = decode(compose_and_encode(rgb, np.zeros((48, 64), np.uint8), PostprocParams.create(crop=True)))
    assert out.shape[:2] == (48, 64)


@pytest.mark.parametrize("size,max_size,expected", [((48, 64), 32, (24, 32)), ((64, 48), 32, (32, 24)),
                                                    ((48, 64), 100, (48, 64)), ((30, 1000), 100, (3, 100))])
def test_maximum_size_keeps_the_aspect_and_never_enlarges(size, max_size, expected):
    assert fit_size(*size, max_size) == expected
    rgb, alpha = square_scene(*size, box=(0, 0, 4, 4))
    for fmt in ("png", "jpeg", "webp", "mask"):
        out = decode(compose_and_encode(rgb, alpha, PostprocParams.create(format=fmt, max_size=max_size)))
        assert out.shape[:2] == expected, fmt


def test_crop_then_maximum_size():
    rgb, alpha = square_scene(box=(10, 10, 40, 20))
    out = decode(compose_and_encode(rgb, alpha, PostprocParams.create(crop=True, max_size=20)))
    assert out.shape[:2] == (10, 20)


def test_background_image_is_scaled_to_cover_and_centred():
    bg = np.zeros((10, 40, 3), np.uint8)  # wider than the output: scaled to height, centre kept
    bg[:, :, 0] = np.arange(40, dtype=np.uint8)[None] * 6
    covered = cover(bg, 30, 30)
    assert covered.shape == (30, 30, 3)
    # Scaled ×3 to 30×120, then columns 45..74 kept: the centre of the original's columns 15..24.
    assert abs(int(covered[15, 0, 0]) - 15 * 6) <= 6 and abs(int(covered[15, 29, 0]) - 24 * 6) <= 6
    tall = cover(np.full((100, 10, 3), 7, np.uint8), 30, 60)
    assert tall.shape == (30, 60, 3) and tall.min() == tall.max() == 7


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_subject_over_a_background_image(fmt):
    rgb, alpha = square_scene()
    bg = np.zeros((24, 32, 3), np.uint8)
    bg[:] = (0, 0, 255)  # blue, half the output's size: scaled ×2 to cover
    params = PostprocParams.create(format=fmt, background_image="bg.jpg", quality=95)
    out = decode(compose_and_encode(rgb, alpha, params, background=bg))
    assert out.shape == (48, 64, 3)  # opaque over a picture: RGB whatever the format
    assert out[0, 0].tolist()[0] > 240 and out[0, 0].tolist()[2] < 15  # BGR: blue outside the subject
    assert np.abs(out[16, 28].astype(int) - rgb[16, 28, ::-1].astype(int)).max() < 12  # the subject inside


def test_background_image_without_its_pixels_and_pixels_without_a_name_are_refused():
    rgb, alpha = square_scene()
    with pytest.raises(ValueError, match="background="):
        compose_and_encode(rgb, alpha, PostprocParams.create(background_image="bg.jpg"))
    with pytest.raises(ValueError, match="background="):
        compose_and_encode(rgb, alpha, PostprocParams.create(), background=np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("fmt,background,channels", [("jpeg", None, 3), ("jpeg", "#336699", 3), ("webp", None, 4),
                                                     ("webp", "white", 3), ("png", "#f0f0f0", 3),
                                                     ("png", "#ff000080", 4), ("webp", "#00000000", 4)])
def test_formats_over_colours_round_trip_with_the_expected_mode(fmt, background, channels):
    rgb, alpha = square_scene()
    out = decode(compose_and_encode(rgb, alpha, PostprocParams.create(format=fmt, background=background)))
    assert out.shape[:2] == (48, 64) and (out.shape[2] if out.ndim == 3 else 1) == channels
    if background == "#336699":
        assert np.abs(out[2, 2].astype(int) - [0x99, 0x66, 0x33]).max() <= 3  # BGR


def test_png_compression_levels_are_lossless_and_level_9_is_smaller_than_1():
    rgb, alpha = square_scene(96, 128, box=(20, 20, 60, 50))
    sizes = {}
    for level in (1, 9):
        data = compose_and_encode(rgb, alpha, PostprocParams.create(png_compression=level))
        back = cv2.cvtColor(decode(data), cv2.COLOR_BGRA2RGBA)
        assert np.array_equal(back[..., 3], alpha) and np.array_equal(back[..., :3], rgb)
        sizes[level] = len(data)
    assert sizes[9] <= sizes[1]


# -- colours, presets, parameters ----------------------------------------------------------------

@pytest.mark.parametrize("text,rgba", [("rebeccapurple", (0x66, 0x33, 0x99, 255)),
                                       ("LightGoldenRodYellow", (0xfa, 0xfa, 0xd2, 255)), ("transparent", (0, 0, 0, 0)),
                                       ("#abc", (0xaa, 0xbb, 0xcc, 255)),
                                       ("#abcd", (0xaa, 0xbb, 0xcc, 0xdd)), (" #F0F0F0 ", (240, 240, 240, 255))])
def test_css_names_and_every_hex_form(text, rgba):
    assert parse_color(text) == rgba


def test_all_148_css_names_are_known():
    assert len(NAMED_COLORS) == 149 and "transparent" in NAMED_COLORS  # 148 CSS names + transparent


@pytest.mark.parametrize("text", ["#12", "#12345", "#gggggg", "notacolour", "#1234567890"])
def test_bad_colours_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="CSS name .* or hex"):
        parse_color(text)


def test_to_hex_is_the_manifest_spelling():
    assert to_hex(parse_color("white")) == "#ffffffff" and to_hex(parse_color("#0f08")) == "#00ff0088"


@pytest.mark.parametrize("name,expected", [
    ("id-photo", {"alpha_threshold": 20, "erode": 2, "background": "white", "format": "jpeg"}),
    ("ecommerce", {"format": "png", "alpha_threshold": 10, "feather": 1.0, "background": None}),
    ("avatar", {"alpha_threshold": 6, "erode": 1, "background": "#f0f0f0", "format": "png"}),
])
def test_presets_give_the_seeds_values(name, expected):
    p = PostprocParams.create(preset=name)
    assert {k: getattr(p, k) for k in expected} == expected


def test_explicit_values_override_a_preset():
    p = PostprocParams.create(preset="id-photo", erode=0, background="#336699", format="webp")
    assert (p.alpha_threshold, p.erode, p.background, p.format) == (20, 0, "#336699", "webp")
    # An explicit background image replaces the preset's colour.
    p = PostprocParams.create(preset="id-photo", background_image="bg.png")
    assert p.background is None and p.background_image == "bg.png"


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="id-photo, ecommerce, avatar"):
        PostprocParams.create(preset="passport")


@pytest.mark.parametrize("kwargs,message", [
    ({"refine": "magic"}, "refine must be one of none, trimap, guided"),
    ({"trimap_fg": 100, "trimap_bg": 120}, "trimap_bg .* below trimap_fg"),
    ({"trimap_erode": -1}, "trimap_erode"), ({"guided_radius": 0}, "guided_radius"),
    ({"guided_eps": 0.0}, "guided_eps"),
    ({"refine_max_megapixels": 0}, "refine_max_megapixels"), ({"decontaminate": "yes"}, "decontaminate must be"),
    ({"crop_margin": -2}, "crop_margin"), ({"max_size": 0}, "max_size"),
    ({"background": "white", "background_image": "x.png"}, "not both"),
    ({"format": "jpeg", "background": "transparent"}, "JPEG has no alpha"),
    ({"preset": "id-photo", "background": "#ffffff80"}, "JPEG has no alpha"),
])
def test_new_parameters_are_validated_with_clear_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PostprocParams.create(**kwargs)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ValueError) as e:
        PostprocParams.create(alpha_threshold=999, quality=0)
    assert "alpha_threshold" in str(e.value) and "quality" in str(e.value)


def test_effective_values_leave_out_unused_fields_and_hash_tracks_them():
    base = PostprocParams.create()
    assert base.params_hash() == PostprocParams.create(guided_radius=3, trimap_erode=4, crop_margin=9,
                                                       quality=50).params_hash()
    assert "guided_radius" not in base.effective() and "png_compression" in base.effective()
    g3 = PostprocParams.create(refine="guided", guided_radius=3)
    g4 = PostprocParams.create(refine="guided", guided_radius=4)
    assert g3.params_hash() != g4.params_hash() and json.loads(g3.to_json())["guided_radius"] == 3
    assert json.loads(PostprocParams.create(preset="avatar").to_json())["background"] == "#f0f0f0ff"
    assert PostprocParams.create(preset="avatar").params_hash() == PostprocParams.create(
        alpha_threshold=6, erode=1, background="#F0F0F0").params_hash()
    assert base.params_hash() == hashlib.sha256(base.to_json().encode()).hexdigest()[:16]


# --- PostprocParams.from_strings: the one way text becomes parameters (CLI, Serve, eval) ---------------

def test_from_strings_types_each_value_by_its_field():
    p = PostprocParams.from_strings({"erode": "2", "feather": "1.5", "crop": "yes", "decontaminate": "off",
                                     "max_size": "", "quality": " 80 ", "trimap_fg": "200.0", "format": "webp"})
    assert (p.erode, p.feather, p.crop, p.decontaminate, p.max_size, p.quality, p.trimap_fg, p.format) == (
        2, 1.5, True, False, None, 80, 200, "webp")
    assert PostprocParams.from_strings({}) == PostprocParams()
    # Already-typed values (a CLI's bool flag) are taken as they are; a preset fills what is not given.
    p = PostprocParams.from_strings({"erode": "5", "crop": True}, preset="id-photo")
    assert (p.erode, p.crop, p.alpha_threshold, p.format, p.background) == (5, True, 20, "jpeg", "white")
    base = PostprocParams(erode=1, feather=2.0)
    assert PostprocParams.from_strings({"alpha_threshold": "7"}, base=base) == PostprocParams(
        erode=1, feather=2.0, alpha_threshold=7)


@pytest.mark.parametrize("mapping,fragments", [
    ({"sharpen": "3"}, ["unknown post-processing parameter(s) 'sharpen'", "known: refine, trimap_fg"]),
    ({"erode": "two"}, ["erode must be a whole number, got 'two'"]),
    ({"erode": "1.5"}, ["erode must be a whole number"]),
    ({"feather": "soft"}, ["feather must be a number, got 'soft'"]),
    ({"crop": "maybe"}, ["crop must be true or false", "yes", "off"]),
    ({"refine": "magic"}, ["refine must be one of none, trimap, guided, got 'magic'"]),
    ({"format": "gif"}, ["format must be one of png, jpeg, webp, mask"]),
    ({"quality": "0"}, ["quality must be within 1–100"]),
])
def test_from_strings_refuses_bad_values_naming_the_valid_ones(mapping, fragments):
    with pytest.raises(ValueError) as e:
        PostprocParams.from_strings(mapping)
    for fragment in fragments:
        assert fragment in str(e.value)
    with pytest.raises(ValueError, match="unknown preset 'nope'; presets: id-photo"):
        PostprocParams.from_strings({}, preset="nope")
