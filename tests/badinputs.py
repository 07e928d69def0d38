"""A corpus of the inputs a real catalog throws at the job: each key → (bytes, expected outcome).

Expected outcome is "ok" or the manifest's error_reason. `generate()` builds everything in
memory from a real photo; the keys themselves include spaces, non-ASCII characters and `..`.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from catalog import real_photos

MAX_BYTES = 3_000_000  # the job under test is run with this --max-megabytes
MAX_PIXELS = 40_000_000


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG header declaring width×height, with one tiny zlib stream: bytes, not pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(min(height, 64))) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def generate() -> dict[str, tuple[bytes, str]]:
    photo_bytes = real_photos(1)[0][1]
    photo = Image.open(io.BytesIO(photo_bytes)).convert("RGB")
    small = photo.resize((200, int(200 * photo.height / photo.width)))
    rgba = small.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, : a.shape[1] // 3, 3] = 0
    rgba = Image.fromarray(a, "RGBA")
    exif = small.getexif()
    exif[0x0112] = 6
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gray16 = (np.asarray(small.convert("L"), np.uint16) * 257)

    corpus: dict[str, tuple[bytes, str]] = {
        "zero-bytes.jpg": (b"", "empty"),
        "truncated.jpg": (photo_bytes[: len(photo_bytes) // 3], "corrupt"),
        "text-named.jpg": (b"Not an image: a text file with a .jpg name.\n" * 20, "unsupported_format"),
        "bomb.png": (_png_bomb(100_000, 100_000), "too_many_pixels"),
        "huge-dimensions.png": (_png_bomb(12_000, 4_000), "too_many_pixels"),
        "one-pixel.png": (_save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "ok"),
        "sixteen-bit.png": (_save(Image.fromarray(gray16), "PNG"), "ok"),
        "cmyk.jpg": (_save(small.convert("CMYK"), "JPEG"), "ok"),
        "palette-transparent.png": (_save(rgba.convert("P", palette=Image.Palette.ADAPTIVE), "PNG",
                                          transparency=0), "ok"),
        "rgba.png": (_save(rgba, "PNG"), "ok"),
        "grayscale.jpg": (_save(small.convert("L"), "JPEG"), "ok"),
        "exif-rotated.jpg": (_save(small, "JPEG", exif=exif.tobytes()), "ok"),
        "animated.gif": (_save(frames[0], "GIF", save_all=True, append_images=frames[1:]), "ok"),
        "animated.webp": (_save(frames[0], "WEBP", save_all=True, append_images=frames[1:]), "ok"),
        "photo.tiff": (_save(small, "TIFF"), "ok"),
        "photo.bmp": (_save(small, "BMP"), "ok"),
        "unsupported.psd": (b"8BPS\x00\x01" + b"\x00" * 200, "unsupported_format"),
        "svg-vector.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "unsupported_format"),
        "huge-file.jpg": (photo_bytes + b"\x00" * (MAX_BYTES + 1), "too_large"),
        "key with spaces.jpg": (photo_bytes, "ok"),
        "clé-non-ascii-写真.jpg": (photo_bytes, "ok"),
        "nested/../dotdot.jpg": (photo_bytes, "unsafe_key"),
        "nested//double-slash.jpg": (photo_bytes, "unsafe_key"),
        # Issue 16: camera names starting with "_" are photos; hidden files get a skip row each;
        # same-stem siblings keep their extensions, so neither output overwrites the other.
        "_DSC0001.JPG": (photo_bytes, "ok"),
        ".DS_Store": (b"\x00\x00\x00\x01Bud1", "hidden"),
        "shop/.hidden/photo.jpg": (photo_bytes, "hidden"),
        "shop/item.jpg": (photo_bytes, "ok"),
        "shop/item.webp": (_save(small, "WEBP"), "ok"),
    }
    return corpus
