"""Training batches made with torch ops on the training device (pipelines/training/device_samples.py).

Run on CPU here: device="cpu" runs the same code as CUDA, with a CPU generator.
"""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from model.preprocess import normalize_batch
from model.specs import PreprocessSpec
from pipelines.training.device_samples import DeviceSampler
from pipelines.training.train_data import find_pairs, pack_pairs, read_alpha, read_rgb

SPEC = PreprocessSpec(input_size=(48, 48), input_scale="unit", output_activation="sigmoid",
                      output_normalization="none")


def levels(x: torch.Tensor) -> np.ndarray:
    """The RGB levels (n, H, W, 3), 0–255 as floats, that a normalised batch was made from."""
    return (x.permute(0, 2, 3, 1).numpy() * np.array(SPEC.std) + np.array(SPEC.mean)) * 255


def subject_photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 4) uint8: smooth random colour fields, each with a soft ellipse as its alpha."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, 4), np.uint8)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        out[i, ..., :3] = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
        alpha = np.zeros((size, size), np.uint8)
        centre = tuple(int(c) for c in rng.integers(size // 3, 2 * size // 3, 2))
        axes = tuple(int(a) for a in rng.integers(size // 6, size // 3, 2))
        cv2.ellipse(alpha, centre, axes, 0, 0, 360, 255, -1)
        out[i, ..., 3] = cv2.GaussianBlur(alpha, (7, 7), 2)
    return out


def test_a_batch_has_the_shapes_ranges_and_normalisation_of_the_loader():
    photos, pairs = subject_photos(6, 64), subject_photos(2, 64, seed=1)
    sampler = DeviceSampler(photos, out=48, preprocess=SPEC, seed=3, pairs=pairs, pair_coarse=[True, False],
                            pair_weight=0.5, pair_prob=0.25)
    x, alpha, weight, coarse = sampler.batch(32, step=0)
    assert x.shape == (32, 3, 48, 48) and alpha.shape == (32, 1, 48, 48) and weight.shape == coarse.shape == (32,)
    assert {t.dtype for t in (x, alpha, weight, coarse)} == {torch.float32}
    assert 0 <= alpha.min() and alpha.max() <= 1 and ((alpha > 0) & (alpha < 1)).any()  # soft edges survive
    np.testing.assert_allclose(alpha * 255, (alpha * 255).round(), atol=1e-4)  # whole levels, as uint8 alphas
    assert set(weight.tolist()) == {0.5, 1.0} and set(coarse.tolist()) <= {0.0, 1.0}
    rgb = levels(x)
    assert np.abs(rgb - rgb.round()).max() < 1e-3 and rgb.min() > -1e-3 and rgb.max() < 255 + 1e-3
    # The same normalisation as the loader's (normalize_batch of the student's spec).
    np.testing.assert_allclose(x.numpy(), normalize_batch(rgb.round().astype(np.uint8), SPEC), atol=1e-5)


def test_batches_are_seeded_by_step():
    photos = subject_photos(5, 64)
    a, b = (DeviceSampler(photos, out=48, preprocess=SPEC, seed=7) for _ in range(2))
    first = a.batch(8, step=0)
    assert all(torch.equal(s, t) for s, t in zip(first, b.batch(8, step=0)))  # reproducible
    later = b.batch(8, step=5)  # b never drew steps 1–4: a run resumes at any step
    batches = a.batches(8, start=4)
    next(batches)
    assert all(torch.equal(s, t) for s, t in zip(next(batches), later))
    assert not torch.equal(first[0], later[0])
    assert all(torch.equal(s, t) for s, t in zip(b.batch(8), a.batch(8, step=6)))  # no step: the next one
    other = DeviceSampler(photos, out=48, preprocess=SPEC, seed=8).batch(8, step=0)
    assert not torch.equal(first[0], other[0])


def test_image_and_alpha_are_cropped_and_flipped_together():
    size = 64
    ramp = np.arange(size, dtype=np.uint8) * 4  # 0 … 252 left to right
    photo = np.zeros((1, size, size, 4), np.uint8)
    photo[..., 0] = photo[..., 3] = ramp[None, :]  # alpha equals red
    photo[..., 1] = ramp[:, None]  # green grows downwards
    sampler = DeviceSampler(photo, out=48, preprocess=SPEC, composite_prob=0.0, jitter=0.0)
    x, alpha, _, _ = sampler.batch(64, step=0)
    rgb = levels(x).round()
    np.testing.assert_array_equal(rgb[..., 0], (alpha[:, 0].numpy() * 255).round())
    red_rows = rgb[..., 0].mean(1)  # (n, W): red across the width
    rising = red_rows[:, -1] > red_rows[:, 0]
    assert 0.25 < rising.mean() < 0.75  # about half the crops are flipped …
    assert (rgb[:, -1, :, 1] > rgb[:, 0, :, 1]).all()  # … horizontally only
    # Each crop keeps 55–100 % of the area at aspect 3/4–4/3: 64–100 % of the width.
    span = np.abs(red_rows[:, -1] - red_rows[:, 0]) / 252
    assert 0.6 < span.min() and span.max() <= 1.0 and span.std() > 0.03, span


def test_resampling_is_opencvs_area_and_linear_resize():
    from pipelines.training.device_samples import axis_weights, resample

    photo = subject_photos(1, 64, seed=4)[0]
    photo[..., :3] = np.random.default_rng(4).integers(0, 256, (64, 64, 3))  # detail that aliases if not averaged
    # (y, h, x, w) windows: shrinking both ways (area), enlarging both ways (linear), the whole photo.
    for y, h, x, w in [(3, 61, 0, 50), (10, 20, 30, 24), (0, 64, 0, 64)]:
        t = lambda *v: torch.tensor(v)  # noqa: E731
        no = torch.tensor([False])
        got = resample(torch.from_numpy(photo)[None], axis_weights(t(y), t(h), t(0), t(32), no, 32, 64),
                       axis_weights(t(x), t(w), t(0), t(32), no, 32, 64))[0].permute(1, 2, 0).numpy()
        interp = cv2.INTER_AREA if h >= 32 else cv2.INTER_LINEAR
        want = cv2.resize(np.ascontiguousarray(photo[y:y + h, x:x + w]), (32, 32), interpolation=interp)
        assert np.abs(got - want).max() <= 1, (y, h, x, w)


def test_colour_jitter_is_synths_matrix():
    from pipelines.training import synth
    from pipelines.training.device_samples import color_jitter

    class Uniforms:  # a generator whose uniform(lo, hi) draws are the given fractions of [lo, hi)
        def __init__(self, fractions):
            self.fractions = iter(fractions)

        def uniform(self, lo, hi):
            return lo + (hi - lo) * next(self.fractions)

    photo = subject_photos(1, 40, seed=2)[0, ..., :3]
    u = torch.tensor([[0.05, 0.9, 0.3, 0.99], [0.5, 0.5, 0.5, 0.5], [0.97, 0.02, 0.8, 0.1]])
    for strength in (1.0, 0.5):
        got = color_jitter(torch.from_numpy(photo).permute(2, 0, 1)[None].float().expand(3, -1, -1, -1), u, strength)
        for k in range(3):
            want = synth.color_jitter(photo, Uniforms(u[k].tolist()), strength)
            assert np.abs(got[k].permute(1, 2, 0).numpy() - want).max() <= 1


def test_plain_backgrounds_are_synths_in_distribution():
    from pipelines.training import synth
    from pipelines.training.device_samples import _WIDTH, plain_backgrounds

    n, out = 2000, 32

    def stats(images: np.ndarray) -> np.ndarray:  # (n, H, W, 3) levels
        spread = images.std((1, 2)).mean(1)  # within each channel: 0 for a flat fill
        grey = np.ptp(images.mean((1, 2)), axis=1) < 6  # the three channels' means alike: a grey fill or ramp
        rough = np.abs(np.diff(images, axis=2)).mean((1, 2, 3))  # pixel to pixel: the ramps' noise
        return np.stack([spread == 0, images.mean((1, 2, 3)) / 255, spread / 255, grey,
                         grey & (images.min((1, 2, 3)) >= 190), rough], 1).astype(float)

    rng = np.random.default_rng(0)
    on_cpu = stats(np.stack([synth.plain_background(out, rng) for _ in range(n)]).astype(float))
    g = torch.Generator().manual_seed(0)
    made = plain_backgrounds(torch.rand((n, _WIDTH), generator=g), out, g)
    assert made.shape == (n, 3, out, out) and (made == made.round()).all() and 0 <= made.min() and made.max() <= 255
    on_device = stats(made.permute(0, 2, 3, 1).numpy())
    gap = np.abs(on_device.mean(0) - on_cpu.mean(0))
    assert (gap < 4 * np.sqrt(on_device.var(0) / n + on_cpu.var(0) / n) + 1e-3).all(), (on_device.mean(0),
                                                                                         on_cpu.mean(0))


def test_composite_alpha_is_exact():
    size = 64
    photos = np.zeros((3, size, size, 4), np.uint8)
    photos[..., 0] = 255  # pure red photos …
    photos[..., 3] = subject_photos(3, size)[..., 3]  # … with soft subjects
    # Plain and gradient fills only: a flat fill shows the background's colour where alpha is 0.
    sampler = DeviceSampler(photos, out=48, preprocess=SPEC, composite_prob=1.0, jitter=0.0, background_photo_prob=0.0)
    x, alpha, _, _ = sampler.batch(48, step=0)
    rgb, a = levels(x).round(), alpha[:, 0].numpy()[..., None]
    assert (a == 0).any() and ((a > 0) & (a < 1)).any() and (a == 1).any()
    np.testing.assert_array_equal(rgb[(a == 1)[..., 0]], np.tile([255.0, 0, 0], ((a == 1).sum(), 1)))
    flat = 0
    for img, al in zip(rgb, a):
        bg = img[al[..., 0] == 0]
        if (bg == bg[0]).all():  # a flat fill: every pixel is α·red + (1 − α)·that colour
            flat += 1
            assert np.abs(img - (al * [255, 0, 0] + (1 - al) * bg[0])).max() <= 0.5 + 1e-3
    assert flat >= 8  # about half of 48
    # Over other (red) photos the composite is red everywhere: the resampling weights sum to one.
    over_photos = DeviceSampler(photos, out=48, preprocess=SPEC, composite_prob=1.0, jitter=0.0,
                                background_photo_prob=1.0).batch(16, step=0)
    assert (levels(over_photos[0]).round() == [255, 0, 0]).all()
    # A photo without a subject cannot be cut out: its samples are plain crops, as on the CPU path.
    photos[..., 3] = 0
    empty = DeviceSampler(photos, out=48, preprocess=SPEC, composite_prob=1.0, jitter=0.0).batch(8, step=0)
    assert (empty[1] == 0).all() and (levels(empty[0]).round() == [255, 0, 0]).all()


def test_photo_probs_choose_the_photos():
    photos = subject_photos(5, 32)
    for i in range(5):
        photos[i, ..., :3] = (40 * i, 0, 0)  # photo i is red level 40·i everywhere
    probs = np.array([0, 0, 0, 1.0, 0])
    x, _, _, _ = DeviceSampler(photos, out=32, preprocess=SPEC, composite_prob=0.0, jitter=0.0,
                               photo_probs=probs).batch(64, step=0)
    assert (levels(x)[..., 0].round() == 120).all()
    # Composites: the foreground is always photo 3's, whatever the background.
    x, alpha, _, _ = DeviceSampler(photos, out=32, preprocess=SPEC, composite_prob=1.0, jitter=0.0,
                                   photo_probs=probs).batch(64, step=0)
    assert (levels(x)[..., 0].round()[alpha[:, 0].numpy() == 1] == 120).all()
    # Weights in proportion: 1 : 3.
    x, _, _, _ = DeviceSampler(photos, out=32, preprocess=SPEC, composite_prob=0.0, jitter=0.0,
                               photo_probs=np.array([0, 1.0, 0, 3.0, 0])).batch(400, step=1)
    drawn = levels(x)[:, 0, 0, 0].round()
    assert set(drawn) == {40, 120} and 0.68 < (drawn == 120).mean() < 0.82
    with pytest.raises(ValueError, match="photo_probs"):
        DeviceSampler(photos, out=32, preprocess=SPEC, photo_probs=np.zeros(5))


def test_pairs_carry_their_weight_and_coarse_flag():
    photos, pairs = subject_photos(3, 32), subject_photos(2, 32, seed=1)
    photos[..., :3], pairs[0, ..., :3], pairs[1, ..., :3] = (200, 0, 0), (0, 200, 0), (0, 0, 200)
    sampler = DeviceSampler(photos, out=32, preprocess=SPEC, composite_prob=0.0, jitter=0.0, pairs=pairs,
                            pair_coarse=np.array([True, False]), pair_weight=0.5, pair_prob=0.5)
    x, _, weight, coarse = sampler.batch(200, step=0)
    colour = levels(x)[:, 0, 0].round()
    green, blue = colour[:, 1] == 200, colour[:, 2] == 200
    assert 0.35 < (weight == 0.5).float().mean() < 0.65
    np.testing.assert_array_equal((weight == 0.5).numpy(), green | blue)
    np.testing.assert_array_equal(coarse.numpy(), green.astype(np.float32))  # pair 0 is the coarse mask
    only_pairs = DeviceSampler(None, out=32, preprocess=SPEC, pairs=pairs, pair_weight=0.5).batch(8, step=0)
    assert (only_pairs[2] == 0.5).all()


def test_device_samples_match_the_loader_in_distribution():
    """The same photos through DistillDataset (numpy and OpenCV) and DeviceSampler: per-sample alpha coverage,
    share of pure background, share of soft edge, image level and contrast, and how often the subject is
    cut by the frame agree in the mean within four standard errors."""
    from pipelines.training.train import DistillDataset

    photos, n = subject_photos(8, 64), 1024

    class Photos:  # as PackedPhotos: (rgb, alpha) views
        def __len__(self):
            return len(photos)

        def __getitem__(self, i):
            return photos[i, ..., :3], photos[i, ..., 3]

    def stats(x: torch.Tensor, alpha: np.ndarray) -> np.ndarray:
        a, rgb = alpha.reshape(len(alpha), -1), levels(x).reshape(len(alpha), -1) / 255
        edge = alpha[:, 0]
        # A composite's subject lies inside the frame; a crop often cuts through its subject.
        cut = (edge[:, 0].max(1) > 0) | (edge[:, -1].max(1) > 0) | (edge[:, :, 0].max(1) > 0) | (edge[:, :, -1].max(1) > 0)
        return np.stack([a.mean(1), (a == 0).mean(1), ((a > 0) & (a < 1)).mean(1), rgb.mean(1), rgb.std(1), cut], 1)

    data = DistillDataset(Photos(), [], out=48, cache_size=64, preprocess=SPEC, length=n, seed=0,
                          composite_prob=0.5, pair_weight=1.0)
    samples = [data[i] for i in range(n)]
    on_loader = stats(torch.from_numpy(np.stack([s[0] for s in samples])), np.stack([s[1] for s in samples]))
    x, alpha, _, _ = DeviceSampler(photos, out=48, preprocess=SPEC, seed=0).batch(n, step=0)
    on_device = stats(x, alpha.numpy())
    gap = np.abs(on_device.mean(0) - on_loader.mean(0))
    se = np.sqrt(on_device.var(0) / n + on_loader.var(0) / n)
    assert (gap < 4 * se + 1e-3).all(), (on_device.mean(0), on_loader.mean(0), se)


def test_pack_pairs_keeps_the_readable_pairs_with_their_kind(tmp_path, caplog):
    root = tmp_path / "pairs"
    for sub in ("image", "alpha", "mask"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        cv2.imwrite(str(root / "image" / f"{name}.png"), rng.integers(0, 256, (50, 70, 3)).astype(np.uint8))
    cv2.imwrite(str(root / "alpha" / "a.png"), rng.integers(0, 256, (50, 70)).astype(np.uint8))
    cv2.imwrite(str(root / "mask" / "b.png"), (rng.random((50, 70)) > 0.5).astype(np.uint8) * 255)
    (root / "image" / "c.jpg").write_bytes(b"not a JPEG")
    cv2.imwrite(str(root / "mask" / "c.png"), np.zeros((50, 70), np.uint8))
    pairs = find_pairs(root)
    packed = pack_pairs(pairs, 32, SPEC, tmp_path / "packs")
    assert "leaving out" in caplog.text and "c.jpg" in caplog.text
    assert packed.photos.array().shape == (2, 32, 32, 4) and packed.coarse.tolist() == [False, True]
    for i, p in enumerate(pairs[:2]):
        np.testing.assert_array_equal(packed.photos.array()[i, ..., :3], read_rgb(p.image, 32, SPEC))
        np.testing.assert_array_equal(packed.photos.array()[i, ..., 3], read_alpha(p.alpha, 32))
    built = packed.photos.path.stat().st_mtime_ns
    again = pack_pairs(pairs, 32, SPEC, tmp_path / "packs")
    assert again.photos.path == packed.photos.path and packed.photos.path.stat().st_mtime_ns == built  # reused
    other = pack_pairs(pairs[:1], 32, SPEC, tmp_path / "packs")  # other pairs: a new pack replaces the old
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == sorted(
        [other.photos.path.name, other.photos.path.name.replace(".npy", ".coarse.npy")])
    with pytest.raises(ValueError, match="none of the 1 pairs"):
        pack_pairs(pairs[2:], 32, SPEC, tmp_path / "packs")


def test_training_with_samples_on_the_device_writes_a_checkpoint(tmp_path, monkeypatch):
    from test_train import tiny_training_data

    from model import create_model
    from pipelines.training import train

    def no_loader(self, i):
        raise AssertionError("the data loader made a sample although samples are made on the device")

    monkeypatch.setattr(train.DistillDataset, "__getitem__", no_loader)
    photos, pairs = tiny_training_data(tmp_path)
    out = tmp_path / "tiny.safetensors"
    cfg = train.TrainConfig(images=(str(photos),), pairs=str(pairs), out=str(out), cache_dir=str(tmp_path / "cache"),
                            cache_size=64, input_size=64, base_width=4, depth=3, steps=6, batch_size=4,
                            log_every=3, checkpoint_every=3, val_images=0, threads=1, device="cpu",
                            samples_on="device")
    summary = train.run_training(cfg)
    assert summary["steps"] == 6
    rows = list(csv.DictReader(open(out.with_suffix(".train.csv"))))
    assert [int(r["step"]) for r in rows] == [3, 6] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert create_model(str(out)).spec.version.endswith("-s6")
    assert len(list((tmp_path / "cache" / "pairs").glob("pairs-*.coarse.npy"))) == 1  # the readable pairs, packed
    assert not train.TrainConfig(images=("x",), out="o.safetensors").samples_on_device("cpu")
    assert train.TrainConfig(images=("x",), out="o.safetensors").samples_on_device("cuda")
    assert not train.TrainConfig(images=("x",), out="o.safetensors", samples_on="loader").samples_on_device("cuda")
    with pytest.raises(ValueError, match="drop --no-pack-cache"):
        train.TrainConfig(images=("x",), out="o.safetensors", samples_on="device", pack_cache=False)
    with pytest.raises(ValueError, match="samples_on must be one of"):
        train.TrainConfig(images=("x",), out="o.safetensors", samples_on="gpu")
