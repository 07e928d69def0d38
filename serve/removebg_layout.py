"""remove.bg's output geometry as pure functions: size caps, roi, crop margins, scale and position.

The API's strings in, numbers and arrays out. Bad values raise ValueError with a message that names
the parameter; serve/removebg.py turns it into remove.bg's 400. Semantics (remove.bg's docs):

- size: the output's megapixel cap. preview/small/regular 0.25 MP, medium 1.5 MP, hd 4 MP. remove.bg
  caps full/4k/auto at 25 MP (10 MP as PNG) and 50MP at 50 MP; a self-hosted server has no credits to
  ration, so full, 4k, 50MP and auto mean "as large as the input", which the server's max_megapixels
  already bounds. The matte is always computed from the whole input; only the output is scaled.
- roi: "x1 y1 x2 y2", each in px or % of the image; only that rectangle can be foreground.
- crop_margin: 1, 2 or 4 values (CSS order: top right bottom left), px or % of the subject's size;
  remove.bg's maximum is 50 % of the subject or 500 px a side: larger values are capped to it. A
  margin may reach past the image's edge; the canvas is padded with transparency there.
- scale: "10%".."100%" (the subject's size relative to the canvas) or "original".
- position: "original", "center", "X%" (both axes) or "X% Y%": where the subject sits in the free
  space of the canvas (0% left/top, 100% right/bottom). Scaling implies "center" unless given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from serve.errors import echo

# Output megapixel caps; None: no cap beyond the server's own input limit (see the module's doc).
SIZE_MEGAPIXELS: dict[str, float | None] = {
    "preview": 0.25, "small": 0.25, "regular": 0.25, "medium": 1.5, "hd": 4.0,
    "full": None, "4k": None, "50MP": None, "auto": None,
}
MAX_MARGIN_PX = 500.0
MAX_MARGIN_PERCENT = 50.0
_LENGTH = re.compile(r"(-?\d+(?:\.\d+)?)(px|%)?")


def _length(text: str, name: str) -> tuple[float, str]:
    m = _LENGTH.fullmatch(text)
    if not m:
        raise ValueError(f"{name} values look like 30px or 10%, got {echo(text)}")
    value, unit = float(m.group(1)), m.group(2) or "px"
    if value < 0:
        raise ValueError(f"{name} values cannot be negative, got {echo(text)}")
    return value, unit


def fit_megapixels(width: int, height: int, megapixels: float | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most `megapixels`; never enlarged."""
    if megapixels is None or width * height <= megapixels * 1e6:
        return width, height
    s = math.sqrt(megapixels * 1e6 / (width * height))
    return max(1, math.floor(width * s)), max(1, math.floor(height * s))


def parse_roi(text: str | None, width: int, height: int) -> tuple[int, int, int, int] | None:
    """roi → (x1, y1, x2, y2) in pixels, clipped to the image; None for no roi (the whole image)."""
    if text is None or not text.strip():
        return None
    parts = text.replace(",", " ").split()
    if len(parts) != 4:
        raise ValueError(f"roi takes four values, x1 y1 x2 y2 (px or %), got {echo(text)}")
    coords = []
    for i, p in enumerate(parts):
        value, unit = _length(p, "roi")
        size = width if i % 2 == 0 else height
        if unit == "%" and value > 100:
            raise ValueError(f"roi percentages are at most 100%, got {echo(p)}")
        coords.append(min(size, round(value / 100.0 * size if unit == "%" else value)))
    x1, y1, x2, y2 = coords
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"roi must have x1 < x2 and y1 < y2 inside the image, got {echo(text)}")
    return x1, y1, x2, y2


def apply_roi(alpha: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """Everything outside the roi becomes background."""
    if roi is None:
        return alpha
    x1, y1, x2, y2 = roi
    out = np.zeros_like(alpha)
    out[y1:y2, x1:x2] = alpha[y1:y2, x1:x2]
    return out


def parse_margin(text: str | None) -> list[tuple[float, str]]:
    """crop_margin → [top, right, bottom, left] as (value, unit), each capped to remove.bg's maximum."""
    parts = (text or "0").split()
    if len(parts) not in (1, 2, 4):
        raise ValueError(f"crop_margin takes 1, 2 or 4 values, got {echo(text)}")
    values = []
    for p in parts:
        value, unit = _length(p, "crop_margin")
        values.append((min(value, MAX_MARGIN_PX if unit == "px" else MAX_MARGIN_PERCENT), unit))
    if len(values) == 1:
        values *= 4
    elif len(values) == 2:
        values *= 2
    return values


def margin_px(margin: list[tuple[float, str]], subject_w: int, subject_h: int) -> tuple[int, int, int, int]:
    """[top, right, bottom, left] in pixels; percentages are of the subject's height (top, bottom) or width."""
    return tuple(round(v if unit == "px" else v / 100.0 * (subject_h if i % 2 == 0 else subject_w))
                 for i, (v, unit) in enumerate(margin))


def parse_scale(text: str | None) -> float | None:
    """scale → a fraction 0.1–1.0, or None for "original"."""
    if text is None or text.strip() in ("", "original"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%?", text.strip())
    if not m or not 10 <= float(m.group(1)) <= 100:
        raise ValueError(f"scale is 'original' or 10%–100%, got {echo(text)}")
    return float(m.group(1)) / 100.0


def parse_position(text: str | None) -> tuple[float, float] | str | None:
    """position → "original", "center", (x, y) as fractions, or None when not given."""
    if text is None or not text.strip():
        return None
    t = text.strip()
    if t in ("original", "center"):
        return t
    parts = t.split()
    if len(parts) not in (1, 2):
        raise ValueError(f"position is 'original', 'center', 'X%' or 'X% Y%', got {echo(text)}")
    values = []
    for p in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", p)
        if not m or float(m.group(1)) > 100:
            raise ValueError(f"position values are 0%–100%, got {echo(p)}")
        values.append(float(m.group(1)) / 100.0)
    return (values[0], values[-1])


@dataclass(frozen=True)
class Layout:
    canvas: tuple[int, int]  # (width, height) of the output
    source: tuple[int, int, int, int]  # the subject's (left, top, width, height) in the image
    dest: tuple[int, int, int, int]  # where it lands on the canvas (left, top, width, height)

    @property
    def translation_only(self) -> bool:
        return self.source[2:] == self.dest[2:]


def plan(width: int, height: int, bbox: tuple[int, int, int, int], *, crop: bool,
         margin: list[tuple[float, str]], scale: float | None, position) -> Layout:
    """Where the subject (bbox in the image) goes on which canvas."""
    bx, by, bw, bh = bbox
    if crop:
        top, right, bottom, left = margin_px(margin, bw, bh)
        cw, ch = bw + left + right, bh + top + bottom
        ox, oy = bx - left, by - top  # the canvas's origin in image pixels
    else:
        cw, ch, ox, oy = width, height, 0, 0
    if position is None:
        position = "center" if scale is not None else "original"
    if scale is None:
        dw, dh = bw, bh
    else:
        f = scale * min(cw / bw, ch / bh)
        dw, dh = max(1, round(bw * f)), max(1, round(bh * f))
    if position == "original":  # the subject's centre stays where it was
        dx, dy = round(bx - ox + (bw - dw) / 2), round(by - oy + (bh - dh) / 2)
    else:
        fx, fy = (0.5, 0.5) if position == "center" else position
        dx, dy = round((cw - dw) * fx), round((ch - dh) * fy)
    return Layout((cw, ch), bbox, (dx, dy, dw, dh))


def _paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """src onto dst with its top-left at (x, y), clipped to dst."""
    h, w = src.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(dst.shape[1], x + w), min(dst.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        dst[y0:y1, x0:x1] = src[y0 - y:y1 - y, x0 - x:x1 - x]


def arrange(rgb: np.ndarray, alpha: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The image and its matte laid out on the canvas; transparent (alpha 0) wherever nothing lands.

    A pure translation (crop, position) copies the whole image shifted, so a ZIP's colour image keeps
    the pixels around the subject; a scaled subject is resampled from its box alone.
    """
    cw, ch = layout.canvas
    sx, sy, sw, sh = layout.source
    dx, dy, dw, dh = layout.dest
    if layout.translation_only and (dx - sx, dy - sy) == (0, 0) and (cw, ch) == alpha.shape[::-1]:
        return rgb, alpha
    out_rgb = np.zeros((ch, cw, 3), np.uint8)
    out_a = np.zeros((ch, cw), np.uint8)
    if layout.translation_only:
        _paste(out_rgb, rgb, dx - sx, dy - sy)
        _paste(out_a, alpha, dx - sx, dy - sy)
    else:
        interp = cv2.INTER_AREA if dw < sw else cv2.INTER_LINEAR
        patch_rgb = cv2.resize(np.ascontiguousarray(rgb[sy:sy + sh, sx:sx + sw]), (dw, dh), interpolation=interp)
        patch_a = cv2.resize(np.ascontiguousarray(alpha[sy:sy + sh, sx:sx + sw]), (dw, dh), interpolation=interp)
        _paste(out_rgb, patch_rgb, dx, dy)
        _paste(out_a, patch_a, dx, dy)
    return out_rgb, out_a
