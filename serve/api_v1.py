"""Our API, POST /v1/matte: an image in, the cut-out out, with what a caller needs in headers."""

from __future__ import annotations

import io
import re

from fastapi.responses import Response
from PIL import Image
from starlette.requests import Request

from model.specs import get_spec
from model.tta import TTA_MODES
from postproc.formats import OUTPUT_FORMATS
from postproc.render import render
from serve.errors import ApiError, echo
from serve.params import KNOWN_PRESETS, openapi_parameters, parse_params, parse_preset
from serve.pipeline import Pipeline, Timings
from serve.uploads import read_image_body

OPENAPI_MATTE = {
    "parameters": [
        {"name": "preset", "in": "query", "required": False, "schema": {"type": "string", "enum": list(KNOWN_PRESETS)},
         "description": "a named set of parameters; explicit parameters override it"},
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "a served model (GET /v1/models); default: the first"},
        {"name": "tta", "in": "query", "required": False, "schema": {"type": "string", "enum": list(TTA_MODES)},
         "description": "test-time augmentation: flip also runs the image mirrored and averages the two (about "
                        "2× the model time); default: the server's `tta` setting (none unless configured)"},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
                "description": "the image as `file`; any query parameter may also be sent as a form field"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {"200": {
        "description": "the cut-out; X-Width, X-Height (of the output), X-Subject-Bbox (left,top,width,height "
                       "in input pixels, or 'none'), "
                       "X-Model, X-Model-Version, X-TTA, X-Server-Time-Ms and Server-Timing headers",
        # One entry per media type of the formats table (postproc/formats.py).
        "content": {t: {} for t in dict.fromkeys(f.media_type for f in OUTPUT_FORMATS.values())}}},
}


def openapi_matte() -> dict:
    extra = dict(OPENAPI_MATTE)
    extra["parameters"] = OPENAPI_MATTE["parameters"] + openapi_parameters()
    return extra


def output_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, from its header alone."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def _download_name(filename: str | None, fmt: str) -> str:
    """The name a browser saves the answer under: the upload's stem, `-<format>` for a matte, the format's extension."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", (filename or "image").rsplit(".", 1)[0])[:100] or "image"
    out = OUTPUT_FORMATS[fmt]
    return f"{stem}{f'-{out.name}' if out.matte else ''}{out.extension}"


async def matte(request: Request, pipeline: Pipeline, models: list[str], default_tta: str = "none") -> Response:
    timings = Timings()
    data, fields, filename = await read_image_body(request)
    raw = {**dict(request.query_params), **fields}
    preset = parse_preset(raw.pop("preset", None))
    model = raw.pop("model", None) or models[0]
    if model not in models:
        raise ApiError(422, "bad_parameter", f"model {echo(model)} is not served here; served: {', '.join(models)}")
    tta = raw.pop("tta", None) or default_tta
    if tta not in TTA_MODES:
        raise ApiError(422, "bad_parameter", f"tta must be one of {', '.join(TTA_MODES)}, got {echo(tta)}")
    params = parse_params(raw, preset)
    if not data:
        raise ApiError(400, "undecodable", "the image is empty (0 bytes)")
    t = timings.mark("read", timings.started)

    deadline = pipeline.deadline()  # from here on: decode, inference and rendering
    image, small = await pipeline.decode(data, model, deadline)
    t = timings.mark("decode", t)
    prob = await pipeline.infer(model, small, deadline, tta)
    t = timings.mark("infer", t)
    out = await pipeline.in_thread(deadline, pipeline.render_call(render, deadline, image.rgb, prob, params,
                                                                  image.alpha,
                                                                  upsample=get_spec(model).preprocess.upsample))
    timings.mark("render", t)

    bbox = ",".join(map(str, out.bbox)) if out.bbox else "none"
    width, height = output_size(out.data)  # crop and max_size make it differ from the input's
    headers = {
        "X-Width": str(width), "X-Height": str(height), "X-Subject-Bbox": bbox,
        "X-Model": model, "X-Model-Version": get_spec(model).version, "X-TTA": tta,
        "X-Server-Time-Ms": f"{timings.total_ms:.1f}", "Server-Timing": timings.server_timing(),
        "Content-Disposition": f'inline; filename="{_download_name(filename, params.format)}"',
    }
    if preset:
        headers["X-Preset"] = preset
    return Response(out.data, media_type=params.output.media_type, headers=headers)
