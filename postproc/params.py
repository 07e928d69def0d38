"""One parameter object for post-processing: validated once, hashed stably for the manifest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

from postproc import formats as output_formats
from postproc.colors import parse_color, to_hex

FORMATS = output_formats.NAMES  # the formats table's names (postproc/formats.py), for the CLI's imports
REFINERS = ("none", "trimap", "guided")

# Fields that only matter under some setting: left out of the effective values (and so of the
# hash) otherwise, so that e.g. a guided-filter radius does not mark unrefined outputs as changed.
_ONLY_WHEN = {
    "trimap_fg": lambda p: p.refine == "trimap",
    "trimap_bg": lambda p: p.refine == "trimap",
    "trimap_erode": lambda p: p.refine == "trimap",
    "guided_radius": lambda p: p.refine == "guided",
    "guided_eps": lambda p: p.refine == "guided",
    "refine_max_megapixels": lambda p: p.refine != "none" or p.decontaminate,
    "crop_margin": lambda p: p.crop,
    # Encoder settings count only for the formats whose encoder reads them (postproc/formats.py).
    "png_compression": lambda p: "png_compression" in output_formats.output_format(p.format).settings,
    "quality": lambda p: "quality" in output_formats.output_format(p.format).settings,
}


@dataclass(frozen=True)
class PostprocParams:
    # -- refinement of the predicted matte, before the alpha ops below (postproc/refine.py)
    refine: str = "none"  # none | trimap (closed-form matting on a band) | guided (guided filter)
    # Defaults from bench/refine.py's figures on alphamatting27: 192/64 with 10 px beat rembg's
    # 240/10 (whose band spreads over whole regions where the model is unsure, and costs 2× more)
    # on every metric, and a band cut at one half (128/127) on every metric at about the same cost.
    trimap_fg: int = 192  # alpha ≥ this is sure foreground (before erosion)
    trimap_bg: int = 64  # alpha ≤ this is sure background (before erosion)
    trimap_erode: int = 10  # px both sure regions are eroded by, at the working resolution
    guided_radius: int = 8  # box radius in px at the working resolution
    guided_eps: float = 1e-4  # regularisation: larger smooths more, smaller follows the image more
    refine_max_megapixels: float = 1.0  # refinement and decontamination run at most at this size
    decontaminate: bool = False  # estimate the foreground colour at semi-transparent pixels
    # -- alpha ops (the seed's)
    alpha_threshold: int = 0  # 0–255: alpha below it becomes 0
    erode: int = 0  # px the subject's edge is pulled in
    feather: float = 0.0  # Gaussian sigma in px applied to the alpha edge
    # -- geometry
    crop: bool = False  # crop to the subject's bounding box ...
    crop_margin: int = 0  # ... plus this many px on each side (clipped to the image)
    max_size: int | None = None  # longest side in px of the output; aspect preserved; never enlarges
    # -- output
    background: str | None = None  # None: transparent; else a colour name or hex
    # A background image: its path or URI, recorded and hashed; the caller decodes it and passes
    # the pixels to compose_and_encode (post-processing does no I/O).
    background_image: str | None = None
    format: str = field(default=output_formats.DEFAULT, metadata={"choices": output_formats.NAMES})
    # None: the fastest lossless writer (fpng); 0–9: zlib level through OpenCV.
    png_compression: int | None = None
    quality: int = 90  # JPEG / WebP quality

    def __post_init__(self) -> None:
        errors = []

        def within(name, lo, hi, unit=""):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                errors.append(f"{name} must be within {lo}–{hi}{unit}, got {v!r}")

        for name in ("decontaminate", "crop"):
            if not isinstance(getattr(self, name), bool):
                errors.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.refine not in REFINERS:
            errors.append(f"refine must be one of {', '.join(REFINERS)}, got {self.refine!r}")
        within("trimap_fg", 1, 255)
        within("trimap_bg", 0, 254)
        if not errors and self.trimap_bg >= self.trimap_fg:
            errors.append(f"trimap_bg ({self.trimap_bg}) must be below trimap_fg ({self.trimap_fg})")
        within("trimap_erode", 0, 256, " px")
        within("guided_radius", 1, 256, " px")
        within("guided_eps", 1e-8, 1.0)
        within("refine_max_megapixels", 0.01, 100.0, " MP")
        within("alpha_threshold", 0, 255)
        within("erode", 0, 256, " px")
        within("feather", 0, 256, " px")
        within("crop_margin", 0, 100_000, " px")
        if self.max_size is not None:
            within("max_size", 1, 100_000, " px")
        if self.format not in output_formats.OUTPUT_FORMATS:
            errors.append(f"format must be one of {', '.join(output_formats.NAMES)}, got {self.format!r}")
        if self.png_compression is not None:
            within("png_compression", 0, 9, " (or unset for the fast writer)")
        within("quality", 1, 100)
        color = None
        if self.background is not None:
            try:
                color = parse_color(self.background)
            except ValueError as e:
                errors.append(f"background: {e}")
        if self.background is not None and self.background_image is not None:
            errors.append("give either background (a colour) or background_image, not both")
        fmt = output_formats.OUTPUT_FORMATS.get(self.format)
        if fmt is not None and not fmt.alpha and not fmt.matte and color is not None and color[3] < 255:
            with_alpha = "/".join(f.name for f in output_formats.OUTPUT_FORMATS.values() if f.alpha)
            errors.append(f"{fmt.label} has no alpha channel: background {self.background!r} is translucent; "
                          f"use an opaque colour or format {with_alpha}")
        if errors:
            raise ValueError("; ".join(errors))

    @classmethod
    def create(cls, preset: str | None = None, **kwargs) -> "PostprocParams":
        """Build from user input: a preset's values, overridden by every explicit (non-None) value,
        then what a format implies (one without alpha, JPEG, gets white)."""
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise ValueError(f"unknown post-processing parameter(s) {sorted(unknown)}; known: {sorted(names)}")
        values: dict = {}
        if preset is not None:
            from postproc.presets import preset_values

            values.update(preset_values(preset))
        explicit = {k: v for k, v in kwargs.items() if v is not None}
        if "background_image" in explicit:
            values.pop("background", None)  # an explicit image replaces a preset's colour
        values.update(explicit)
        p = cls(**values)
        if not p.output.alpha and not p.output.matte and p.background is None and p.background_image is None:
            p = replace(p, background="white")
        return p

    @property
    def output(self) -> output_formats.OutputFormat:
        """The output format's entry in the formats table (postproc/formats.py)."""
        return output_formats.output_format(self.format)

    @property
    def extension(self) -> str:
        return self.output.extension

    @property
    def background_rgba(self) -> tuple[int, int, int, int] | None:
        return None if self.background is None else parse_color(self.background)

    def to_dict(self) -> dict:
        return asdict(self)

    def effective(self) -> dict:
        """The values that decide the output: the colour in one spelling (#rrggbbaa), and no field
        that is unused under the other settings."""
        d = {k: v for k, v in self.to_dict().items() if k not in _ONLY_WHEN or _ONLY_WHEN[k](self)}
        if self.background is not None:
            d["background"] = to_hex(parse_color(self.background))
        return d

    def to_json(self) -> str:
        """The manifest's params_json: sorted, compact JSON of the effective values."""
        return json.dumps(self.effective(), sort_keys=True, separators=(",", ":"))

    def params_hash(self) -> str:
        """sha256 of to_json(), stable across processes and versions of Python.

        'white' and '#fff' count as the same setting; an unused field does not count.
        """
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
