"""`matting`: the command line, one module per subcommand. Arguments are validated at this edge (by the
dataclasses the flags are derived from: pipelines/cli/flags.py), then passed on typed."""

from __future__ import annotations

import argparse
import logging
import sys

# One module per subcommand, in the order `matting --help` lists them; each has register(sub).
SUBCOMMANDS = ("run", "demo", "report", "bundle", "warmup", "weights", "serve", "train", "eval", "export", "models")


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    parser = argparse.ArgumentParser(prog="matting", description="Catalog-scale background removal on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        import_module(f"pipelines.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as e:  # ParityError is a RuntimeError
        # Configuration and environment problems: one clear line, no traceback.
        print(f"matting: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
