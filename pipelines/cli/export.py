"""`matting export MODEL`: a registered model to ONNX, with a parity check against torch on the sample photos."""

from __future__ import annotations

import argparse

from pipelines.cli.common import SAMPLES


def command(args: argparse.Namespace) -> int:
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


def register(sub) -> None:
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
    p.set_defaults(func=command)
