"""`matting train`: distil the seed U-Net from a teacher on unlabelled photos (+ optional pairs).

1. The teacher (U²-Netp by default) mats every photo once; its alphas are cached on disk.
2. Each training sample is one of: a cached photo with the teacher's alpha (random crop, flip,
   colour jitter); a composite of a teacher-matted foreground over another photo or a plain or
   gradient background (its alpha is exact by construction); or, with --pairs, a photo with its
   own alpha or mask (supervised).
3. The student trains with BCE + L1 + gradient loss (pipelines/training/loss.py), on CPU in float32 or on
   CUDA with autocast FP16 and a GradScaler; it logs losses and a held-out MAE against the teacher,
   and writes a .safetensors checkpoint carrying its spec every --checkpoint-every steps and at the end.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from model.config import DEVICES, RUNTIMES
from model.tta import TTA_MODES
from model.preprocess import normalize_batch
from model.runtimes import resolve_device
from model.preprocess import resize_rgb
from model.specs import ModelSpec, PreprocessSpec
from pipelines.training import synth
from pipelines.training.sources import (check_weights, held_out, parse_source_weights, sampling_probs, shares,
                                        source_labels)
from pipelines.training.teacher import Teacher
from postproc import DecodeError
from pipelines.training.train_data import (CachedPhotos, Pair, PackedPhotos, find_pairs, list_images, pack_cache,
                                  pack_pairs, precompute_teacher, read_alpha, read_rgb, read_rgba)

log = logging.getLogger(__name__)

SAMPLES_ON = ("auto", "loader", "device")


def default_cache_dir() -> Path:
    env = os.environ.get("MATTING_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "unet-matting" / "teacher"


@dataclass
class TrainConfig:
    # Each field's metadata carries its command-line help: `matting train` derives its flags from them
    # (pipelines/cli/flags.py); validation stays in __post_init__.
    images: tuple[str, ...] = field(metadata={
        "positional": True, "help": "folders of unlabelled training photos (files directly inside)"})
    out: str = field(metadata={"help": "checkpoint to write, a .safetensors file (spec in its metadata)"})
    pairs: str | None = field(default=None, metadata={
        "help": "folder with image/ and alpha/ (mattes) or mask/ (binary masks): supervised pairs"})
    name: str = field(default="unet-custom", metadata={"help": "the model's name in its spec"})
    base_width: int = field(default=8, metadata={
        "help": "channels of the first level (the reference U-Net has 64)"})
    depth: int = field(default=5, metadata={"help": "levels, channels doubling each"})
    input_size: int = field(default=256, metadata={"help": "square training and inference size"})
    teacher: str = field(default="u2netp", metadata={
        "help": "teacher model, name or path; several, comma-separated (u2net,u2netp), are averaged"})
    # flip: chosen on the teachers' own eval figures (bench/RESULTS.md, "Own U-Net, round 2").
    teacher_tta: str = field(default="flip", metadata={
        "help": "test-time augmentation of every teacher model (flip: the mean with the mirror image)",
        "choices": TTA_MODES})
    teacher_runtime: str = field(default="auto", metadata={
        "help": "how the teacher runs (as --runtime of `matting run`)", "choices": RUNTIMES})
    cache_dir: str | None = field(default=None, metadata={
        "help": "teacher-alpha cache (default $MATTING_CACHE_DIR or ~/.cache/unet-matting/teacher)"})
    cache_size: int = field(default=320, metadata={
        "help": "square size photos and teacher alphas are cached at"})
    max_images: int | None = field(default=None, metadata={
        "help": "use at most N photos, drawn round-robin from the folders"})
    steps: int = field(default=2000, metadata={"help": "optimisation steps"})
    batch_size: int = field(default=8, metadata={"help": "samples per optimisation step"})
    lr: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    composite_prob: float = field(default=0.5, metadata={
        "help": "share of teacher samples composited over new backgrounds"})
    pair_weight: float = field(default=1.0, metadata={"help": "loss weight of --pairs samples"})
    pair_prob: float | None = field(default=None, metadata={
        "help": "share of samples drawn from --pairs (default: their share of all photos)"})
    source_weights: tuple[str, ...] = field(default=(), metadata={
        "help": "SOURCE=W,…: draw each photo of that folder W times as often as one of weight 1 (the default); "
                "a source is a folder as given, below the folders' common parent (ccp_fullbody/image)"})
    val_images: int = field(default=32, metadata={
        "help": "photos held out to report MAE vs the teacher, per source and in all: every 10th of each folder, "
                "up to its share of this number"})
    device: str = field(default="auto", metadata={
        "help": "where the student trains (and the teacher runs)", "choices": DEVICES})
    amp: bool | None = field(default=None, metadata={  # None: on for CUDA, off on CPU
        "help": "mixed precision (CUDA only; the default there)"})
    workers: int = field(default=0, metadata={"help": "data-loading processes (0: in the trainer)"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    seed: int = field(default=0, metadata={"help": "random seed of sampling, augmentation and initialisation"})
    log_every: int = field(default=10, metadata={"help": "steps between log lines"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between checkpoints"})
    max_minutes: float | None = field(default=None, metadata={
        "help": "stop training this long after the teacher cache is ready, with a checkpoint; the learning rate "
                "decays by this budget or by --steps, whichever runs out first"})
    init: str | None = field(default=None, metadata={  # continue or fine-tune
        "help": "start from these weights (a .safetensors checkpoint) instead of random"})
    pack_cache: bool = field(default=True, metadata={
        "help": "pack the cache's PNG files once into one memory-mapped array beside them (N × 400 KB at 320²; "
                "about 2× faster samples); --no-pack-cache decodes them at every sample"})
    samples_on: str = field(default="auto", metadata={
        "help": "where training samples are made: loader (DataLoader processes, --workers), device (whole "
                "batches on the training device from the packed photos held there); auto: device on CUDA with the "
                "packed cache",
        "choices": SAMPLES_ON})

    def __post_init__(self) -> None:
        self.images = tuple(self.images)
        weights = parse_source_weights(self.source_weights)  # "a=1.5,b=2" from the command line, or a tuple
        check_weights(weights, list(source_labels(self.images).values()))
        self.source_weights = tuple(f"{k}={v:g}" for k, v in weights.items())
        if not self.images:
            raise ValueError("give at least one folder of training images")
        if not self.out.endswith(".safetensors"):
            raise ValueError(f"--out must name a .safetensors file, got {self.out!r}")
        for key in ("base_width", "depth", "steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.input_size < 32 or self.cache_size < 32:
            raise ValueError(f"input_size and cache_size must be ≥ 32 px, got {self.input_size}, {self.cache_size}")
        if not 0 <= self.composite_prob <= 1:
            raise ValueError(f"composite_prob must be in [0, 1], got {self.composite_prob}")
        if self.pair_prob is not None and not 0 <= self.pair_prob <= 1:
            raise ValueError(f"pair_prob must be in [0, 1], got {self.pair_prob}")
        if self.pair_weight < 0 or self.val_images < 0 or self.workers < 0:
            raise ValueError("pair_weight, val_images and workers must be ≥ 0")
        if self.samples_on not in SAMPLES_ON:
            raise ValueError(f"samples_on must be one of {', '.join(SAMPLES_ON)}, got {self.samples_on!r}")
        if self.samples_on == "device" and not self.pack_cache:
            raise ValueError("--samples-on device samples from the packed cache: drop --no-pack-cache")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        self.teacher_config()  # the teacher's names and runtime choices fail here, before any work

    def teacher_config(self, device: str | None = None) -> Teacher:
        """How the teacher runs: its models, each a RuntimeConfig, passed whole to precompute_teacher."""
        return Teacher.parse(self.teacher, tta=self.teacher_tta, runtime=self.teacher_runtime,
                             device=device or self.device, threads=self.threads)

    def samples_on_device(self, device: str) -> bool:
        """Whether samples are made on the training device: asked, or auto on CUDA with the packed cache."""
        return self.samples_on == "device" or (self.samples_on == "auto" and device == "cuda" and self.pack_cache)

    def student_spec(self, step: int) -> ModelSpec:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M")
        return ModelSpec(
            name=self.name,
            version=f"{self.name}-w{self.base_width}d{self.depth}-{self.input_size}-{stamp}-s{step}",
            architecture="unet",
            arch_kwargs={"base_width": self.base_width, "depth": self.depth},
            # The teacher's resize filter: the cached photos the student learns from were made with it.
            preprocess=PreprocessSpec(input_size=(self.input_size, self.input_size), input_scale="unit",
                                      resize=self.teacher_config().preprocess.resize,
                                      output_activation="sigmoid", output_normalization="none"),
            license="trained by `matting train`; credit the training data's sources",
            description=f"U-Net {self.base_width}·2^i × {self.depth} levels distilled from {self.teacher_config().label} "
                        f"at {self.input_size}², {step} steps",
        )


class DistillDataset:
    """Sample i is drawn with its own seeded generator: reproducible, and safe across workers.

    A map-style dataset for torch's DataLoader (which only needs __len__ and __getitem__ and turns
    the numpy arrays into tensors), so that `matting` imports no torch until it trains.
    """

    def __init__(self, cached: CachedPhotos | PackedPhotos, pairs: list[Pair], *, out: int, cache_size: int,
                 preprocess: PreprocessSpec, length: int, seed: int, composite_prob: float, pair_weight: float,
                 pair_prob: float | None = None, photo_probs: np.ndarray | None = None):
        if not cached and not pairs:
            raise ValueError("no training images: the teacher cache is empty and no pairs were given")
        self.cached, self.pairs, self.out, self.cache_size = cached, pairs, out, cache_size
        self.preprocess, self.length, self.seed = preprocess, length, seed
        self.composite_prob, self.pair_weight = composite_prob, pair_weight
        self.pair_share = len(pairs) / (len(pairs) + len(cached)) if pair_prob is None else pair_prob
        if not cached or not pairs:  # only one kind of sample exists
            self.pair_share = 0.0 if cached else 1.0
        # The teacher photo of a sample is drawn by these probabilities (per-source weights); None: uniform.
        if photo_probs is not None and len(photo_probs) != len(cached):
            raise ValueError(f"photo_probs has {len(photo_probs)} entries for {len(cached)} photos")
        self.cumulative = None if photo_probs is None else np.cumsum(photo_probs) / np.sum(photo_probs)

    def _photo(self, rng: np.random.Generator) -> int:
        if self.cumulative is None:
            return int(rng.integers(len(self.cached)))
        return min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.cached) - 1)

    def __len__(self) -> int:
        return self.length

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        if self.cached and rng.random() < synth.BACKGROUND_PHOTO_PROB:
            rgb, _ = self.cached[rng.integers(len(self.cached))]
            bg, _ = synth.random_resized_crop(rgb, rgb[..., 0], self.out, rng, scale=synth.BACKGROUND_CROP_SCALE)
            return synth.color_jitter(bg, rng)
        return synth.plain_background(self.out, rng)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(image uint8 (H,W,3), alpha uint8 (H,W), weight, coarse)."""
        if self.pairs and rng.random() < self.pair_share:
            pair = self.pairs[rng.integers(len(self.pairs))]
            try:
                rgb, alpha = read_rgb(pair.image, self.cache_size, self.preprocess), read_alpha(pair.alpha, self.cache_size)
            except (DecodeError, OSError) as e:  # a bad pair costs its sample, not the run
                log.warning("skipping pair %s: %s", pair.image, e)
                if not self.cached:
                    raise ValueError(f"pair {pair.image} is unreadable and there are no teacher photos") from e
            else:
                rgb, alpha = synth.flip(*synth.random_resized_crop(rgb, alpha, self.out, rng), rng)
                return synth.color_jitter(rgb, rng), alpha, self.pair_weight, float(pair.coarse)
        rgb, alpha = self.cached[self._photo(rng)]
        if rng.random() < self.composite_prob:
            made = synth.composite(synth.color_jitter(rgb, rng, 0.5), alpha, self._background(rng), rng)
            if made is not None:
                return synth.color_jitter(made[0], rng, 0.5), made[1], 1.0, 0.0
        rgb, alpha = synth.flip(*synth.random_resized_crop(rgb, alpha, self.out, rng), rng)
        return synth.color_jitter(rgb, rng), alpha, 1.0, 0.0

    def __getitem__(self, i: int):
        rgb, alpha, weight, coarse = self.sample(np.random.default_rng([self.seed, i]))
        x = normalize_batch(np.ascontiguousarray(rgb)[None], self.preprocess)[0]
        a = (alpha.astype(np.float32) / 255.0)[None]
        return x, a, np.float32(weight), np.float32(coarse)


@dataclass(frozen=True)
class Split:
    train_files: list[Path]  # teacher-cache files trained on
    train_labels: list[str]  # their sources
    val_files: list[Path]  # held out
    val_labels: list[str]
    held_images: frozenset  # the held-out photos (resolved), kept out of the pairs too


def training_split(cfg: TrainConfig, cached: list[tuple[Path, Path]]) -> Split:
    """Every 10th photo of each source is held out (up to its share of --val-images): never trained
    on, neither as a teacher sample nor as a pair, and scored per source."""
    label_of = source_labels(cfg.images)
    labels = [label_of[img.parent.resolve()] for img, _ in cached]
    held = sorted(held_out(labels, cfg.val_images))
    held_set = set(held)
    return Split(train_files=[c for i, (_, c) in enumerate(cached) if i not in held_set],
                 train_labels=[label for i, label in enumerate(labels) if i not in held_set],
                 val_files=[cached[i][1] for i in held], val_labels=[labels[i] for i in held],
                 held_images=frozenset(cached[i][0].resolve() for i in held))


def validation_batch(files: list[Path], out: int, preprocess: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Held-out photos, no augmentation: the student's MAE against the teacher on unseen images."""
    import cv2

    rgbs, alphas = [], []
    for f in files:
        rgb, alpha = read_rgba(f)
        rgbs.append(resize_rgb(rgb, (out, out), preprocess.resize, preprocess.preshrink))
        alphas.append(cv2.resize(alpha, (out, out), interpolation=cv2.INTER_AREA))
    return normalize_batch(np.stack(rgbs), preprocess), (np.stack(alphas).astype(np.float32) / 255.0)[:, None]


def one_thread_per_worker(worker_id: int) -> None:
    """Data-loading processes already run one per core: OpenCV's own thread pool in each would oversubscribe."""
    import cv2

    cv2.setNumThreads(1)


class StopFlag:
    """SIGTERM (a scheduler's stop, `kill`) ends training after the current step, with a checkpoint."""

    def __init__(self):
        self.stop = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        log.warning("SIGTERM: stopping after this step and writing a checkpoint")
        self.stop = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def teacher_data(cfg: TrainConfig, device: str) -> tuple[Split, list[Pair]]:
    """The teacher cache filled for cfg's photos, split into trained-on and held-out photos, and the
    --pairs to train on (none of a held-out photo). `matting train` and its --precompute-only both start here."""
    pairs = find_pairs(cfg.pairs) if cfg.pairs else []  # a bad --pairs fails before the teacher runs
    cached = precompute_teacher(list_images(list(cfg.images), cfg.max_images), teacher=cfg.teacher_config(device),
                                cache_dir=cfg.cache_dir or default_cache_dir(), size=cfg.cache_size)
    split = training_split(cfg, cached)
    return split, [p for p in pairs if p.image.resolve() not in split.held_images]


def training_photos(cfg: TrainConfig, split: Split) -> CachedPhotos | PackedPhotos:
    """The photos trained on, packed once into one memory-mapped array unless --no-pack-cache."""
    if cfg.pack_cache and split.train_files:
        return pack_cache(split.train_files, cfg.cache_size)
    return CachedPhotos(split.train_files)


def pack_training_pairs(cfg: TrainConfig, pairs: list[Pair], preprocess: PreprocessSpec):
    """The pairs decoded once for sampling on the device, beside the teacher cache (reused while unchanged)."""
    return pack_pairs(pairs, cfg.cache_size, preprocess, Path(cfg.cache_dir or default_cache_dir()) / "pairs")


def device_batches(cfg: TrainConfig, photos: CachedPhotos | PackedPhotos, pairs: list[Pair], preprocess: PreprocessSpec,
                   device: str, photo_probs: np.ndarray | None = None):
    """Batches made on the training device (pipelines/training/device_samples.py), without end."""
    from pipelines.training.device_samples import DeviceSampler

    packed = pack_training_pairs(cfg, pairs, preprocess) if pairs else None
    sampler = DeviceSampler(photos.array() if len(photos) else None, out=cfg.input_size, preprocess=preprocess,
                            device=device, seed=cfg.seed, composite_prob=cfg.composite_prob,
                            pairs=packed.photos.array() if packed else None, pair_coarse=packed.coarse if packed else None,
                            pair_weight=cfg.pair_weight, pair_prob=cfg.pair_prob, photo_probs=photo_probs)
    log.info("samples made on %s: %d photos%s held there (%.2f GB)", device, sampler.n_photos,
             f" + {sampler.n_pairs} pairs" if sampler.n_pairs else "",
             (sampler.n_photos + sampler.n_pairs) * sampler.size ** 2 * 4 / 1e9)
    return sampler.batches(cfg.batch_size)


def run_training(cfg: TrainConfig) -> dict:
    """Train and write cfg.out; returns a summary (steps, wall time, losses, held-out MAE)."""
    import torch
    from torch.utils.data import DataLoader

    from model.factory import build_architecture
    from pipelines.training.loss import Trainer
    from model.weights import save_safetensors

    device = resolve_device(cfg.device)
    amp = (device == "cuda") if cfg.amp is None else cfg.amp
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    split, pairs = teacher_data(cfg, device)
    train_files, train_labels, val_files, val_labels = split.train_files, split.train_labels, split.val_files, split.val_labels
    photo_probs = sampling_probs(train_labels, parse_source_weights(cfg.source_weights)) if train_files else None
    if train_files:
        log.info("sources (photos trained on, held out, share of the draws): %s", "; ".join(
            f"{k} {train_labels.count(k)}, {val_labels.count(k)}, {v:.1%}"
            for k, v in shares(train_labels, photo_probs).items()))
    if not cfg.source_weights:
        photo_probs = None  # uniform: drawn as before weights existed (the same samples for a seed)
    spec = cfg.student_spec(0)
    net = build_architecture(spec)
    if cfg.init:
        from model.factory import create_model

        net.load_state_dict(create_model(spec, weights=cfg.init).state_dict())
    params = sum(p.numel() for p in net.parameters())
    log.info("student %s: %d parameters; %d teacher-matted photos (+%d held out), %d pairs; device %s, amp %s",
             spec.architecture, params, len(train_files), len(val_files), len(pairs), device, amp)

    photos = training_photos(cfg, split)
    data = DistillDataset(photos, pairs, out=cfg.input_size, cache_size=cfg.cache_size,
                          preprocess=spec.preprocess, length=cfg.steps * cfg.batch_size, seed=cfg.seed,
                          composite_prob=cfg.composite_prob, pair_weight=cfg.pair_weight, pair_prob=cfg.pair_prob,
                          photo_probs=photo_probs)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                        pin_memory=device == "cuda", drop_last=True, persistent_workers=cfg.workers > 0,
                        worker_init_fn=one_thread_per_worker if cfg.workers > 0 else None)
    # The loader above starts no process until iterated; on the device path it is never iterated.
    batches = device_batches(cfg, photos, pairs, spec.preprocess, device, photo_probs) \
        if cfg.samples_on_device(device) else loader
    trainer = Trainer(net, lr=cfg.lr, weight_decay=cfg.weight_decay, total_steps=cfg.steps, device=device, amp=amp)
    val = [torch.from_numpy(a) for a in validation_batch(val_files, cfg.input_size, spec.preprocess)] \
        if val_files else None

    out = Path(cfg.out)
    log_path = out.with_suffix(".train.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    held_sources = sorted(set(val_labels))
    fields = ["step", "elapsed_s", "loss", "bce", "l1", "grad", "lr", "images_per_s", "val_mae",
              *(f"val_mae[{s}]" for s in held_sources)]
    history: list[dict] = []
    stop = StopFlag()
    t0 = time.perf_counter()
    window: list[dict] = []
    step = 0

    def held_out_mae() -> dict[str, float]:
        """MAE against the teacher on the held-out photos, in all and per source."""
        if val is None:
            return {"val_mae": math.nan}
        preds = torch.cat([trainer.predict(val[0][i:i + 16]).cpu() for i in range(0, len(val[0]), 16)])
        per_image = (preds - val[1]).abs().mean(dim=(1, 2, 3)).numpy()
        out = {"val_mae": float(per_image.mean())}
        for s in held_sources:
            out[f"val_mae[{s}]"] = float(np.mean([e for e, label in zip(per_image, val_labels) if label == s]))
        return out

    def checkpoint(reason: str) -> dict[str, float]:
        maes = held_out_mae()
        path = save_safetensors(trainer.net.state_dict(), cfg.student_spec(step), out)
        log.info("checkpoint (%s) at step %d: held-out MAE vs teacher %.4f (%s) → %s", reason, step, maes["val_mae"],
                 ", ".join(f"{s} {maes[f'val_mae[{s}]']:.4f}" for s in held_sources), path)
        return maes

    try:
        with open(log_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            if cfg.init and val is not None:
                # Where a continued run starts: the earlier checkpoint against this run's teacher and
                # held-out photos, the figure its own checkpoints must beat.
                start = held_out_mae()
                log.info("held-out MAE vs teacher of --init %s: %.4f (%s)", cfg.init, start["val_mae"],
                         ", ".join(f"{s} {start[f'val_mae[{s}]']:.4f}" for s in held_sources))
                writer.writerow({**dict.fromkeys(fields, ""), "step": 0, "elapsed_s": 0.0,
                                 **{k: round(v, 5) for k, v in start.items()}})
            for x, alpha, weight, coarse in batches:
                budget_used = (time.perf_counter() - t0) / (cfg.max_minutes * 60) if cfg.max_minutes else 0.0
                window.append(trainer.step(x, alpha, weight, coarse, time_progress=budget_used))
                step += 1
                elapsed = time.perf_counter() - t0
                timed_out = cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60
                last = step == cfg.steps or timed_out or stop.stop
                if not (step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or last):
                    continue
                row = {k: float(np.mean([w[k] for w in window])) for k in ("loss", "bce", "l1", "grad")}
                row.update(step=step, elapsed_s=round(elapsed, 1), lr=window[-1]["lr"],
                           images_per_s=round(step * cfg.batch_size / elapsed, 2), **dict.fromkeys(fields[8:], ""))
                window.clear()
                log.info("step %d/%d loss %.4f (bce %.4f l1 %.4f grad %.4f) lr %.2e %.2f img/s", step, cfg.steps,
                         row["loss"], row["bce"], row["l1"], row["grad"], row["lr"], row["images_per_s"])
                if step % cfg.checkpoint_every == 0 or last:
                    reason = "end" if step == cfg.steps else "stopped" if last else "periodic"
                    row.update({k: round(v, 5) for k, v in checkpoint(reason).items()})
                history.append(row)
                writer.writerow(row)
                f.flush()
                if last:
                    break
    except KeyboardInterrupt:
        log.warning("interrupted: writing a checkpoint at step %d", step)
        checkpoint("interrupted")
        raise
    finally:
        stop.restore()
    return {"steps": step, "wall_s": round(time.perf_counter() - t0, 1), "out": str(out), "log": str(log_path),
            "first": history[0] if history else None, "last": history[-1] if history else None,
            "val_mae": next((r["val_mae"] for r in reversed(history) if r["val_mae"] != ""), None),
            "val_mae_by_source": next(({s: r[f"val_mae[{s}]"] for s in held_sources}
                                       for r in reversed(history) if r["val_mae"] != ""), None)}
