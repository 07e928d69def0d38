"""`matting eval --data DIR`: score models × post-processing settings × TTA modes against ground truth
(pipelines/evaluation/)."""

from __future__ import annotations

import argparse

from model.preprocess import RESIZE_FILTERS, UPSAMPLE_FILTERS
from pipelines.cli.common import add_postproc_flags, add_runtime_flags, add_s3_endpoint_flag, params_from_args, runtime_config

# RuntimeConfig fields eval takes in its own syntax: --model NAME[=WEIGHTS]|PATH[:resize=…] (repeatable), --tta a list.
OWN_SYNTAX = ("model", "weights", "tta")
BASE_PARAMS = ("alpha_threshold", "erode", "feather")  # the base every --setting starts from


def command(args: argparse.Namespace) -> int:
    from pipelines.evaluation.evaluate import (evaluate, find_eval_set, format_table, parse_model, parse_setting,
                                               write_csv)

    base = params_from_args(args, only=BASE_PARAMS)
    run = runtime_config(args, exclude=OWN_SYNTAX, model="u2netp")  # how every --model runs
    models = [parse_model(m, run) for m in (args.model or ["u2netp"])]
    settings = [parse_setting(s, base) for s in (args.setting or ["default"])]
    tta = parse_tta_list(args.tta)
    data = find_eval_set(args.data, args.trimap_dir, args.limit)
    report = None
    if args.report:
        from pipelines.evaluation.eval_report import EvalReport

        report = EvalReport(args.report)
    print(f"eval set {data.root}: {len(data.samples)} images" +
          (f", trimaps from {data.trimap_dir}/" if data.trimap_dir else ", no trimaps"), flush=True)
    rows = evaluate(data, models, settings, batch_size=args.batch_size, s3_endpoint=args.s3_endpoint,
                    tta=tta, report=report)
    print(format_table(rows, data.trimap_dir))
    print("SAD, Grad, Conn: sums / 1000 per image; MSE, MAD, MAE: per-pixel means; alpha in [0, 1]. "
          "images/s: decode + inference + post-processing, after a warm-up batch.")
    for r in rows:
        for p in r.per_image:
            if p["status"] != "ok":
                print(f"  {r.model} {r.setting} {p['image']}: {p['error']}")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"per-image scores: {args.csv}")
    if report is not None:
        print(f"report: {report.write(rows, data)}")
    return 0


def parse_tta_list(text: str) -> tuple[str, ...]:
    """'none,flip' → ('none', 'flip'): modes compared side by side, each checked by model/tta.py."""
    from model.tta import check_mode

    modes = tuple(dict.fromkeys(check_mode(m.strip()) for m in text.split(",") if m.strip()))
    if not modes:
        raise ValueError("--tta is empty; name at least one mode, e.g. none or none,flip")
    return modes


def register(sub) -> None:
    p = sub.add_parser("eval", help="score models and post-processing settings on image/ + alpha/ (+ trimap/)")
    p.add_argument("--data", required=True, help="folder with image/, alpha/ (matched by file stem), optional trimap*/")
    p.add_argument("--model", action="append", metavar="NAME[=WEIGHTS]|PATH[:resize=F,preshrink=K,upsample=F]",
                   help="registered model, optionally with a weights file, or a checkpoint or exported .onnx that "
                        f"carries its spec; ':resize=pil_lanczos' ({', '.join(RESIZE_FILTERS)}), ':preshrink=0' "
                        f"and ':upsample=cubic' (the alpha back to full size: {', '.join(UPSAMPLE_FILTERS)}) "
                        "override its preprocessing; repeat to compare (default u2netp)")
    p.add_argument("--setting", action="append", metavar="NAME:KEY=VALUE,...",
                   help="a named post-processing setting on top of the options below, e.g. "
                        "'tight:alpha_threshold=10,erode=2' or 'cf:refine=trimap,trimap_erode=10'; "
                        "repeat to compare (default: one, 'default')")
    p.add_argument("--trimap-dir", help="trimap folder inside --data (default: trimap/, else the first trimap*/)")
    p.add_argument("--csv", help="write per-image and mean scores to this CSV file")
    p.add_argument("--tta", default="none", metavar="MODE[,MODE]",
                   help="test-time augmentation modes to compare side by side: none, flip (the photo and its "
                        "mirror image, averaged), or none,flip (default none)")
    p.add_argument("--report", metavar="DIR",
                   help="write a self-contained HTML page to DIR/index.html: the metric table, then per image "
                        "(worst first) the photo, the ground truth, each model's/setting's cut-out and error map")
    p.add_argument("--limit", type=int, help="score only the first N images (by name)")
    add_runtime_flags(p, exclude=OWN_SYNTAX)
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (default 8)")
    add_s3_endpoint_flag(p, help="S3-compatible endpoint for s3:// weights (--model NAME=s3://…)")
    add_postproc_flags(p, only=BASE_PARAMS, title="post-processing (the base every --setting starts from)")
    p.set_defaults(func=command)
