"""`matting bundle DEST OUT.zip`: one ZIP of a run's outputs with its log (pipelines/batch/bundle.py)."""

from __future__ import annotations

import argparse

from pipelines.cli.common import add_s3_endpoint_flag


def command(args: argparse.Namespace) -> int:
    from pipelines.batch.bundle import write_bundle

    print(write_bundle(args.dest, args.out, run_id=args.run_id, s3_endpoint=args.s3_endpoint,
                       current=args.current).summary())
    return 0


def register(sub) -> None:
    p = sub.add_parser("bundle", help="one ZIP of a run's outputs with its log (report, manifest as CSV and Parquet)")
    p.add_argument("dest", help="the run's destination (folder or s3:// prefix)")
    p.add_argument("out", help="the ZIP file to write (local path)")
    p.add_argument("--run-id", help="default: the latest run")
    p.add_argument("--current", action="store_true", help="every input's current output across all runs")
    add_s3_endpoint_flag(p)
    p.set_defaults(func=command)
