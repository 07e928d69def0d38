"""POST /v1.0/removebg and GET /v1.0/account: remove.bg's API v1.0, so its clients work unchanged.

Implemented as remove.bg documents them: image_file (multipart), image_file_b64, image_url (only where
the operator enabled it); size (output megapixel caps; full/4k/50MP/auto: as large as the input);
roi; crop and crop_margin (1, 2 or 4 values, px or %, capped at 50 % / 500 px); scale; position;
channels (rgba/alpha); bg_color, bg_image_url (behind image_url's guard and switch), bg_image_file;
format (auto/png/jpg/zip, plus webp); type and type_level (validated; X-Type is the requested type,
or "other" for auto: this server does not classify). Accepted and ignored: semitransparency,
add_shadow, shadow_type, shadow_opacity. Bodies: multipart, urlencoded or JSON. Geometry:
serve/removebg_layout.py.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import zipfile

import numpy as np
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from model.preprocess import LEGACY_UPSAMPLE
from model.specs import get_spec
from postproc import DecodeError, PostprocParams, decode_image, refine_alpha
from postproc.alpha import WorkLimit, bounding_box
from postproc.colors import parse_color
from postproc.composite import cutout, over_color, over_image
from postproc.encode import encode_jpeg, encode_png
from postproc.formats import OUTPUT_FORMATS, OutputFormat
from postproc.geometry import cover, resize
from serve import removebg_layout as layout
from serve.errors import ApiError, echo, echo_names
from serve.fetch import fetch_image
from serve.pipeline import Pipeline
from serve.settings import AppArgs
from serve.uploads import media_type, read_file, read_form

SIZES = tuple(layout.SIZE_MEGAPIXELS)
TYPES = ("auto", "person", "product", "animal", "car", "car_interior", "car_part", "transportation", "graphic",
         "graphics", "other")
TYPE_LEVELS = ("none", "1", "2", "latest")
# remove.bg's format names, mapped onto the formats table (postproc/formats.py): remove.bg calls JPEG
# "jpg" (our "jpeg" is accepted too), and its own "auto" (PNG where the result has transparency, else
# JPG) and "zip" (color.jpg + alpha.png) are this API's. Matte formats are not remove.bg formats:
# its channels=alpha asks for the matte in any of them.
_REMOVEBG_NAMES = {"jpeg": "jpg"}
ALIASES = {_REMOVEBG_NAMES.get(f.name, f.name): f.name for f in OUTPUT_FORMATS.values() if not f.matte}
ALIASES.update({f.name: f.name for f in OUTPUT_FORMATS.values() if not f.matte})  # our own names work too
FORMATS = ("auto", *ALIASES, "zip")
ZIP_MEDIA_TYPE = "application/zip"
QUALITY = 90  # of JPEG and WebP answers; a JPEG matte gets 95 (JPEG's blocks show most on a matte's edges)
MATTE_QUALITY = {"jpeg": 95}
CHANNELS = ("rgba", "alpha")
SOURCES = ("image_file", "image_file_b64", "image_url")
BACKGROUNDS = ("bg_color", "bg_image_url", "bg_image_file")
FILES = ("image_file", "bg_image_file")  # the multipart file parts we read
# Accepted so that clients sending them work, and ignored: this server draws no shadows and keeps
# the model's matte as it is (it has no separate semi-transparency pass).
IGNORED = ("semitransparency", "add_shadow", "shadow_type", "shadow_opacity")
KNOWN = {*SOURCES, *BACKGROUNDS, "size", "type", "type_level", "format", "roi", "crop", "crop_margin", "scale",
         "position", "channels", *IGNORED}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def openapi_removebg() -> dict:
    """The request body of POST /v1.0/removebg for the OpenAPI document: every parameter KNOWN here, the
    choices as enums (format: remove.bg's names for the formats table, plus auto and zip)."""
    text, binary = {"type": "string"}, {"type": "string", "format": "binary"}

    def choice(values: tuple, default: str) -> dict:
        return {"type": "string", "enum": list(values), "default": default}

    fields = {
        "image_file": binary, "image_file_b64": text, "image_url": text,
        "size": choice(SIZES, "preview"), "type": choice(TYPES, "auto"), "type_level": choice(TYPE_LEVELS, "1"),
        "format": choice(FORMATS, "auto"), "channels": choice(CHANNELS, "rgba"),
        "roi": text, "crop": {"type": "boolean", "default": False}, "crop_margin": text, "scale": text,
        "position": text, "bg_color": text, "bg_image_url": text, "bg_image_file": binary,
        **{name: text for name in IGNORED},
    }
    as_text = {k: v for k, v in fields.items() if k not in FILES}  # file parts come in multipart only
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": fields}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": as_text}},
        "application/json": {"schema": {"type": "object", "properties": as_text}},
    }}}


def bad(message: str, code: str = "invalid_parameter") -> ApiError:
    return ApiError(400, code, message)


def _choice(fields: dict, name: str, allowed: tuple, default: str) -> str:
    value = fields.get(name) or default
    if value not in allowed:
        raise bad(f"{name} must be one of {', '.join(allowed)}, got {echo(value)}")
    return value


def _flag(fields: dict, name: str) -> bool:
    value = str(fields.get(name, "")).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bad(f"{name} must be true or false, got {echo(value)}")


def _parsed(fn, *args):
    try:
        return fn(*args)
    except ValueError as e:
        raise bad(str(e)) from None


def _json_value(v) -> str:
    return json.dumps(v) if isinstance(v, bool) else str(v)


async def read_fields(request: Request) -> tuple[dict[str, str], dict]:
    """The body as (text fields, file parts), whatever of remove.bg's three encodings it came in."""
    mt = media_type(request)
    if mt in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await read_form(request)
    if mt == "application/json":
        try:
            body = json.loads(await request.body() or b"{}")
        except RecursionError:  # nesting deeper than the parser's stack
            raise bad("the JSON body is nested too deeply", "invalid_json") from None
        except ValueError:
            raise bad("the JSON body does not parse", "invalid_json") from None
        if not isinstance(body, dict):
            raise bad("the JSON body must be an object", "invalid_json")
        nested = sorted(k for k, v in body.items() if isinstance(v, (dict, list)))
        if nested:  # every remove.bg parameter is a string, a number or a boolean
            raise bad(f"parameter(s) {echo_names(nested)} must be a string, a number or a boolean", "invalid_json")
        return {k: _json_value(v) for k, v in body.items() if v is not None}, {}
    raise ApiError(415, "invalid_content_type", f"Content-Type {mt or '(none)'} is not accepted: use "
                                                "multipart/form-data, application/x-www-form-urlencoded or JSON")


def _b64(text: str, name: str, args: AppArgs) -> bytes:
    text = text.split(",", 1)[1] if text.startswith("data:") else text
    if len(text) * 3 // 4 > args.max_upload_bytes:
        raise ApiError(413, "file_too_large", f"{name} is over {args.max_upload_mb:g} MB")
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise bad(f"{name} is not valid base64", "invalid_base64") from None


def source_param(fields: dict[str, str], files: dict) -> str:
    """The one image source given (checked before anything is fetched or decoded)."""
    given = [n for n in SOURCES if (files.get(n) if n == "image_file" else fields.get(n))]
    if not given:
        raise bad("no image given: send image_file, image_file_b64 or image_url", "missing_source")
    if len(given) > 1:
        raise bad(f"give exactly one image source, got {', '.join(given)}", "multiple_sources")
    return given[0]


async def read_source(fields: dict[str, str], files: dict, args: AppArgs) -> bytes:
    name = source_param(fields, files)
    if name == "image_file":
        return await read_file(files["image_file"])
    if name == "image_file_b64":
        return _b64(fields["image_file_b64"], "image_file_b64", args)
    return await fetch_image(fields["image_url"], args.image_url)


async def read_background(fields: dict[str, str], files: dict, args: AppArgs):
    """→ (an RGBA colour or None, the background picture's bytes or None, the parameter that gave it)."""
    given = [n for n in BACKGROUNDS if (files.get(n) if n == "bg_image_file" else fields.get(n))]
    if len(given) > 1:
        raise bad(f"give at most one background, got {', '.join(given)}", "multiple_backgrounds")
    if not given:
        return None, None, None
    if given[0] == "bg_color":
        try:
            return parse_color(fields["bg_color"]), None, "bg_color"
        except ValueError as e:
            raise bad(f"bg_color: {e}") from None
    if given[0] == "bg_image_file":
        data = await read_file(files["bg_image_file"])
    else:
        try:
            data = await fetch_image(fields["bg_image_url"], args.image_url)
        except ApiError as e:  # fetch.py names image_url in its messages: say which URL it was
            raise ApiError(e.status, e.code, f"bg_image_url: {e.message}", headers=e.headers) from None
    return None, data, given[0]


def decode_background(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    try:
        return decode_image(data, max_pixels=max_pixels).rgb
    except DecodeError as e:
        raise bad(f"{name}: {e}", "invalid_bg_image") from None


def _zip(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # JPEG and PNG are compressed already
        z.writestr("color.jpg", encode_jpeg(np.ascontiguousarray(rgb), 95))
        z.writestr("alpha.png", encode_png(np.ascontiguousarray(alpha), 1))
    return buf.getvalue()


def produce(rgb, prob, in_alpha, *, megapixels, roi_text, crop, margin, scale, position, fmt, channels,
            bg_color, bg_image, limit: WorkLimit | None = None, checkpoint=lambda: None, upsample: str = LEGACY_UPSAMPLE
            ) -> tuple[bytes, str, tuple[int, int], tuple[int, int, int, int]]:
    """Runs in a worker thread: → (bytes, format, (width, height), the subject's box in the output).

    The matte comes from the whole input; roi, the size cap, then crop/scale/position shape the output.
    `limit` and `checkpoint` as in postproc.render.render: the server's cost bound and deadline;
    `upsample` the model spec's alpha filter (PreprocessSpec.upsample).
    """
    alpha = refine_alpha(prob, rgb.shape[0], rgb.shape[1], PostprocParams(), in_alpha, limit=limit,
                         checkpoint=checkpoint, upsample=upsample)
    checkpoint()
    alpha = layout.apply_roi(alpha, _parsed(layout.parse_roi, roi_text, rgb.shape[1], rgb.shape[0]))
    w, h = layout.fit_megapixels(rgb.shape[1], rgb.shape[0], megapixels)
    rgb, alpha = resize(rgb, h, w), resize(alpha, h, w)
    bbox = bounding_box(alpha)
    if bbox is None:
        raise bad("could not identify a foreground in the image", "unknown_foreground")
    plan = layout.plan(w, h, bbox, crop=crop, margin=margin, scale=scale, position=position)
    rgb, alpha = layout.arrange(rgb, alpha, plan)
    checkpoint()
    size = (alpha.shape[1], alpha.shape[0])
    box = bounding_box(alpha) or (0, 0, 0, 0)

    if channels == "alpha":
        fmt = "png" if fmt == "auto" else fmt
        a = np.ascontiguousarray(alpha)
        if fmt == "zip":
            return _zip(rgb, a), fmt, size, box
        # The matte alone, greyscale (PNG: zlib level 1, as the mask format writes it).
        out = output_of(fmt)
        return out.encode(a, MATTE_QUALITY.get(out.name, QUALITY), 1), fmt, size, box
    if bg_image is not None:
        img = over_image(rgb, alpha, cover(np.asarray(bg_image)[..., :3], size[1], size[0]))
    elif bg_color is not None:
        img = over_color(rgb, alpha, bg_color)
    else:
        img = cutout(rgb, alpha)
    if fmt == "auto":  # remove.bg: PNG where the result has transparency, else JPG
        fmt = "png" if img.shape[2] == 4 else "jpg"
    if fmt == "zip":
        color = img if img.shape[2] == 3 else rgb
        return _zip(color, alpha), fmt, size, box
    out = output_of(fmt)
    if not out.alpha and img.shape[2] == 4:  # JPEG has no alpha: the transparent parts become white
        img = over_color(img[..., :3], img[..., 3], (255, 255, 255, 255))
    return out.encode(np.ascontiguousarray(img), QUALITY, None), fmt, size, box


def output_of(fmt: str) -> OutputFormat:
    """The formats table's entry for one of remove.bg's format names (not auto or zip)."""
    return OUTPUT_FORMATS[ALIASES[fmt]]


def media_type_of(fmt: str) -> str:
    return ZIP_MEDIA_TYPE if fmt == "zip" else output_of(fmt).media_type


def success_headers(size: tuple[int, int], box: tuple[int, int, int, int], x_type: str) -> dict[str, str]:
    left, top, bw, bh = box
    return {"X-Width": str(size[0]), "X-Height": str(size[1]), "X-Type": x_type, "X-Credits-Charged": "0",
            "X-Foreground-Top": str(top), "X-Foreground-Left": str(left),
            "X-Foreground-Width": str(bw), "X-Foreground-Height": str(bh)}


async def removebg(request: Request, pipeline: Pipeline, args: AppArgs) -> Response:
    fields, files = await read_fields(request)
    unknown = sorted((set(fields) | set(files)) - KNOWN)
    if unknown:
        raise bad(f"unknown parameter(s) {echo_names(unknown)}; known: {sorted(KNOWN)}")
    misplaced = sorted(set(files) - set(FILES))
    if misplaced:
        raise bad(f"{echo_names(misplaced)} must be text fields, not files")
    for name in ("semitransparency", "add_shadow"):
        _flag(fields, name)  # validated, then ignored (see IGNORED)
    size = _choice(fields, "size", SIZES, "preview")  # remove.bg's default
    fg_type = _choice(fields, "type", TYPES, "auto")
    _choice(fields, "type_level", TYPE_LEVELS, "1")
    fmt = _choice(fields, "format", FORMATS, "auto")
    fmt = _REMOVEBG_NAMES.get(ALIASES.get(fmt, fmt), fmt)  # one spelling from here on: jpeg → jpg
    channels = _choice(fields, "channels", CHANNELS, "rgba")
    crop = _flag(fields, "crop")
    margin = _parsed(layout.parse_margin, fields.get("crop_margin"))
    scale = _parsed(layout.parse_scale, fields.get("scale"))
    position = _parsed(layout.parse_position, fields.get("position"))
    roi_text = fields.get("roi")
    if roi_text:
        _parsed(layout.parse_roi, roi_text, 10**9, 10**9)  # its syntax, before any work; bounds come later

    source_param(fields, files)
    bg_color, bg_data, bg_name = await read_background(fields, files, args)
    data = await read_source(fields, files, args)
    deadline = pipeline.deadline()  # from here on: decoding, inference and rendering
    bg_image = None if bg_data is None else await pipeline.in_thread(deadline, decode_background, bg_data,
                                                                       bg_name, args.max_pixels)
    model = args.model_names[0]
    image, small = await pipeline.decode(data, model, deadline)
    prob = await pipeline.infer(model, small, deadline)
    body, fmt, out_size, box = await pipeline.in_thread(deadline, pipeline.render_call(
        produce, deadline, image.rgb, prob, image.alpha, megapixels=layout.SIZE_MEGAPIXELS[size], roi_text=roi_text,
        crop=crop, margin=margin, scale=scale, position=position, fmt=fmt, channels=channels,
        bg_color=bg_color, bg_image=bg_image, upsample=get_spec(model).preprocess.upsample))
    x_type = fg_type if fg_type != "auto" else "other"  # we do not classify the subject
    headers = success_headers(out_size, box, x_type)
    if "application/json" in request.headers.get("accept", ""):
        left, top, bw, bh = box
        return JSONResponse({"data": {"result_b64": base64.b64encode(body).decode(), "type": x_type,
                                      "foreground_top": top, "foreground_left": left,
                                      "foreground_width": bw, "foreground_height": bh}}, headers=headers)
    return Response(body, media_type=media_type_of(fmt), headers=headers)


def account(args: AppArgs, remaining: int) -> dict:
    """remove.bg's account shape with a self-hosted server's values (README: "GET /v1.0/account").

    Nothing is ever charged (X-Credits-Charged: 0), so credits are the calls one key may make in a day
    at the sustained rate limit; free_calls is what the key may send right now (its rate-limit bucket);
    every size is available.
    """
    per_day = int(args.rate_limit_per_minute * 60 * 24)
    return {"data": {"attributes": {
        "credits": {"total": per_day, "subscription": per_day, "payg": 0, "enterprise": 0},
        "api": {"free_calls": remaining, "sizes": "all"}}}}
