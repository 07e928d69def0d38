"""Every output format, in one table: its name, file extension, media type, encoder and whether it
keeps transparency.

A new output format is one entry here plus its test (tests/test_formats.py runs every entry through
post-processing, both HTTP APIs, the OpenAPI schema and the page's list). Who reads the table:
PostprocParams (validation, the CLI's choices through the field's metadata, the JPEG-gets-white
rule, which encoder settings count in the hash), postproc.render (encoding), our API
(serve/api_v1.py: media type, download name, OpenAPI), the remove.bg API (serve/removebg.py maps
its own names `jpg`, `auto` and `zip` onto this table) and the page (GET /v1/formats).

Also here: the extensions by which a folder of photos is listed (eval, training, INT8 calibration).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable

import numpy as np

from postproc.encode import encode_jpeg, encode_png, encode_webp

# encode(picture, quality, png_compression) -> file bytes. The picture is (H, W, 3|4) uint8, or the
# (H, W) matte for a `matte` format.
Encoder = Callable[[np.ndarray, int, "int | None"], bytes]


@dataclass(frozen=True)
class OutputFormat:
    name: str  # what callers write: --format, ?format=, the page's picker
    extension: str  # of the output file, with its dot
    media_type: str  # the HTTP Content-Type of a response in this format
    alpha: bool  # keeps transparency; False: transparent parts are composed over white by default
    encode: Encoder
    settings: tuple[str, ...]  # the PostprocParams fields its encoder reads (and so the hash counts)
    label: str  # for people: the page's picker, docs
    matte: bool = False  # the file is the matte alone (greyscale): no compositing, no background


def _png(img: np.ndarray, quality: int, png_compression: int | None) -> bytes:
    return encode_png(np.ascontiguousarray(img), png_compression)


def _mask(img: np.ndarray, quality: int, png_compression: int | None) -> bytes:
    alpha = img[..., 0] if img.ndim == 3 else img
    # fpng writes no greyscale: zlib at level 1 unless told otherwise.
    return encode_png(np.ascontiguousarray(alpha), 1 if png_compression is None else png_compression)


def _jpeg(img: np.ndarray, quality: int, png_compression: int | None) -> bytes:
    return encode_jpeg(np.ascontiguousarray(img), quality)


def _webp(img: np.ndarray, quality: int, png_compression: int | None) -> bytes:
    return encode_webp(np.ascontiguousarray(img), quality)


_TABLE = (
    OutputFormat("png", ".png", "image/png", True, _png, ("png_compression",), "PNG (transparent)"),
    OutputFormat("jpeg", ".jpg", "image/jpeg", False, _jpeg, ("quality",), "JPEG"),
    OutputFormat("webp", ".webp", "image/webp", True, _webp, ("quality",), "WebP"),
    OutputFormat("mask", ".png", "image/png", False, _mask, ("png_compression",), "Mask (alpha only)", matte=True),
)

OUTPUT_FORMATS: MappingProxyType[str, OutputFormat] = MappingProxyType({f.name: f for f in _TABLE})
NAMES: tuple[str, ...] = tuple(OUTPUT_FORMATS)
DEFAULT = "png"


def output_format(name: str) -> OutputFormat:
    """The table's entry for `name`; an unknown name raises with the valid list."""
    try:
        return OUTPUT_FORMATS[name]
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(NAMES)}, got {name!r}") from None


def describe() -> list[dict]:
    """The table as JSON for the page and API clients (GET /v1/formats): everything but the encoder."""
    return [{"name": f.name, "extension": f.extension, "media_type": f.media_type, "alpha": f.alpha,
             "matte": f.matte, "label": f.label} for f in _TABLE]


# Photos in a folder (the eval set, training photos, INT8 calibration photos) are the files with
# these extensions: formats postproc.decode reads. (The batch job lists every file instead and lets
# decoding decide; its output naming has its own, wider list in pipelines/storage/naming.py.)
PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
