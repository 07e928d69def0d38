"""Command-line flags derived from dataclass fields: one field, one flag, its help written once.

As litgpt derives its CLI from typed signatures, `add_flags` reads a dataclass's fields (RuntimeConfig,
JobConfig, TrainConfig, PostprocParams) and `from_flags` turns the parsed namespace back into the
dataclass's keyword arguments. Validation stays in the dataclasses (`__post_init__`); argparse only
converts text to the field's type and offers the choices.

What a field's metadata may say (all but `help` optional):
  help        the flag's help; "(default: X)" is appended from the field's default unless the help
              already speaks of its default (a None default means something the help must say)
  choices     the values argparse offers
  flag        the flag's name where it is not --field-name (e.g. --stall-timeout for stall_timeout_s)
  scale       the field holds the flag's value × scale (--max-megapixels 50 → max_pixels 50_000_000)
  env         an environment variable that, when set, replaces the default (MATTING_S3_ENDPOINT)
  metavar     as argparse's
  positional  a positional argument (a tuple field takes one or more)
  cli         False: not on the command line (nested configs, decoded pixels, eval's preprocessing)

Types: int, float and str convert as argparse does; a bool is a --flag/--no-flag pair; a tuple that
is not positional takes one comma-separated string, which the dataclass parses (--providers).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Iterable

_UNSET = object()


def cli_fields(cls, *, only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of `cls` that are flags, in declaration order (`only` and `exclude` by field name)."""
    all_names = {f.name for f in dataclasses.fields(cls)}
    wanted = set(only) if only is not None else None
    skip = set(exclude)
    for name in (wanted or set()) | skip:
        if name not in all_names:
            raise ValueError(f"{cls.__name__} has no field {name!r}; fields: {', '.join(sorted(all_names))}")
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.name not in skip
            and (wanted is None or f.name in wanted)]


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def field_default(f: dataclasses.Field):
    """The dataclass's own default of a field (MISSING where it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def flag_default(f: dataclasses.Field):
    """The default on the command line: the field's, in the flag's unit, or its environment variable's."""
    env = f.metadata.get("env")
    if env and os.environ.get(env):
        return os.environ[env]
    value = field_default(f)
    if value is dataclasses.MISSING:
        return None
    scale = f.metadata.get("scale")
    return value / scale if scale and value is not None else value


def _value_type(cls, f: dataclasses.Field):
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]  # int | None → int
    return hint


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_flags(parser, cls, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
              unset: bool = False, text: bool = False) -> None:
    """Add one flag per field of `cls` to `parser` (a parser or an argument group).

    unset=True: every flag defaults to None, so that what the user did not give can come from
    elsewhere (a preset, eval's base setting); the help still shows the dataclass's default.
    text=True: values stay strings (bools excepted) for the dataclass's own parser to type
    (PostprocParams.from_strings, which Serve and eval use too).
    """
    for f in cli_fields(cls, only=only, exclude=exclude):
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name} has no help in its metadata: a flag needs one")
        kind = _value_type(cls, f)
        default = flag_default(f)
        help_text = meta["help"]
        if default is not None and "default" not in help_text:
            help_text += f" (default: {_shown(default)})"
        kwargs: dict = {"help": help_text.replace("%", "%%"), "dest": f.name}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        elif meta.get("flag") and kind is not bool and not meta.get("choices"):
            kwargs["metavar"] = meta["flag"].lstrip("-").replace("-", "_").upper()  # as the flag, not the field
        if meta.get("choices"):
            kwargs["choices"] = tuple(meta["choices"])
        if meta.get("positional"):
            del kwargs["dest"]
            if typing.get_origin(kind) is tuple:
                kwargs["nargs"] = "+"
            parser.add_argument(f.name, **kwargs)
            continue
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("scale"):
            kwargs["type"] = float  # the flag's unit is a fraction of the field's (megapixels → pixels)
        elif kind in (int, float) and not text:
            kwargs["type"] = kind
        kwargs["default"] = None if unset else default
        if field_default(f) is dataclasses.MISSING:
            kwargs["required"] = True
        parser.add_argument(flag_name(f), **kwargs)


def from_flags(cls, args: argparse.Namespace, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
               skip_none: bool = False) -> dict:
    """The keyword arguments of `cls` that the flags of `add_flags` (same only/exclude) carry.

    skip_none: leave out flags that were not given (with add_flags(unset=True)).
    """
    out = {}
    for f in cli_fields(cls, only=only, exclude=exclude):
        value = getattr(args, f.name)
        if value is None and skip_none:
            continue
        scale = f.metadata.get("scale")
        if scale and value is not None:
            value = value * scale
            if _value_type(cls, f) is int:
                value = int(round(value))
        out[f.name] = value
    return out
