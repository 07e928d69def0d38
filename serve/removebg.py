"""POST /v1.0/removebg: remove.bg's request and response shapes, so its clients work unchanged.

Accepted: image_file (multipart), image_file_b64, image_url (only where the operator enabled it);
size (any of remove.bg's values; we always answer at full size up to our pixel limit), type,
format (auto/png/jpg/webp/zip), bg_color, channels (rgba/alpha), crop, crop_margin. Parameters we
cannot honour (roi, scale, position, shadows, background images) are refused with a 400 rather than
silently ignored. Crop margins are clamped to the image (remove.bg pads beyond it).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import zipfile
from dataclasses import replace

import numpy as np
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from postproc import PostprocParams
from postproc.alpha import WorkLimit, bounding_box
from postproc.encode import encode_jpeg, encode_webp
from postproc.render import compose_and_encode, render
from serve.errors import ApiError, echo, echo_names
from serve.fetch import fetch_image
from serve.pipeline import Pipeline
from serve.settings import AppArgs
from serve.uploads import media_type, read_file, read_form

SIZES = ("auto", "preview", "small", "regular", "medium", "hd", "full", "4k", "50MP")
TYPES = ("auto", "person", "product", "animal", "car", "car_interior", "car_part", "transportation", "graphic",
         "other")
FORMATS = ("auto", "png", "jpg", "jpeg", "webp", "zip")
CHANNELS = ("rgba", "alpha")
UNSUPPORTED = ("roi", "scale", "position", "bg_image_url", "bg_image_file", "shadow_type", "shadow_opacity")
IGNORED = ("type_level", "semitransparency", "add_shadow")  # accepted; add_shadow=true is refused below
KNOWN = {"image_file", "image_file_b64", "image_url", "size", "type", "format", "bg_color", "channels", "crop",
         "crop_margin", *UNSUPPORTED, *IGNORED}
MEDIA = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "zip": "application/zip"}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


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


def parse_margin(text: str | None) -> list[tuple[float, str]]:
    """remove.bg's crop_margin: 1, 2 or 4 values (CSS order), each 'N', 'Npx' or 'N%' → [top, right, bottom, left]."""
    parts = (text or "0").split()
    if len(parts) not in (1, 2, 4):
        raise bad(f"crop_margin takes 1, 2 or 4 values, got {echo(text)}")
    values = []
    for p in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(px|%)?", p)
        if not m:
            raise bad(f"crop_margin values look like 30px or 10%, got {echo(p)}")
        n, unit = float(m.group(1)), m.group(2) or "px"
        if (unit == "px" and n > 500) or (unit == "%" and n > 50):
            raise bad(f"crop_margin is at most 500px or 50% a side, got {echo(p)}")
        values.append((n, unit))
    if len(values) == 1:
        values *= 4
    elif len(values) == 2:
        values = values * 2
    return values


def crop_box(bbox: tuple[int, int, int, int], margin: list[tuple[float, str]], width: int, height: int
             ) -> tuple[int, int, int, int]:
    """Subject box + margin (px, or % of the subject's size) → (x0, y0, x1, y1) clamped to the image."""
    left, top, w, h = bbox
    px = [round(n if unit == "px" else n / 100.0 * (h if i % 2 == 0 else w)) for i, (n, unit) in enumerate(margin)]
    return (max(0, left - px[3]), max(0, top - px[0]), min(width, left + w + px[1]), min(height, top + h + px[2]))


async def read_fields(request: Request) -> tuple[dict[str, str], object]:
    mt = media_type(request)
    if mt in ("multipart/form-data", "application/x-www-form-urlencoded"):
        texts, files = await read_form(request)
        return texts, files.get("image_file")
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
        return {k: (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in body.items() if v is not None}, None
    raise ApiError(415, "invalid_content_type", f"Content-Type {mt or '(none)'} is not accepted: use "
                                                "multipart/form-data, application/x-www-form-urlencoded or JSON")


async def read_source(fields: dict[str, str], upload, args: AppArgs) -> bytes:
    given = [n for n in ("image_file", "image_file_b64", "image_url")
             if (upload if n == "image_file" else fields.get(n))]
    if not given:
        raise bad("no image given: send image_file, image_file_b64 or image_url", "missing_source")
    if len(given) > 1:
        raise bad(f"give exactly one image source, got {', '.join(given)}", "multiple_sources")
    if upload is not None:
        return await read_file(upload)
    if "image_file_b64" in given:
        text = fields["image_file_b64"]
        text = text.split(",", 1)[1] if text.startswith("data:") else text
        if len(text) * 3 // 4 > args.max_upload_bytes:
            raise ApiError(413, "file_too_large", f"image_file_b64 is over {args.max_upload_mb:g} MB")
        try:
            return base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            raise bad("image_file_b64 is not valid base64", "invalid_base64") from None
    return await fetch_image(fields["image_url"], args.image_url)


def _zip(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # JPEG and PNG are compressed already
        z.writestr("color.jpg", encode_jpeg(rgb, 95))
        z.writestr("alpha.png", compose_and_encode(rgb, alpha, PostprocParams(format="mask")))
    return buf.getvalue()


def produce(rgb, prob, in_alpha, *, fmt: str, channels: str, bg_color: str | None, crop: bool,
            margin, limit: WorkLimit | None = None, checkpoint=lambda: None
            ) -> tuple[bytes, str, tuple[int, int], tuple[int, int, int, int] | None]:
    """Runs in a worker thread: → (bytes, format, (width, height), subject box in the output).

    `limit` and `checkpoint` as in postproc.render.render: the server's cost bound and deadline.
    """
    transparent = bg_color is None or PostprocParams(background=bg_color).background_rgba[3] < 255
    if fmt == "auto":  # remove.bg: PNG where the result has transparency; a matte stays lossless too
        fmt = "png" if transparent or channels == "alpha" else "jpg"
    fmt = "jpg" if fmt == "jpeg" else fmt
    pp_format = {"png": "png", "jpg": "jpeg", "webp": "webp", "zip": "png"}[fmt]
    params = PostprocParams.create(format=pp_format, background=bg_color)
    simple = not crop and channels == "rgba" and fmt != "zip"
    out = render(rgb, prob, params if simple else replace(params, format="mask"), in_alpha, limit=limit,
                 checkpoint=checkpoint)
    checkpoint()
    alpha, bbox = out.alpha, out.bbox
    if bbox is None:
        raise bad("could not identify a foreground in the image", "unknown_foreground")
    if simple:
        return out.data, fmt, (rgb.shape[1], rgb.shape[0]), bbox
    if crop:
        x0, y0, x1, y1 = crop_box(bbox, margin, rgb.shape[1], rgb.shape[0])
        rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
        bbox = bounding_box(alpha)
    size = (rgb.shape[1], rgb.shape[0])
    if fmt == "zip":
        return _zip(np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)), fmt, size, bbox
    if channels == "alpha":
        a = np.ascontiguousarray(alpha)
        if fmt == "jpg":
            data = encode_jpeg(a)
        elif fmt == "webp":
            data = encode_webp(a)
        else:
            data = compose_and_encode(rgb, a, replace(params, format="mask"))
        return data, fmt, size, bbox
    return compose_and_encode(np.ascontiguousarray(rgb), np.ascontiguousarray(alpha), params), fmt, size, bbox


async def removebg(request: Request, pipeline: Pipeline, args: AppArgs) -> Response:
    fields, upload = await read_fields(request)
    unknown = sorted(set(fields) - KNOWN)
    if unknown:
        raise bad(f"unknown parameter(s) {echo_names(unknown)}")
    unsupported = [n for n in UNSUPPORTED if fields.get(n)]
    if _flag(fields, "add_shadow"):
        unsupported.append("add_shadow")
    if unsupported:
        raise bad(f"not supported by this server: {', '.join(unsupported)}", "unsupported_parameter")
    _choice(fields, "size", SIZES, "auto")  # accepted; we always process at full size up to our limit
    fg_type = _choice(fields, "type", TYPES, "auto")
    fmt = _choice(fields, "format", FORMATS, "auto")
    channels = _choice(fields, "channels", CHANNELS, "rgba")
    crop = _flag(fields, "crop")
    margin = parse_margin(fields.get("crop_margin"))
    bg_color = fields.get("bg_color") or None
    if bg_color is not None:
        try:
            PostprocParams(background=bg_color)
        except ValueError as e:
            raise bad(f"bg_color: {e}") from None

    data = await read_source(fields, upload, args)
    model = args.model_names[0]
    deadline = pipeline.deadline()  # from here on: decode, inference and rendering
    image, small = await pipeline.decode(data, model, deadline)
    prob = await pipeline.infer(model, small, deadline)
    body, fmt, (w, h), bbox = await pipeline.in_thread(deadline, pipeline.render_call(
        produce, deadline, image.rgb, prob, image.alpha, fmt=fmt, channels=channels, bg_color=bg_color,
        crop=crop, margin=margin))
    left, top, bw, bh = bbox or (0, 0, 0, 0)
    x_type = fg_type if fg_type != "auto" else "other"  # we do not classify the subject
    headers = {"X-Width": str(w), "X-Height": str(h), "X-Type": x_type, "X-Credits-Charged": "0",
               "X-Foreground-Top": str(top), "X-Foreground-Left": str(left),
               "X-Foreground-Width": str(bw), "X-Foreground-Height": str(bh)}
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"data": {"result_b64": base64.b64encode(body).decode(), "type": x_type,
                                      "foreground_top": top, "foreground_left": left,
                                      "foreground_width": bw, "foreground_height": bh}}, headers=headers)
    return Response(body, media_type=MEDIA[fmt], headers=headers)
