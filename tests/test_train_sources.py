"""`matting train`'s teacher (one model or an ensemble, with TTA) and its sources (weights, held-out photos per folder)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from catalog import real_photos
from model.config import RuntimeConfig
from model.specs import get_spec
from pipelines.cli import main as cli_main
from pipelines.training.sources import (held_out, parse_source_weights, sampling_probs, shares,
                                        source_labels)
from pipelines.training.teacher import Teacher, combine
from pipelines.training.train import DistillDataset, TrainConfig
from pipelines.training.train_data import list_images, precompute_teacher, read_rgba
from postproc import decode_image


def photo_folders(root, sizes: dict[str, int]):
    """Folders of real photos shrunk to 80 px (names as given, e.g. "people/image"), n each."""
    photos = iter(real_photos(sum(sizes.values())))
    out = {}
    for name, n in sizes.items():
        d = root / name
        d.mkdir(parents=True)
        for _ in range(n):
            stem, data = next(photos)
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            cv2.imwrite(str(d / f"{stem}.png"), cv2.resize(img, (80, 80), interpolation=cv2.INTER_AREA))
        out[name] = d
    return out


# -- the teacher ---------------------------------------------------------------------------------


def test_teacher_versions_name_every_member_and_its_tta():
    one = Teacher.parse("u2netp")
    # One plain member keeps the model's own version: caches made before ensembles stay valid.
    assert one.version == get_spec("u2netp").version
    both = Teacher.parse("u2net, u2netp", tta="flip")
    assert both.version == f"{get_spec('u2net').version}+tta-flip+{get_spec('u2netp').version}+tta-flip"
    assert both.preprocess == get_spec("u2net").preprocess  # the cached photos: the first member's filter
    assert "u2net,u2netp" in both.label and "flip" in both.label
    with pytest.raises(ValueError, match="twice"):
        Teacher.parse("u2netp,u2netp")
    with pytest.raises(ValueError, match="no model"):
        Teacher.parse(" , ")
    with pytest.raises(ValueError, match="u2netp"):  # an unknown name lists the valid ones
        Teacher.parse("u3net")


def test_an_ensemble_teacher_is_the_mean_of_its_members(tmp_path):
    photos = [decode_image(data) for _, data in real_photos(2)]
    kw = dict(runtime="onnxruntime", device="cpu", threads=1)
    a = Teacher.parse("u2netp", **kw).open().mat(photos, 48)
    b = Teacher.parse("unet-small", tta="flip", **kw).open().mat(photos, 48)
    both = Teacher((RuntimeConfig("u2netp", **kw), RuntimeConfig("unet-small", tta="flip", **kw))).open()
    members = both.member_alphas(photos, 48)
    np.testing.assert_allclose(members[0], a, atol=1e-6)
    np.testing.assert_allclose(members[1], b, atol=1e-6)
    mean = both.mat(photos, 48)
    assert mean.shape == (2, 48, 48) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(combine([a, b]), mean)
    assert np.abs(a - b).mean() > 0.01  # two different models: the mean is not either of them


def test_the_teacher_runs_fp32_where_auto_would_pick_int8_or_fp16(monkeypatch):
    from model import runtimes

    made = []
    monkeypatch.setattr(runtimes, "create_runtime", lambda cfg: made.append(cfg) or cfg)
    Teacher.parse("u2netp", device="cpu").open()
    Teacher.parse("u2netp", device="cpu", runtime="onnxruntime").open()
    assert [c.precision for c in made] == ["fp32", "fp32"]


def test_an_ensemble_cache_is_its_own_and_keeps_the_first_members_photo(tmp_path):
    folder = photo_folders(tmp_path, {"p": 3})["p"]
    kw = dict(runtime="onnxruntime", device="cpu", threads=1)
    single = precompute_teacher(list_images([folder]), teacher=Teacher.parse("u2netp", **kw),
                                cache_dir=tmp_path / "c", size=40)
    ensemble = precompute_teacher(list_images([folder]), teacher=Teacher.parse("u2netp,unet-small", **kw),
                                  cache_dir=tmp_path / "c", size=40)
    assert len(single) == len(ensemble) == 3
    for (_, s), (_, e) in zip(single, ensemble):
        assert s.parent != e.parent and s.name == e.name  # same photo bytes, another teacher's folder
        rgb_s, alpha_s = read_rgba(s)
        rgb_e, alpha_e = read_rgba(e)
        np.testing.assert_array_equal(rgb_s, rgb_e)  # both made with u2netp's filter
        assert np.abs(alpha_s.astype(int) - alpha_e.astype(int)).mean() > 1


# -- sources -------------------------------------------------------------------------------------


def test_sources_are_named_below_the_folders_common_parent(tmp_path):
    dirs = photo_folders(tmp_path, {"ccp/image": 1, "clothing": 1})
    labels = source_labels([dirs["ccp/image"], dirs["clothing"]])
    assert sorted(labels.values()) == ["ccp/image", "clothing"]
    assert list(source_labels([dirs["clothing"]]).values()) == ["clothing"]


def test_source_weights_parse_and_refuse_what_they_cannot_mean():
    assert parse_source_weights("a=1.5, b/image=0") == {"a": 1.5, "b/image": 0.0}
    assert parse_source_weights(("a=2",)) == {"a": 2.0}
    for bad in ("a", "a=x", "=2", "a=-1", "a=1,a=2", "a=nan"):
        with pytest.raises(ValueError, match="source-weights"):
            parse_source_weights(bad)


def test_sampling_follows_the_weights_and_names_unknown_sources():
    labels = ["people"] * 2 + ["products"] * 6
    probs = sampling_probs(labels, {"people": 3.0})
    assert shares(labels, probs) == pytest.approx({"people": 0.5, "products": 0.5})
    assert shares(labels, sampling_probs(labels, {})) == pytest.approx({"people": 0.25, "products": 0.75})
    with pytest.raises(ValueError, match="sources: people, products"):
        sampling_probs(labels, {"pets": 2.0})
    with pytest.raises(ValueError, match="no photo to draw"):
        sampling_probs(labels, {"people": 0, "products": 0})


def test_every_source_holds_out_every_tenth_photo_up_to_its_share():
    labels = ["a"] * 35 + ["b"] * 12 + ["c"] * 9
    order = [labels[i] for i in np.random.default_rng(0).permutation(len(labels))]
    held = held_out(order, val_images=6)
    by_source = {s: [i for i in held if order[i] == s] for s in "abc"}
    # a: its 1st, 11th, (21st: over its share of 6/3 = 2); b: its 1st and 11th; c: fewer than 10 photos, none.
    assert [len(by_source[s]) for s in "abc"] == [2, 2, 0]
    for s in "ab":
        positions = [sum(1 for j in range(i) if order[j] == s) for i in by_source[s]]
        assert positions == [0, 10]
    # Which photos a source holds out does not depend on the other folders.
    alone = held_out(["a"] * 35, val_images=2)
    assert alone == [0, 10]
    assert held_out(order, val_images=0) == []


def test_weighted_draws_pick_only_what_the_weights_allow(tmp_path):
    from model.specs import get_spec as spec_of

    cached = [(np.full((8, 8, 3), i, np.uint8), np.full((8, 8), 255, np.uint8)) for i in range(5)]
    probs = np.array([0, 0, 1.0, 0, 0])
    data = DistillDataset(cached, [], out=8, cache_size=8, preprocess=spec_of("unet-small").preprocess, length=50,
                          seed=0, composite_prob=0.0, pair_weight=1.0, photo_probs=probs)
    assert {data._photo(np.random.default_rng(i)) for i in range(200)} == {2}
    with pytest.raises(ValueError, match="photo_probs"):
        DistillDataset(cached, [], out=8, cache_size=8, preprocess=spec_of("unet-small").preprocess, length=5,
                       seed=0, composite_prob=0.0, pair_weight=1.0, photo_probs=probs[:3])


def test_train_config_checks_source_names_against_its_folders(tmp_path):
    dirs = photo_folders(tmp_path, {"people": 1, "products": 1})
    cfg = TrainConfig(images=(str(dirs["people"]), str(dirs["products"])), out=str(tmp_path / "x.safetensors"),
                      source_weights="people=2")
    assert cfg.source_weights == ("people=2",)
    with pytest.raises(ValueError, match="names pets, which is no source of this run; sources: people, products"):
        TrainConfig(images=(str(dirs["people"]), str(dirs["products"])), out=str(tmp_path / "x.safetensors"),
                    source_weights="pets=2")


def test_training_reports_the_held_out_error_per_source(tmp_path):
    dirs = photo_folders(tmp_path, {"people": 10, "products": 10})
    out = tmp_path / "w.safetensors"
    assert cli_main(["train", str(dirs["people"]), str(dirs["products"]), "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--cache-size", "48", "--input-size", "48",
                     "--base-width", "4", "--depth", "3", "--steps", "4", "--batch-size", "2", "--log-every", "2",
                     "--checkpoint-every", "4", "--val-images", "4", "--threads", "1", "--device", "cpu",
                     "--teacher-runtime", "onnxruntime", "--source-weights", "people=3"]) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".train.csv"))))
    last = rows[-1]
    assert set(last) >= {"val_mae", "val_mae[people]", "val_mae[products]"}
    per_source = [float(last["val_mae[people]"]), float(last["val_mae[products]"])]
    assert all(0 < v < 1 for v in per_source)
    # One photo held out per source (the first of each folder of 10), so the overall MAE is their mean.
    assert float(last["val_mae"]) == pytest.approx(np.mean(per_source), abs=2e-5)
    assert rows[0]["val_mae[people]"] == ""  # a log row without a checkpoint
    # A continued run first scores the checkpoint it starts from (step 0), on its own held-out photos.
    again = tmp_path / "again.safetensors"
    assert cli_main(["train", str(dirs["people"]), str(dirs["products"]), "--out", str(again), "--init", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--cache-size", "48", "--input-size", "48",
                     "--base-width", "4", "--depth", "3", "--steps", "1", "--batch-size", "2", "--val-images", "4",
                     "--threads", "1", "--device", "cpu", "--teacher-runtime", "onnxruntime"]) == 0
    first = next(csv.DictReader(open(again.with_suffix(".train.csv"))))
    assert first["step"] == "0" and first["loss"] == ""
    assert float(first["val_mae"]) == pytest.approx(float(last["val_mae"]), abs=1e-5)  # the same weights


def test_precompute_only_packs_the_photos_the_same_flags_train_on(tmp_path):
    dirs = photo_folders(tmp_path, {"people": 10, "products": 3})
    flags = [str(dirs["people"]), str(dirs["products"]), "--cache-dir", str(tmp_path / "cache"), "--cache-size", "40",
             "--val-images", "2", "--threads", "1", "--device", "cpu", "--teacher-runtime", "onnxruntime"]
    assert cli_main(["train", *flags, "--out", str(tmp_path / "unused.safetensors"), "--precompute-only"]) == 0
    packs = list((tmp_path / "cache").rglob("pack-*.npy"))
    assert len(packs) == 1 and np.load(packs[0], mmap_mode="r").shape == (12, 40, 40, 4)  # 13 photos, 1 held out
    built = packs[0].stat().st_mtime_ns
    assert cli_main(["train", *flags, "--out", str(tmp_path / "w.safetensors"), "--steps", "1", "--batch-size", "1",
                     "--base-width", "4", "--depth", "2", "--input-size", "32"]) == 0
    assert packs[0].stat().st_mtime_ns == built  # the training run mapped that pack instead of making its own
