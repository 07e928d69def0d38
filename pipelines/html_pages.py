"""What the two HTML pages share (`matting eval --report`, `matting report --html`): a page shell
with inline CSS (no CDN, no script), a checkerboard under transparent cut-outs, and thumbnails.

Pictures are written as files beside the page and referenced by relative paths, so the folder can be
copied or zipped whole and opened offline.
"""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from postproc.encode import encode_jpeg, encode_png

THUMB_SIDE = 320  # longest side of a picture in the pages, px

# The checkerboard is two CSS gradients: transparency shows as grey squares, nothing to download.
CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table.metrics { border-collapse: collapse; margin: 1em 0; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
table.metrics td.l, table.metrics th.l { text-align: left; }
figure { display: inline-block; margin: 4px; vertical-align: top; text-align: center; }
figcaption { font-size: 12px; max-width: 320px; overflow-wrap: anywhere; }
img { display: block; max-width: 320px; max-height: 320px; }
.checker { background-color: #fff;
  background-image: linear-gradient(45deg, #ccc 25%, transparent 25%, transparent 75%, #ccc 75%),
                    linear-gradient(45deg, #ccc 25%, transparent 25%, transparent 75%, #ccc 75%);
  background-size: 16px 16px; background-position: 0 0, 8px 8px; }
section.image { border-top: 1px solid #ddd; padding-top: .5em; margin-top: .5em; }
.errors li { color: #a00; }
.note { color: #555; max-width: 60em; }
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body></html>\n")


def thumb_size(height: int, width: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(img: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Area-averaged down to `side` px on the longest side (never enlarged)."""
    h, w = thumb_size(img.shape[0], img.shape[1], side)
    if (h, w) == img.shape[:2]:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def write_photo(path: Path, rgb: np.ndarray, side: int = THUMB_SIDE) -> None:
    path.write_bytes(encode_jpeg(shrink(rgb, side), quality=85))


def write_cutout(path: Path, rgb: np.ndarray, alpha: np.ndarray, side: int = THUMB_SIDE) -> None:
    """RGBA thumbnail: the page shows it over the checkerboard."""
    path.write_bytes(encode_png(shrink(np.dstack([rgb, alpha]), side)))


def write_gray(path: Path, gray: np.ndarray, side: int = THUMB_SIDE) -> None:
    path.write_bytes(encode_png(shrink(gray, side), compression=6))


def write_error_map(path: Path, matte: np.ndarray, gt: np.ndarray, side: int = THUMB_SIDE) -> None:
    """|matte − ground truth| as a heat map: black no error, through red, to pale yellow for a full miss."""
    err = cv2.absdiff(matte, gt)
    # Max-pooled rather than averaged to the thumbnail, so a thin wrong edge stays visible.
    h, w = thumb_size(err.shape[0], err.shape[1], side)
    k = max(1, int(np.ceil(max(err.shape[0] / h, err.shape[1] / w))))
    if k > 1:
        err = cv2.dilate(err, np.ones((k, k), np.uint8))
    heat = cv2.applyColorMap(shrink(err, side), cv2.COLORMAP_INFERNO)
    path.write_bytes(encode_png(cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)))
