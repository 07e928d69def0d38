"""`matting run SOURCE DEST`: the batch job. Its flags are derived from JobConfig, RuntimeConfig and
PostprocParams (pipelines/cli/flags.py); `demo` shares them."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from pipelines.cli.common import add_postproc_flags, add_runtime_flags, load_background, params_from_args, runtime_config
from pipelines.cli.flags import add_flags, from_flags

PLACES = ("source", "dest")  # JobConfig's positional fields: demo sets them itself


def add_job_flags(p: argparse.ArgumentParser, *, places: bool = True) -> None:
    """Every flag of a job: SOURCE and DEST (unless `places` is False), how the model runs, the job's own
    settings, the Ray address, and post-processing."""
    from pipelines.batch.config import JobConfig

    add_flags(p, JobConfig, exclude=() if places else PLACES)
    add_runtime_flags(p)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    add_postproc_flags(p)


def job_config(args: argparse.Namespace, source: str, dest: str):
    """The JobConfig of the flags of add_job_flags (validated there, before Ray starts)."""
    from pipelines.batch.config import JobConfig

    params = params_from_args(args)
    fields = from_flags(JobConfig, args, exclude=PLACES)
    return JobConfig(source=source, dest=dest, inference=runtime_config(args), params=params,
                     background=load_background(params.background_image, fields["s3_endpoint"]), **fields)


def warm_refinement(params) -> None:
    """Load (or, the first time on this machine, compile) pymatting's kernels once, in the driver,
    before Ray starts: workers of a local instance then only load them from the cache."""
    if params.refine == "trimap" or params.decontaminate:
        from postproc.refine import numba_cache_dir, warm_up

        seconds = warm_up()
        logging.getLogger("matting").info("pymatting kernels ready in %.1f s (cache %s)", seconds, numba_cache_dir())


def command(args: argparse.Namespace, source: str | None = None, dest: str | None = None) -> int:
    from pipelines.batch.job import JobStalled, run_job

    cfg = job_config(args, source or args.source, dest or args.dest)  # validate before starting Ray
    zip_path = getattr(args, "zip", None)
    if zip_path and os.path.isdir(zip_path):
        raise ValueError(f"--zip {zip_path} is a folder: name the .zip file to write")
    warm_refinement(cfg.params)
    try:
        with contextlib.ExitStack() as stack:

            def connect() -> None:  # on Ray: runs while the job plans its inputs (run_job)
                from pipelines.batch.on_ray import init_ray
                from pipelines.logs import filtered_stderr

                init_ray(args.address)
                stack.enter_context(filtered_stderr())  # Ray's known, harmless complaints (pipelines/logs.py)

            result = run_job(cfg, connect=connect, address=args.address)
    except JobStalled as e:
        print(f"matting: stalled: {e}", file=sys.stderr)
        return 3
    print(result.summary())
    if zip_path:
        from pipelines.batch.bundle import write_bundle

        print(write_bundle(cfg.dest, zip_path, run_id=result.run_id, s3_endpoint=cfg.s3_endpoint).summary())
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="turn a catalog (folder or s3:// prefix) into cut-outs and a manifest")
    add_job_flags(p)
    p.add_argument("--zip", help="also write the run's outputs and log into this ZIP file (see `matting bundle`)")
    p.set_defaults(func=command)
