"""`matting report DEST`: a run's manifest summarised (counts, errors, seconds per stage), optionally a contact sheet."""

from __future__ import annotations

import argparse

from pipelines.cli.common import add_s3_endpoint_flag


def command(args: argparse.Namespace) -> int:
    from pipelines.batch.state import consolidated
    from pipelines.manifest import list_runs, read_manifest, summarize
    from pipelines.storage import open_location

    dest = open_location(args.dest, args.s3_endpoint)
    if args.current:
        table, label = consolidated(dest), "(current view over all runs)"
    else:
        run_id = args.run_id or (list_runs(dest) or [None])[-1]
        table, label = read_manifest(dest, run_id), run_id or ""
    print(summarize(table, label))
    if args.html:
        from pipelines.batch.contact_sheet import write_contact_sheet

        print(f"contact sheet: {write_contact_sheet(dest, table, args.html, f'matting run {label}')}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="summarise a run's manifest: counts, errors, seconds per stage")
    p.add_argument("dest")
    p.add_argument("--run-id", help="default: the latest run")
    p.add_argument("--current", action="store_true", help="the consolidated view: one current row per input")
    p.add_argument("--html", metavar="FILE",
                   help="also write a contact sheet: thumbnails over a checkerboard linking to the outputs, least "
                        "confident first (a sample beyond 200), then the errors; thumbnails in FILE's <stem>_files/")
    add_s3_endpoint_flag(p)
    p.set_defaults(func=command)
