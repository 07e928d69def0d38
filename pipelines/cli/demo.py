"""`matting demo`: the batch job on the bundled sample photos, with every flag of `run`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.cli import run
from pipelines.cli.common import SAMPLES


def command(args: argparse.Namespace) -> int:
    dest = os.path.abspath(args.dest)
    code = run.command(args, str(SAMPLES), dest)
    outputs = sorted(p for p in Path(dest).rglob("*") if p.is_file() and "_manifests" not in p.parts)
    print(f"cut-outs in {dest}:")
    for p in outputs:
        print(f"  {p}")
    return code


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the job on the bundled sample photos")
    p.add_argument("--dest", default="matting-demo-output")
    run.add_job_flags(p, places=False)
    p.set_defaults(func=command)
