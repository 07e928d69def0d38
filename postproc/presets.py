"""Named presets: the seed's recommended values. Explicit parameters override them."""

from __future__ import annotations

from types import MappingProxyType

PRESETS = MappingProxyType({
    # Passport/ID photos: a clean, slightly pulled-in edge on white, as JPEG.
    "id-photo": MappingProxyType({"alpha_threshold": 20, "erode": 2, "background": "white", "format": "jpeg"}),
    # Product shots: a transparent PNG whose edge is softened a little ("feathering on" in the
    # seed; sigma 1 px keeps the edge smooth without visibly blurring it).
    "ecommerce": MappingProxyType({"format": "png", "alpha_threshold": 10, "feather": 1.0}),
    # Profile pictures on a light grey.
    "avatar": MappingProxyType({"alpha_threshold": 6, "erode": 1, "background": "#f0f0f0"}),
})


def preset_values(name: str) -> dict:
    """A preset's values; an unknown name raises with the valid list."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
