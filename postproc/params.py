"""One parameter object for post-processing: validated once, hashed stably for the manifest."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

from postproc import formats as output_formats
from postproc.colors import parse_color, to_hex

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


def _field(default, help: str, **meta):
    """A field with its help (and choices): the CLI derives its flags from them (pipelines/cli/flags.py)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class PostprocParams:
    # -- refinement of the predicted matte, before the alpha ops below (postproc/refine.py)
    refine: str = _field("none", "edge refinement: trimap (closed-form matting on a band; slow), guided (guided "
                                 "filter; fast)", choices=REFINERS)
    # Defaults from bench/refine.py's figures on alphamatting27: 192/64 with 10 px beat rembg's
    # 240/10 (whose band spreads over whole regions where the model is unsure, and costs 2× more)
    # on every metric, and a band cut at one half (128/127) on every metric at about the same cost.
    trimap_fg: int = _field(192, "trimap: alpha ≥ N is sure foreground")  # before erosion
    trimap_bg: int = _field(64, "trimap: alpha ≤ N is sure background")  # before erosion
    trimap_erode: int = _field(10, "trimap: px the sure regions are eroded by, at the working size")
    guided_radius: int = _field(8, "guided filter radius in px")  # box radius at the working resolution
    # Larger smooths more, smaller follows the image more.
    guided_eps: float = _field(1e-4, "guided filter regularisation")
    refine_max_megapixels: float = _field(1.0, "refinement and decontamination work at most at this many "
                                               "megapixels", flag="--refine-max-mp")
    decontaminate: bool = _field(False, "estimate the subject's own colour at semi-transparent edge pixels (no "
                                        "background bleed)")
    # -- alpha ops (the seed's)
    alpha_threshold: int = _field(0, "0–255: alpha below it becomes 0")
    erode: int = _field(0, "pull the subject's edge in by N px")
    feather: float = _field(0.0, "Gaussian feathering of the edge, sigma in px")
    # -- geometry
    crop: bool = _field(False, "crop to the subject's bounding box")
    crop_margin: int = _field(0, "px kept around the subject when cropping")  # clipped to the image
    # Aspect preserved; never enlarges.
    max_size: int | None = _field(None, "longest side of the output in px, aspect kept (default: input size)")
    # -- output
    background: str | None = _field(None, "background colour: a CSS name or #rgb/#rrggbb/#rrggbbaa "
                                          "(default transparent)")
    # A background image: its path or URI, recorded and hashed; the caller decodes it and passes
    # the pixels to compose_and_encode (post-processing does no I/O).
    background_image: str | None = _field(None, "background picture (a file or s3:// URI), scaled to cover "
                                                "the output")
    format: str = _field(output_formats.DEFAULT, "output format (postproc/formats.py)", choices=output_formats.NAMES)
    # None: the fastest lossless writer (fpng); 0–9: zlib level through OpenCV.
    png_compression: int | None = _field(None, "zlib level 0–9 (default: fpng, the fastest lossless writer)")
    quality: int = _field(90, "JPEG/WebP quality 1–100")

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

    @classmethod
    def from_strings(cls, mapping: Mapping[str, object], *, preset: str | None = None,
                     base: "PostprocParams | None" = None) -> "PostprocParams":
        """Build from text: a command line, a query string or form, an eval --setting. The one place
        strings become parameters.

        Each string is converted by its field's type ("10" → 10, "1.5" → 1.5, "true"/"off" → bool);
        an empty string means 'not set'; a value that is already typed (a CLI's bool flag) is taken
        as it is. Unknown names and unconvertible values raise ValueError naming the valid ones. The
        values then go on top of `base` (eval's settings), or on top of a preset (`create`).
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"unknown post-processing parameter(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(names)}")
        hints = _field_types()
        values = {}
        for name, value in mapping.items():
            if value is None or value == "":
                continue
            values[name] = _convert(name, hints[name], value) if isinstance(value, str) else value
        if base is not None:
            if preset is not None:
                raise ValueError("give a preset or a base, not both")
            return replace(base, **values)  # replace() re-runs the validation
        return cls.create(preset=preset, **values)

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


_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


def _field_types() -> dict[str, type]:
    """Each field's value type, Optional unwrapped (int | None → int)."""
    out = {}
    for name, hint in typing.get_type_hints(PostprocParams).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = args[0] if args else hint
    return out


def _convert(name: str, kind: type, text: str):
    """One string → the field's type, or a ValueError that names the field and what it takes."""
    t = text.strip()
    if kind is bool:
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ValueError(f"{name} must be true or false ({'/'.join(_TRUE)} or {'/'.join(_FALSE)}), got {text!r}")
    if kind is int:
        try:
            return int(t)
        except ValueError:
            try:
                number = float(t)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)  # '10.0' is ten
            raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if kind is float:
        try:
            return float(t)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None
    return text  # str fields: choices and colours are checked by __post_init__, which lists the valid values
