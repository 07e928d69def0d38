"""One parameter object for post-processing: validated once, hashed stably for the manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from postproc.colors import parse_color

FORMATS = ("png", "jpeg", "webp", "mask")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "mask": ".png"}


@dataclass(frozen=True)
class PostprocParams:
    alpha_threshold: int = 0  # 0–255: alpha below it becomes 0
    erode: int = 0  # px the subject's edge is pulled in
    feather: float = 0.0  # Gaussian sigma in px applied to the alpha edge
    background: str | None = None  # None: transparent; else a colour name or hex
    format: str = "png"
    # None: the fastest lossless writer (fpng); 0–9: zlib level through OpenCV.
    png_compression: int | None = None
    quality: int = 90  # JPEG / WebP quality

    def __post_init__(self) -> None:
        errors = []
        if not 0 <= self.alpha_threshold <= 255:
            errors.append(f"alpha_threshold must be within 0–255, got {self.alpha_threshold}")
        if not 0 <= self.erode <= 256:
            errors.append(f"erode must be within 0–256 px, got {self.erode}")
        if not 0 <= self.feather <= 256:
            errors.append(f"feather must be within 0–256 px, got {self.feather}")
        if self.format not in FORMATS:
            errors.append(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.png_compression is not None and not 0 <= self.png_compression <= 9:
            errors.append(f"png_compression must be within 0–9 (or unset for the fast writer), got {self.png_compression}")
        if not 1 <= self.quality <= 100:
            errors.append(f"quality must be within 1–100, got {self.quality}")
        if self.background is not None:
            try:
                parse_color(self.background)
            except ValueError as e:
                errors.append(f"background: {e}")
        if errors:
            raise ValueError("; ".join(errors))

    @classmethod
    def create(cls, **kwargs) -> "PostprocParams":
        """Build from user input, filling what a format implies: JPEG has no alpha, so it gets white."""
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise ValueError(f"unknown post-processing parameter(s) {sorted(unknown)}; known: {sorted(names)}")
        p = cls(**{k: v for k, v in kwargs.items() if v is not None})
        if p.format == "jpeg" and p.background is None:
            p = replace(p, background="white")
        return p

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def background_rgba(self) -> tuple[int, int, int, int] | None:
        return None if self.background is None else parse_color(self.background)

    def to_dict(self) -> dict:
        return asdict(self)

    def params_hash(self) -> str:
        """Stable across processes and versions of Python: sorted JSON of the effective values.

        The colour is hashed in its parsed form, so '#fff' and 'white' count as the same setting.
        """
        d = self.to_dict()
        d["background"] = self.background_rgba
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
