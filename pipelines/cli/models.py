"""`matting models`: the registered models, their versions, input sizes and whether their weights are here."""

from __future__ import annotations

import argparse


def command(args: argparse.Namespace) -> int:
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


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.set_defaults(func=command)
