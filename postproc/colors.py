"""Colour names and hex strings → RGBA tuples."""

from __future__ import annotations

# CSS level-1 names plus the few designers type most; anything else goes through hex.
NAMED_COLORS: dict[str, tuple[int, int, int, int]] = {
    "transparent": (0, 0, 0, 0),
    "white": (255, 255, 255, 255), "black": (0, 0, 0, 255), "red": (255, 0, 0, 255),
    "green": (0, 128, 0, 255), "lime": (0, 255, 0, 255), "blue": (0, 0, 255, 255),
    "yellow": (255, 255, 0, 255), "cyan": (0, 255, 255, 255), "aqua": (0, 255, 255, 255),
    "magenta": (255, 0, 255, 255), "fuchsia": (255, 0, 255, 255), "gray": (128, 128, 128, 255),
    "grey": (128, 128, 128, 255), "silver": (192, 192, 192, 255), "maroon": (128, 0, 0, 255),
    "olive": (128, 128, 0, 255), "purple": (128, 0, 128, 255), "teal": (0, 128, 128, 255),
    "navy": (0, 0, 128, 255), "orange": (255, 165, 0, 255), "lightgray": (211, 211, 211, 255),
    "lightgrey": (211, 211, 211, 255), "whitesmoke": (245, 245, 245, 255),
}


def parse_color(value: str) -> tuple[int, int, int, int]:
    """'white', '#fff', '#ffffff', '#ffffff80' or 'ffffff' → (r, g, b, a)."""
    s = value.strip().lower()
    if s in NAMED_COLORS:
        return NAMED_COLORS[s]
    h = s[1:] if s.startswith("#") else s
    if len(h) in (3, 4):
        h = "".join(c * 2 for c in h)
    if len(h) in (6, 8):
        try:
            parts = [int(h[i:i + 2], 16) for i in range(0, len(h), 2)]
        except ValueError:
            parts = []
        if parts:
            return (*parts, 255)[:4] if len(parts) == 3 else tuple(parts)  # type: ignore[return-value]
    raise ValueError(f"unknown colour {value!r}: use a name ({', '.join(sorted(NAMED_COLORS)[:6])}, ...) "
                     f"or hex #rgb, #rrggbb or #rrggbbaa")
