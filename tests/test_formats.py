"""The output formats table (postproc/formats.py): every entry encodes and decodes through
post-processing, and is offered by the parameters, the CLI, our API's schema and the remove.bg API.

Adding a format is one entry in the table; these tests then check it everywhere without a change.
(The running server's GET /v1/formats, /openapi.json and both endpoints: tests/test_serve.py,
test_every_output_format_is_offered_by_both_apis_the_schema_and_the_page_endpoint.)
"""

from __future__ import annotations

import io
import mimetypes
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from postproc import PostprocParams, compose_and_encode
from postproc.formats import DEFAULT, NAMES, OUTPUT_FORMATS, PHOTO_EXTENSIONS, describe, output_format

REPO = Path(__file__).resolve().parent.parent


def scene(h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[8:30, 10:40] = 255
    alpha[8:30, 40:44] = 128  # a soft edge
    return rgb, alpha


@pytest.mark.parametrize("name", NAMES)
def test_every_format_encodes_and_decodes_as_its_table_entry_says(name):
    f = output_format(name)
    rgb, alpha = scene()
    params = PostprocParams.create(format=name)
    assert params.output is f and params.extension == f.extension
    data = compose_and_encode(rgb, alpha, params)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert Image.MIME[im.format] == f.media_type, (name, im.format)
        assert f.extension in {ext for ext, fmt in Image.registered_extensions().items() if fmt == im.format}
        assert mimetypes.types_map.get(f.extension) in (f.media_type, None)
        assert im.size == (56, 40)
        bands = im.getbands()
        if f.matte:
            assert bands == ("L",)
            assert np.array_equal(np.asarray(im), alpha)  # the matte itself, lossless
        elif f.alpha:
            assert bands == ("R", "G", "B", "A")
            assert np.abs(np.asarray(im)[..., 3].astype(int) - alpha).max() <= 16  # the matte, as transparency
        else:
            assert bands == ("R", "G", "B")  # composed over white
            assert np.asarray(im)[1, 1].min() > 235
    # The encoder settings the entry names are the ones that count in the manifest's hash.
    counted = set(params.effective()) & {"quality", "png_compression"}
    assert counted == set(f.settings), (name, counted)


def test_the_table_is_well_formed_and_the_default_is_in_it():
    assert DEFAULT in OUTPUT_FORMATS and not OUTPUT_FORMATS[DEFAULT].matte
    knobs = {fl.name for fl in fields(PostprocParams)}
    for f in OUTPUT_FORMATS.values():
        assert f.extension.startswith(".") and f.media_type.startswith("image/") and f.label
        assert set(f.settings) <= knobs
    assert [d["name"] for d in describe()] == list(NAMES)
    assert all(set(d) == {"name", "extension", "media_type", "alpha", "matte", "label"} for d in describe())
    with pytest.raises(ValueError, match="format must be one of png, jpeg"):
        output_format("gif")
    with pytest.raises(ValueError, match="format must be one of png, jpeg"):
        PostprocParams(format="gif")
    assert {".jpg", ".png", ".webp"} <= PHOTO_EXTENSIONS


def test_params_field_metadata_and_our_openapi_list_the_table():
    from serve.api_v1 import openapi_matte

    (fmt,) = [f for f in fields(PostprocParams) if f.name == "format"]
    assert fmt.metadata["choices"] == NAMES and fmt.default == DEFAULT
    op = openapi_matte()
    (param,) = [p for p in op["parameters"] if p["name"] == "format"]
    assert param["schema"]["enum"] == list(NAMES) and param["schema"]["default"] == DEFAULT
    assert set(op["responses"]["200"]["content"]) == {f.media_type for f in OUTPUT_FORMATS.values()}


def test_formats_without_alpha_get_white_and_refuse_a_translucent_background():
    for f in OUTPUT_FORMATS.values():
        p = PostprocParams.create(format=f.name)
        assert p.background == (None if f.alpha or f.matte else "white"), f.name
        if not f.alpha and not f.matte:
            with pytest.raises(ValueError, match=f"{f.label} has no alpha"):
                PostprocParams.create(format=f.name, background="#ff000080")


def test_remove_bg_api_maps_its_names_onto_the_table():
    from serve import removebg
    from serve import removebg_layout as layout

    pictures = {f.name for f in OUTPUT_FORMATS.values() if not f.matte}
    assert set(removebg.ALIASES.values()) == pictures and removebg.ALIASES["jpg"] == "jpeg"
    assert set(removebg.FORMATS) == {"auto", "zip", *removebg.ALIASES}
    body = removebg.openapi_removebg()["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["format"]["enum"] == list(removebg.FORMATS)
    assert set(body["multipart/form-data"]["schema"]["properties"]) == removebg.KNOWN  # every parameter documented
    rgb, alpha = scene()
    prob = alpha.astype(np.float32) / 255.0
    common = dict(megapixels=None, roi_text=None, crop=False, margin=layout.parse_margin(None), scale=None,
                  position=None, bg_color=None, bg_image=None)
    for name, ours in removebg.ALIASES.items():
        for channels in ("rgba", "alpha"):
            data, fmt, _, _ = removebg.produce(rgb, prob, None, fmt=name, channels=channels, **common)
            assert removebg.media_type_of(fmt) == OUTPUT_FORMATS[ours].media_type
            with Image.open(io.BytesIO(data)) as im:
                assert Image.MIME[im.format] == OUTPUT_FORMATS[ours].media_type
                bands = im.getbands()
                if channels == "alpha":  # the matte, grey (WebP has no greyscale mode: R = G = B)
                    px = np.asarray(im)
                    assert bands == ("L",) or (bands == ("R", "G", "B") and (px == px[..., :1]).all()), (name, bands)
                else:
                    assert bands == (("R", "G", "B", "A") if OUTPUT_FORMATS[ours].alpha else ("R", "G", "B")), name


def test_cli_offers_every_format():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "{" + ",".join(NAMES) + "}" in out.stdout.replace("\n", "").replace(" ", "")
