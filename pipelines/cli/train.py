"""`matting train IMAGES… --out X.safetensors`: distil the U-Net from a teacher. Flags derived from TrainConfig."""

from __future__ import annotations

import argparse

from pipelines.cli.flags import add_flags, from_flags


def command(args: argparse.Namespace) -> int:
    from pipelines.training.train import (TrainConfig, default_cache_dir, pack_training_pairs, run_training,
                                          training_pairs, training_split)
    from pipelines.training.train_data import find_pairs, list_images, pack_cache, precompute_teacher

    cfg = TrainConfig(**from_flags(TrainConfig, args))
    if args.precompute_only:
        cached = precompute_teacher(list_images(list(cfg.images), cfg.max_images), teacher=cfg.teacher_config(),
                                    cache_dir=cfg.cache_dir or default_cache_dir(), size=cfg.cache_size)
        split = training_split(cfg, cached)
        train_files = split.train_files
        if cfg.pack_cache and train_files:
            # The packs the training runs of these flags will map (the pairs' for sampling on the
            # device): runs started side by side then share them instead of each decoding every photo.
            pack_cache(train_files, cfg.cache_size)
            pairs = training_pairs(find_pairs(cfg.pairs), split) if cfg.pairs else []
            if pairs:
                pack_training_pairs(cfg, pairs, cfg.student_spec(0).preprocess)
        print(f"teacher cache: {len(cached)} photos ({len(train_files)} to train on)")
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
