"""`matting warmup`: compile pymatting's kernels once into the numba cache (a set-up step)."""

from __future__ import annotations

import argparse


def command(args: argparse.Namespace) -> int:
    from postproc.refine import numba_cache_dir, warm_up

    print(f"pymatting kernels ready in {warm_up():.1f} s (numba cache {numba_cache_dir()})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("warmup", help="compile pymatting's kernels once into the numba cache (a set-up step)")
    p.set_defaults(func=command)
