"""HTTP strings → postproc.PostprocParams, with 422s that name the parameter.

The fields are read from PostprocParams itself, so a parameter added to postproc is accepted, typed
and documented here without a change. Validation of values stays in postproc (create/__post_init__).
"""

from __future__ import annotations

import typing
from dataclasses import fields
from functools import lru_cache

from pydantic import TypeAdapter, ValidationError

from postproc import PostprocParams
from serve.errors import ApiError

# Interim list until postproc's preset function lands (issue 4): names are validated here and
# passed on; the values belong to postproc, never to this module.
KNOWN_PRESETS = ("id-photo", "ecommerce", "avatar")


@lru_cache(maxsize=1)
def param_types() -> dict[str, typing.Any]:
    hints = typing.get_type_hints(PostprocParams)
    return {f.name: hints[f.name] for f in fields(PostprocParams)}


def openapi_parameters() -> list[dict]:
    """The query parameters of POST /v1/matte for the OpenAPI document."""
    out = []
    defaults = PostprocParams()
    for name, hint in param_types().items():
        schema = TypeAdapter(hint).json_schema()
        schema["default"] = getattr(defaults, name)
        out.append({"name": name, "in": "query", "required": False, "schema": schema,
                    "description": "post-processing parameter (also accepted as a multipart form field)"})
    return out


def parse_preset(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value not in KNOWN_PRESETS:
        raise ApiError(422, "bad_parameter", f"unknown preset {value!r}; known: {', '.join(KNOWN_PRESETS)}")
    return value


def parse_params(raw: dict[str, str]) -> PostprocParams:
    """Strings from a query string or form → validated parameters. Empty strings mean 'not set'."""
    types = param_types()
    unknown = sorted(set(raw) - set(types))
    if unknown:
        raise ApiError(422, "bad_parameter", f"unknown parameter(s) {unknown}; known: {sorted(types)}")
    values = {}
    for name, text in raw.items():
        if text == "":
            continue
        try:
            values[name] = TypeAdapter(types[name]).validate_python(text)
        except ValidationError as e:
            msg = e.errors()[0]["msg"]
            raise ApiError(422, "bad_parameter", f"{name}: {msg} (got {text!r})") from None
    try:
        return PostprocParams.create(**values)
    except ValueError as e:
        raise ApiError(422, "bad_parameter", str(e)) from None
