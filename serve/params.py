"""HTTP strings → postproc.PostprocParams, with 422s that name the parameter.

The fields are read from PostprocParams itself, so a parameter added to postproc is accepted, typed
and documented here without a change. Strings are typed by `PostprocParams.from_strings` (as the CLI's
flags and eval's settings are) and validated in postproc (create/__post_init__); this module adds only
what is HTTP's: the parameters a caller may not set, and the bounds on what a message echoes.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from functools import lru_cache

from pydantic import TypeAdapter

from postproc import PRESETS, PostprocParams
from serve.errors import ApiError, echo, echo_names

MAX_VALUE_CHARS = 200  # the longest value any parameter takes (a colour name, a format) is far shorter
KNOWN_PRESETS = tuple(PRESETS)  # the values belong to postproc; PostprocParams.create applies them
# Parameters a caller may not set over HTTP: a background image is a server-side path or URI (reading
# it for a caller would expose the server's files), and the refinement size cap bounds CPU per request.
NOT_OVER_HTTP = {
    "background_image": "a server-side path; use `background` (a colour) over HTTP",
    "refine_max_megapixels": "the server's cost cap for refinement",
}


@lru_cache(maxsize=1)
def param_types() -> dict[str, typing.Any]:
    hints = typing.get_type_hints(PostprocParams)
    return {f.name: hints[f.name] for f in fields(PostprocParams) if f.name not in NOT_OVER_HTTP}


def openapi_parameters() -> list[dict]:
    """The query parameters of POST /v1/matte for the OpenAPI document.

    A field whose metadata names its `choices` (the output format: postproc/formats.py) is an enum.
    """
    out = []
    defaults = PostprocParams()
    choices = {f.name: f.metadata["choices"] for f in fields(PostprocParams) if "choices" in f.metadata}
    for name, hint in param_types().items():
        schema = TypeAdapter(hint).json_schema()
        if name in choices:
            schema["enum"] = list(choices[name])
        schema["default"] = getattr(defaults, name)
        out.append({"name": name, "in": "query", "required": False, "schema": schema,
                    "description": "post-processing parameter (also accepted as a multipart form field)"})
    return out


def parse_preset(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value not in KNOWN_PRESETS:
        raise ApiError(422, "bad_parameter", f"unknown preset {echo(value)}; known: {', '.join(KNOWN_PRESETS)}")
    return value


def parse_params(raw: dict[str, str], preset: str | None = None) -> PostprocParams:
    """Strings from a query string or form (+ a preset's name) → validated parameters.

    Empty strings mean 'not set'; explicit values override the preset's (PostprocParams.create).
    """
    types = param_types()
    refused = sorted(set(raw) & set(NOT_OVER_HTTP))
    if refused:
        raise ApiError(422, "bad_parameter", "; ".join(f"{n} cannot be set over HTTP: {NOT_OVER_HTTP[n]}"
                                                        for n in refused))
    unknown = sorted(set(raw) - set(types))
    if unknown:
        raise ApiError(422, "bad_parameter", f"unknown parameter(s) {echo_names(unknown)}; known: {sorted(types)}")
    for name, text in raw.items():
        if len(text) > MAX_VALUE_CHARS:
            raise ApiError(422, "bad_parameter", f"{name}: the value is {len(text)} characters long; no parameter "
                                                 f"takes more than {MAX_VALUE_CHARS}")
    try:
        return PostprocParams.from_strings(raw, preset=preset)
    except ValueError as e:
        raise ApiError(422, "bad_parameter", str(e)) from None
