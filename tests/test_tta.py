"""Test-time augmentation (model/tta.py) and how the batch job carries it (Serve: test_serve.py;
eval: test_evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from catalog import real_photos
from model import tta
from model.config import RuntimeConfig
from model.preprocess import probabilities_to_ship
from pipelines.cli import build_parser
from pipelines.cli.run import job_config
from pipelines.batch.job import JobConfig
from pipelines.batch.stages import Predictor
from model.specs import get_spec
from postproc import decode_image, model_input

U2NETP_PRE = get_spec("u2netp").preprocess


@pytest.fixture(scope="module")
def photos():
    return np.stack([model_input(decode_image(data), U2NETP_PRE) for _, data in real_photos(3)])


def test_flip_is_the_mean_of_the_photo_and_its_mirror_image(u2netp_runtime, photos):
    rt = u2netp_runtime
    plain = rt.predict(photos)
    mirrored = rt.predict(np.ascontiguousarray(photos[:, :, ::-1]))[:, :, ::-1]
    flip = tta.predict(rt, photos, "flip")
    np.testing.assert_allclose(flip, (plain + mirrored) / 2, atol=1e-5)
    assert flip.dtype == np.float32 and flip.shape == plain.shape and 0 <= flip.min() and flip.max() <= 1
    assert np.abs(flip - plain).max() > 0.05  # the mirror image is a different view, not a copy
    # Flip TTA does not care which way the photo faces: its answer on the mirror image is its answer, mirrored.
    np.testing.assert_allclose(tta.predict(rt, np.ascontiguousarray(photos[:, :, ::-1]), "flip")[:, :, ::-1],
                               flip, atol=1e-5)
    # Both modes from one call (as eval compares them) are the modes asked for one at a time.
    both = tta.predict_modes(rt, photos, ["none", "flip"])
    np.testing.assert_allclose(both["none"], plain, atol=1e-6)
    np.testing.assert_allclose(both["flip"], flip, atol=1e-6)
    assert np.array_equal(tta.predict(rt, photos, "none"), plain)


def test_flip_runs_the_batch_and_its_mirror_in_one_call(u2netp_runtime, photos):
    calls = []

    class Counting:
        def predict(self, images):
            calls.append(images.shape)
            return u2netp_runtime.predict(images)

    tta.predict(Counting(), photos, "flip")
    tta.predict_modes(Counting(), photos, ["none", "flip"])
    assert calls == [(6, 320, 320, 3), (6, 320, 320, 3)]


def test_modes_are_checked_and_recorded_in_the_model_version(tmp_path, u2netp_runtime, photos):
    with pytest.raises(ValueError, match="tta must be one of none, flip"):
        tta.predict(u2netp_runtime, photos, "rotate")
    with pytest.raises(ValueError, match="tta must be one of"):
        RuntimeConfig(tta="rotate")
    paths = {"source": str(tmp_path / "src"), "dest": str(tmp_path / "out")}
    plain = JobConfig(**paths)
    flip = JobConfig(**paths, inference=RuntimeConfig(tta="flip"))
    assert plain.model_version == "u2netp-rembg-0.1.3" and flip.model_version == "u2netp-rembg-0.1.3+tta-flip"
    assert plain.fingerprint() != flip.fingerprint()  # --incremental redoes inputs when TTA changes
    args = build_parser().parse_args(["run", str(tmp_path / "src"), str(tmp_path / "out"), "--tta", "flip"])
    assert job_config(args, args.source, args.dest).inference.tta == "flip"


def test_inference_stage_applies_tta(photos, u2netp_runtime):
    n = len(photos)
    batch = {"source_key": np.array([f"k{i}" for i in range(n)]), "error": np.array([""] * n),
             "reused_output_key": np.array([""] * n), "model_input": photos}
    out = Predictor(RuntimeConfig("u2netp", runtime="onnxruntime", device="cpu", tta="flip"))(batch)
    # What leaves the actor: the TTA probabilities as the spec's upsample filter ships them.
    expected = probabilities_to_ship(tta.predict(u2netp_runtime, photos, "flip"), u2netp_runtime.spec.preprocess.upsample)
    np.testing.assert_array_equal(out["prob"], expected)


@pytest.mark.timeout(600)
def test_job_with_flip_writes_the_tta_matte_and_records_it(tmp_path, ray_local, u2netp_runtime):
    """`matting run --tta flip` end to end on a local Ray instance: the mask it writes is the one the shared
    TTA function gives, the manifest says so, and an --incremental rerun without TTA redoes the input."""
    import cv2

    from pipelines.cli import main
    from pipelines.manifest import read_manifest
    from pipelines.storage import open_location
    from postproc import PostprocParams
    from postproc.render import refine_alpha

    name, data = real_photos(1)[0]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / name).write_bytes(data)
    dst = tmp_path / "dst"
    assert main(["run", str(tmp_path / "src"), str(dst), "--tta", "flip", "--format", "mask", "--incremental"]) == 0
    row = read_manifest(open_location(str(dst))).to_pylist()[0]
    assert row["status"] == "ok" and row["model_version"] == "u2netp-rembg-0.1.3+tta-flip"
    img = decode_image(data)
    prob = tta.predict(u2netp_runtime, model_input(img, U2NETP_PRE)[None], "flip")[0].astype(np.float16)
    expected = refine_alpha(prob.astype(np.float32), img.height, img.width, PostprocParams(format="mask"),
                            upsample=U2NETP_PRE.upsample)
    written = cv2.imread(str(dst / row["output_key"]), cv2.IMREAD_UNCHANGED)
    assert np.abs(written.astype(int) - expected).max() <= 1
    assert main(["run", str(tmp_path / "src"), str(dst), "--format", "mask", "--incremental"]) == 0
    assert read_manifest(open_location(str(dst))).to_pylist()[0]["model_version"] == "u2netp-rembg-0.1.3"
