"""Colour names and hex strings → RGBA tuples.

The names are CSS's 148 named colours (CSS Color Module Level 4, as Pillow's ImageColor ships
them) plus `transparent`; anything else goes through hex: #rgb, #rgba, #rrggbb, #rrggbbaa.
"""

from __future__ import annotations

from PIL import ImageColor


def _named() -> dict[str, tuple[int, int, int, int]]:
    names = {"transparent": (0, 0, 0, 0)}
    for name, hexa in ImageColor.colormap.items():
        h = str(hexa).lstrip("#")
        if len(h) == 6:  # Pillow's table is all #rrggbb; anything else would be a change on its side
            names[name] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)
    return names


NAMED_COLORS: dict[str, tuple[int, int, int, int]] = _named()


def parse_color(value: str) -> tuple[int, int, int, int]:
    """'white', 'rebeccapurple', '#fff', '#ffffff', '#ffffff80' or 'ffffff' → (r, g, b, a)."""
    if not isinstance(value, str):
        raise ValueError(f"colour must be a string (a name or hex), got {value!r}")
    s = value.strip().lower()
    if s in NAMED_COLORS:
        return NAMED_COLORS[s]
    h = s[1:] if s.startswith("#") else s
    if len(h) in (3, 4):
        h = "".join(c * 2 for c in h)
    if len(h) in (6, 8) and all(c in "0123456789abcdef" for c in h):
        parts = [int(h[i:i + 2], 16) for i in range(0, len(h), 2)]
        return (parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else 255)
    raise ValueError(f"unknown colour {value!r}: use a CSS name (white, black, whitesmoke, rebeccapurple, ...) "
                     f"or hex #rgb, #rrggbb or #rrggbbaa")


def to_hex(rgba: tuple[int, int, int, int]) -> str:
    """(r, g, b, a) → '#rrggbbaa', the one spelling the manifest records."""
    return "#" + "".join(f"{c:02x}" for c in rgba)
