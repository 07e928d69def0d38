"""The seed U-Net, weights that carry their spec, compositing, and `matting train` on tiny data."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from catalog import real_photos
from model import create_model, create_runtime, get_spec
from model.architectures import UNet
from model.config import RuntimeConfig
from model.weights import save_safetensors, sidecar_path
from pipelines.training import synth
from pipelines.cli import main as cli_main
from pipelines.training.train_data import find_pairs, list_images


def test_unet_reference_widths_and_any_input_size():
    net = UNet()  # the reference design
    assert [b[0].out_channels for b in net.encoder.blocks] == [64, 128, 256, 512]
    small = UNet(base_width=4, depth=4).eval()
    for h, w in [(37, 53), (64, 64), (1, 1), (101, 33)]:
        with torch.inference_mode():
            y = small(torch.randn(2, 3, h, w))
        assert tuple(y.shape) == (2, 1, h, w)
        assert torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1


def test_unet_rejects_bad_configuration():
    with pytest.raises(ValueError, match="base_width"):
        UNet(base_width=0)
    with pytest.raises(ValueError, match="norm"):
        UNet(norm="group")


def test_safetensors_file_carries_its_spec_and_loads_by_path(tmp_path):
    base = get_spec("unet-small")
    spec = type(base).from_json_dict({**base.to_json_dict(), "name": "mine", "version": "mine-1"})
    net = UNet(**spec.arch_kwargs).eval()
    path = save_safetensors(net.state_dict(), spec, tmp_path / "mine.safetensors")
    loaded = get_spec(str(path))
    assert (loaded.name, loaded.version, loaded.preprocess) == ("mine", "mine-1", base.preprocess)
    again = create_model(str(path))
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        assert torch.equal(net(x), again(x))
    rt = create_runtime(str(path), runtime="torch", device="cpu")
    assert rt.name == "torch" and rt.spec.version == "mine-1"
    # auto on CPU: onnxruntime, which exports the checkpoint in memory and runs the same model.
    ort_rt = create_runtime(str(path), device="cpu")
    assert ort_rt.name == "onnxruntime" and ort_rt.spec.version == "mine-1"
    # A wider checkpoint under the registered name fails with the fix, not a list of shape mismatches;
    # `matting eval` takes the file alone, with its own spec.
    wide = type(base).from_json_dict({**base.to_json_dict(), "arch_kwargs": {"base_width": 4, "depth": 2}})
    wide_path = save_safetensors(UNet(base_width=4, depth=2).state_dict(), wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="name the file alone"):
        create_model("unet-small", weights=wide_path)
    from pipelines.evaluation.evaluate import parse_model

    choice = parse_model(str(wide_path))
    assert (choice.label, choice.name, choice.weights) == ("wide.safetensors", str(wide_path), None)
    assert create_model(parse_model(str(wide_path)).name).encoder.blocks[0][0].out_channels == 4


def test_onnx_file_with_a_spec_file_beside_it(tmp_path, packaged_weights):
    onnx_path = tmp_path / "my-u2netp.onnx"
    shutil.copyfile(packaged_weights, onnx_path)
    with pytest.raises(ValueError, match="carries no model spec.*my-u2netp.spec.json"):
        get_spec(str(onnx_path))
    spec = get_spec("u2netp").to_json_dict() | {"name": "my-u2netp", "version": "my-1"}
    sidecar_path(onnx_path).write_text(json.dumps(spec))
    imgs = np.stack([cv2.resize(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), (320, 320))
                     for _, b in real_photos(2)])
    ours = create_runtime(str(onnx_path), runtime="onnxruntime", device="cpu")
    assert ours.spec.version == "my-1"
    np.testing.assert_allclose(ours.predict(imgs), create_runtime("u2netp", runtime="onnxruntime",
                                                                  device="cpu").predict(imgs), atol=1e-6)


def test_unet_small_runs_on_onnxruntime_through_an_in_memory_export():
    imgs = (np.random.default_rng(0).random((2, 192, 192, 3)) * 255).astype(np.uint8)
    ort_rt = create_runtime("unet-small", runtime="onnxruntime", device="cpu", precision="fp32")  # not auto: INT8 here
    torch_rt = create_runtime("unet-small", runtime="torch", device="cpu")
    assert ort_rt.name == "onnxruntime"
    np.testing.assert_allclose(ort_rt.predict(imgs), torch_rt.predict(imgs), atol=1e-4)


def test_composite_alpha_is_exact():
    rng = np.random.default_rng(0)
    fg = np.zeros((80, 60, 3), np.uint8)
    fg[..., 0] = 255  # pure red subject
    alpha = np.zeros((80, 60), np.uint8)
    cv2.ellipse(alpha, (30, 40), (20, 30), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (9, 9), 3)  # soft edges: fractional alpha must survive
    bg = np.zeros((64, 64, 3), np.uint8)
    bg[..., 2] = 255  # over pure blue
    image, out_alpha = synth.composite(fg, alpha, bg, rng)
    assert 0 < (out_alpha > 0).mean() < 1 and ((out_alpha > 0) & (out_alpha < 255)).any()
    np.testing.assert_allclose(image[..., 0].astype(int), out_alpha.astype(int), atol=1)
    np.testing.assert_allclose(image[..., 2].astype(int), 255 - out_alpha.astype(int), atol=1)
    assert synth.composite(fg, np.zeros_like(alpha), bg, rng) is None


def test_color_jitter_is_the_four_adjustments_it_names():
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
    assert np.abs(synth.color_jitter(photo, rng, strength=0.0).astype(int) - photo).max() <= 1  # identity
    grey = np.full((8, 8, 3), 100, np.uint8)
    for seed in range(20):  # saturation and hue keep grey grey; brightness and contrast scale it
        out = synth.color_jitter(grey, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == grey.shape
        assert np.ptp(out.reshape(-1, 3), axis=1).max() <= 1 and 74 <= out.mean() <= 126
    # Hue: a pure red turns towards orange or magenta, never changes luma much, at ±8° at most.
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    shifted = [synth.color_jitter(red, np.random.default_rng(s), strength=1.0)[0, 0].astype(int) for s in range(30)]
    assert all(px[0] > 100 and px[1] < 90 and px[2] < 90 for px in shifted)
    assert len({tuple(px) for px in shifted}) > 20  # the four draws vary per call


def test_pairs_need_image_and_alpha_or_mask(tmp_path):
    with pytest.raises(ValueError, match="image/ and alpha/"):
        find_pairs(tmp_path)
    (tmp_path / "image").mkdir()
    (tmp_path / "mask").mkdir()
    cv2.imwrite(str(tmp_path / "image" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "image" / "b.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "mask" / "a.png"), np.zeros((8, 8), np.uint8))
    pairs = find_pairs(tmp_path)
    assert [(p.image.name, p.alpha.name, p.coarse) for p in pairs] == [("a.jpg", "a.png", True)]


def test_image_folders_are_interleaved(tmp_path):
    for d, n in (("x", 3), ("y", 1)):
        (tmp_path / d).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / d / f"{i}.png"), np.zeros((4, 4, 3), np.uint8))
    names = [f"{p.parent.name}/{p.name}" for p in list_images([tmp_path / "x", tmp_path / "y"])]
    assert names == ["x/0.png", "y/0.png", "x/1.png", "x/2.png"]
    with pytest.raises(ValueError, match="does not exist"):
        list_images([tmp_path / "nope"])


def tiny_training_data(root):
    """Six real photos shrunk to 96 px, two synthetic (image, alpha) pairs with exact alphas, one corrupt pair."""
    photos = root / "photos"
    photos.mkdir()
    for name, data in real_photos(6):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        cv2.imwrite(str(photos / f"{name}.png"), cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA))
    rng = np.random.default_rng(1)
    for sub in ("image", "alpha"):
        (root / "pairs" / sub).mkdir(parents=True)
    for i in range(2):
        alpha = np.zeros((96, 96), np.uint8)
        cv2.circle(alpha, (int(rng.integers(30, 66)), int(rng.integers(30, 66))), 25, 255, -1)
        texture = rng.integers(0, 255, (96, 96, 3)).astype(np.uint8)
        bg = np.full((96, 96, 3), 220, np.uint8)
        a = alpha[..., None] / 255.0
        cv2.imwrite(str(root / "pairs" / "image" / f"p{i}.png"), (a * texture + (1 - a) * bg).astype(np.uint8))
        cv2.imwrite(str(root / "pairs" / "alpha" / f"p{i}.png"), alpha)
    # A corrupt pair: its samples fall back to teacher photos instead of stopping the run.
    (root / "pairs" / "image" / "broken.jpg").write_bytes(b"not a JPEG")
    (root / "pairs" / "alpha" / "broken.png").write_bytes(b"not a PNG")
    return photos, root / "pairs"


def test_training_runs_a_few_steps_and_the_loss_goes_down(tmp_path):
    photos, pairs = tiny_training_data(tmp_path)
    out = tmp_path / "tiny.safetensors"
    code = cli_main(["train", str(photos), "--pairs", str(pairs), "--out", str(out), "--cache-dir",
                     str(tmp_path / "cache"), "--cache-size", "64", "--input-size", "64", "--base-width", "4",
                     "--depth", "3", "--steps", "60", "--batch-size", "4", "--lr", "5e-3", "--log-every", "10",
                     "--checkpoint-every", "30", "--val-images", "0", "--threads", "1", "--device", "cpu"])
    assert code == 0  # though a third of the pair samples drawn were the corrupt pair
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 6  # the teacher ran once per photo
    rows = list(csv.DictReader(open(out.with_suffix(".train.csv"))))
    losses = [float(r["loss"]) for r in rows]
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    # Seeded, so the same curve every run: 0.98 → 0.72 here (BCE + L1 + gradient loss).
    assert losses[-1] < 0.85 * losses[0] and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    net = create_model(str(out))
    assert net.spec.version.endswith("-s60") and net.spec.preprocess.input_size == (64, 64)
    # A second run reuses the teacher cache and can start from the first run's weights.
    assert cli_main(["train", str(photos), "--out", str(tmp_path / "again.safetensors"), "--init", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--cache-size", "64", "--input-size", "64",
                     "--base-width", "4", "--depth", "3", "--steps", "2", "--batch-size", "2",
                     "--val-images", "0", "--threads", "1", "--device", "cpu", "--no-pack-cache"]) == 0
    assert len(list((tmp_path / "cache").rglob("pack-*.npy"))) == 1  # the first run's, reused by none here


def test_teacher_cache_follows_the_bytes_not_the_path(tmp_path, monkeypatch):
    from model import runtimes as runtime
    from pipelines.training.train_data import precompute_teacher

    photos, _ = tiny_training_data(tmp_path)
    first = precompute_teacher(list_images([photos]), cache_dir=tmp_path / "cache", size=64,
                               teacher=RuntimeConfig("u2netp", runtime="onnxruntime", device="cpu", threads=1))
    assert len(first) == 6
    copy = shutil.copytree(photos, tmp_path / "copied")  # a re-synced folder: new paths, new mtimes
    (copy / sorted(p.name for p in photos.iterdir())[0]).write_bytes(b"")  # one photo's bytes changed

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran although the cache holds these bytes")

    monkeypatch.setattr(runtime, "create_runtime", no_teacher)
    with pytest.raises(AssertionError, match="the teacher ran"):  # the changed photo is not cached
        precompute_teacher(list_images([copy]), teacher="u2netp", cache_dir=tmp_path / "cache", size=64)
    (copy / sorted(p.name for p in photos.iterdir())[0]).unlink()
    again = precompute_teacher(list_images([copy]), teacher="u2netp", cache_dir=tmp_path / "cache", size=64)
    assert [c for _, c in again] == [c for _, c in first[1:]]


def test_packed_cache_holds_the_same_photos_and_pickles_small(tmp_path):
    import pickle

    from pipelines.training.train_data import CachedPhotos, pack_cache, precompute_teacher

    photos, _ = tiny_training_data(tmp_path)
    teacher = RuntimeConfig("u2netp", runtime="onnxruntime", device="cpu", threads=1)
    files = [c for _, c in precompute_teacher(list_images([photos]), teacher=teacher, cache_dir=tmp_path / "c",
                                              size=64)]
    packed, plain = pack_cache(files, 64), CachedPhotos(files)
    assert len(packed) == len(plain) == 6
    for i in range(6):
        for a, b in zip(packed[i], plain[i]):
            np.testing.assert_array_equal(a, b)
    blob = pickle.dumps(packed)
    assert len(blob) < 1000  # its path, not its pixels: workers map the file themselves
    np.testing.assert_array_equal(pickle.loads(blob)[5][1], plain[5][1])
    built = packed.path.stat().st_mtime_ns
    assert pack_cache(files, 64).path == packed.path and packed.path.stat().st_mtime_ns == built  # reused
    fewer = pack_cache(files[:4], 64)  # another photo set: a new pack replaces the old one
    assert len(fewer) == 4 and [p.name for p in packed.path.parent.glob("pack-*.npy")] == [fewer.path.name]
    with pytest.raises(ValueError, match="not 32²"):
        pack_cache(files, 32)
    assert not list(packed.path.parent.glob(".*partial"))  # a failed pack leaves nothing half-written


def test_lr_decays_by_whichever_budget_runs_out_first():
    from pipelines.training.loss import Trainer, warmup_cosine

    assert warmup_cosine(4, 1000, warmup=10, time_progress=0.9) == 0.5  # warm-up ignores the clock
    assert warmup_cosine(10, 1000, warmup=10) == 1.0
    assert warmup_cosine(1000, 1000, warmup=10) == pytest.approx(0.05)  # steps spent: the floor
    assert warmup_cosine(10, 1000, warmup=10, time_progress=1.0) == pytest.approx(0.05)  # time spent: too
    assert warmup_cosine(10, 1000, warmup=10, time_progress=0.5) == pytest.approx(0.525)
    assert warmup_cosine(505, 1000, warmup=10, time_progress=0.1) == pytest.approx(0.525)  # steps lead
    trainer = Trainer(UNet(base_width=4, depth=2), lr=1e-2, weight_decay=0.0, total_steps=100, device="cpu", amp=False)
    x, a = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32)
    ones, zeros = torch.ones(2), torch.zeros(2)
    lrs = [trainer.step(x, a, ones, zeros, time_progress=t)["lr"] for t in (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                                                           0.0, 0.0, 0.0, 0.5, 1.0)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)  # 10 warm-up steps
    assert lrs[-2:] == [pytest.approx(5.25e-3), pytest.approx(5e-4)]
    assert trainer.opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_train_refuses_bad_arguments(tmp_path, capsys):
    assert cli_main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["train", str(tmp_path), "--out", str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_a_job_accepts_a_checkpoint_path(tmp_path, monkeypatch):
    from pipelines.batch.job import JobConfig

    spec = get_spec("unet-small")
    spec = type(spec).from_json_dict({**spec.to_json_dict(), "name": "mine", "version": "mine-7"})
    save_safetensors(UNet(**spec.arch_kwargs).state_dict(), spec, tmp_path / "mine.safetensors")
    monkeypatch.chdir(tmp_path)
    from model.config import RuntimeConfig

    cfg = JobConfig(source="in", dest="out", inference=RuntimeConfig(model="mine.safetensors"))
    assert cfg.inference.model == str(tmp_path / "mine.safetensors")  # absolute: Ray workers run elsewhere
    assert cfg.fingerprint().model_version == "mine-7"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RuntimeConfig(model="nope.safetensors")
