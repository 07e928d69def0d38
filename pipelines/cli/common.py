"""What several subcommands share: the runtime and post-processing flags, the S3 endpoint flag, the
bundled sample photos, and reading a background picture at the edge."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.cli.flags import add_flags, from_flags

SAMPLES = Path(__file__).resolve().parent.parent / "samples"  # the photos `matting demo` and export's check use


def add_runtime_flags(p, *, exclude: tuple[str, ...] = ()) -> None:
    """The flags of model.config.RuntimeConfig (its help, defaults and choices), less `exclude`."""
    from model.config import RuntimeConfig

    add_flags(p, RuntimeConfig, exclude=exclude)


def runtime_config(args: argparse.Namespace, *, exclude: tuple[str, ...] = (), **fields):
    """The RuntimeConfig the flags of add_runtime_flags describe (validated there, once)."""
    from model.config import RuntimeConfig

    return RuntimeConfig(**from_flags(RuntimeConfig, args, exclude=exclude), **fields)


def add_postproc_flags(p: argparse.ArgumentParser, *, only: tuple[str, ...] | None = None,
                       title: str = "post-processing (explicit values override a preset's)") -> None:
    """The flags of postproc.PostprocParams, as text: PostprocParams.from_strings types and checks them,
    as it does Serve's parameters and eval's settings. Without `only`, also --preset."""
    from postproc.params import PostprocParams
    from postproc.presets import PRESETS

    g = p.add_argument_group(title)
    if only is None:
        g.add_argument("--preset", choices=list(PRESETS),
                       help="; ".join(f"{k}: {', '.join(f'{a}={b}' for a, b in v.items())}"
                                      for k, v in PRESETS.items()))
    add_flags(g, PostprocParams, only=only, unset=True, text=True)


def params_from_args(args: argparse.Namespace, *, only: tuple[str, ...] | None = None):
    """The PostprocParams of the flags of add_postproc_flags: a preset's values, overridden by each flag given."""
    from postproc.params import PostprocParams

    given = from_flags(PostprocParams, args, only=only, skip_none=True)
    return PostprocParams.from_strings(given, preset=getattr(args, "preset", None))


def add_s3_endpoint_flag(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"),
                   help=help or "S3-compatible endpoint URL (default $MATTING_S3_ENDPOINT)")


def load_background(uri: str | None, s3_endpoint: str | None = None):
    """The background picture's pixels, read and decoded once, here at the edge."""
    if uri is None:
        return None
    from pipelines.storage import read_uri
    from postproc import DecodeError, decode_image

    try:
        data = read_uri(uri, s3_endpoint)  # a local path or a URI of any storage backend
    except FileNotFoundError:
        raise FileNotFoundError(f"--background-image {uri}: no such file") from None
    except OSError as e:  # permissions, a folder, a store error after retries
        raise FileNotFoundError(f"--background-image {uri}: {e}") from None
    try:
        return decode_image(data).rgb
    except DecodeError as e:
        raise ValueError(f"--background-image {uri}: {e}") from None
