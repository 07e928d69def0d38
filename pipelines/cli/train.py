"""`matting train IMAGES… --out X.safetensors`: distil the U-Net from a teacher. Flags derived from TrainConfig."""

from __future__ import annotations

import argparse

from pipelines.cli.flags import add_flags, from_flags


def command(args: argparse.Namespace) -> int:
    from pipelines.training.train import (TrainConfig, pack_training_pairs, run_training, teacher_data,
                                          training_photos)

    cfg = TrainConfig(**from_flags(TrainConfig, args))
    if args.precompute_only:
        split, pairs = teacher_data(cfg, cfg.device)
        if cfg.pack_cache and split.train_files:
            # The packs the training runs of these flags will map (the pairs' for sampling on the
            # device): runs started side by side then share them instead of each decoding every photo.
            training_photos(cfg, split)
            if pairs:
                pack_training_pairs(cfg, pairs, cfg.student_spec(0).preprocess)
        print(f"teacher cache: {len(split.train_files) + len(split.val_files)} photos "
              f"({len(split.train_files)} to train on)")
        return 0
    summary = run_training(cfg)
    print(f"trained {summary['steps']} steps in {summary['wall_s']} s; held-out MAE vs teacher {summary['val_mae']}; "
          f"checkpoint {summary['out']}; log {summary['log']}")
    return 0


def register(sub) -> None:
    from pipelines.training.train import TrainConfig

    p = sub.add_parser("train", help="distil the U-Net from a teacher on folders of photos (+ optional pairs)")
    add_flags(p, TrainConfig)
    p.add_argument("--precompute-only", action="store_true",
                   help="fill the teacher cache, pack the photos these flags train on, and stop")
    p.set_defaults(func=command)
