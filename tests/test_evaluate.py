"""`matting eval` on small eval sets made here from the bundled photos (never ../shared/eval)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.evaluation import metrics
from model.runtimes import create_runtime
from pipelines.cli import main
from pipelines.evaluation.evaluate import find_eval_set, parse_model, parse_setting
from postproc import PostprocParams, decode_image, model_input
from postproc.render import refine_alpha

SAMPLES = Path(__file__).resolve().parent.parent / "pipelines" / "samples"


def make_set(root: Path, *, binary: bool = False, trimaps: tuple[str, ...] = ("trimap1", "trimap2"),
             n: int = 3) -> Path:
    """Photos as .jpg, hand-drawn soft ellipses as .png ground truth (other extension, same stem), trimaps."""
    for d in ("image", "alpha", *trimaps):
        (root / d).mkdir(parents=True)
    for i, p in enumerate(sorted(SAMPLES.glob("*.jpg"))[:n]):
        img = cv2.resize(cv2.imread(str(p)), (200, 150), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "image" / f"s{i}.jpg"), img)
        alpha = np.zeros((150, 200), np.uint8)
        cv2.ellipse(alpha, (100, 80), (50 + 10 * i, 40), 0, 0, 360, 255, -1)
        if not binary:
            alpha = cv2.GaussianBlur(alpha, (0, 0), 3)
        cv2.imwrite(str(root / "alpha" / f"s{i}.png"), alpha)
        for k, t in enumerate(trimaps):
            band = 3 + 4 * k
            fg = cv2.erode((alpha > 250).astype(np.uint8), np.ones((band, band), np.uint8))
            maybe = cv2.dilate((alpha > 5).astype(np.uint8), np.ones((band, band), np.uint8))
            tri = np.where(fg > 0, 255, np.where(maybe > 0, 128, 0)).astype(np.uint8)
            cv2.imwrite(str(root / t / f"s{i}.png"), tri)
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_eval_compares_settings_with_trimaps_and_writes_csv(tmp_path, capsys):
    data = make_set(tmp_path / "set")
    out = tmp_path / "scores.csv"
    code = main(["eval", "--data", str(data), "--runtime", "onnxruntime", "--device", "cpu", "--batch-size", "2",
                 "--setting", "plain", "--setting", "tight:alpha_threshold=200,erode=4",
                 "--setting", "gf:refine=guided,guided_radius=4", "--csv", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "trimaps from trimap1/" in printed  # the first trimap*/ folder when there is no trimap/
    assert "SAD@trimap1" in printed and "images/s" in printed
    rows = read_csv(out)
    images = [r for r in rows if r["row"] == "image"]
    means = {r["setting"]: r for r in rows if r["row"] == "mean"}
    assert len(images) == 9 and set(means) == {"plain", "tight", "gf"}
    assert all(r["status"] == "ok" for r in images)
    assert float(means["plain"]["images_per_s"]) > 0
    # Different settings give different mattes, hence different scores.
    assert means["plain"]["sad"] != means["tight"]["sad"] != means["gf"]["sad"]

    # Eval scores what the job produces: the same runtime, model_input, refine_alpha and metrics by hand.
    rt = create_runtime("u2netp", runtime="onnxruntime", device="cpu")
    img = decode_image((data / "image" / "s1.jpg").read_bytes())
    prob = rt.predict(model_input(img, rt.spec.preprocess)[None])[0]
    matte = refine_alpha(prob, img.height, img.width, PostprocParams(alpha_threshold=200, erode=4),
                         upsample=rt.spec.preprocess.upsample)
    gt = cv2.imread(str(data / "alpha" / "s1.png"), cv2.IMREAD_GRAYSCALE)
    tri = cv2.imread(str(data / "trimap1" / "s1.png"), cv2.IMREAD_GRAYSCALE)
    row = next(r for r in images if r["setting"] == "tight" and r["image"] == "s1")
    assert float(row["sad"]) == pytest.approx(metrics.sad(matte, gt), rel=1e-6)
    assert float(row["unk_conn"]) == pytest.approx(metrics.connectivity_error(matte, gt, tri == 128), rel=1e-6)
    assert float(row["grad"]) == pytest.approx(metrics.gradient_error(matte, gt), rel=1e-6)


def test_binary_masks_get_mae_and_maxf(tmp_path, capsys):
    data = make_set(tmp_path / "set", binary=True, trimaps=())
    out = tmp_path / "scores.csv"
    assert main(["eval", "--data", str(data), "--runtime", "onnxruntime", "--device", "cpu",
                 "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no trimaps" in printed and "maxF(set)" in printed and "@" not in printed.split("\n")[1]
    mean = next(r for r in read_csv(out) if r["row"] == "mean")
    assert 0 < float(mean["maxf_set"]) <= 1 and 0 <= float(mean["mae"]) < 1


def test_an_unreadable_image_is_a_row_with_its_reason(tmp_path, capsys):
    data = make_set(tmp_path / "set", trimaps=())
    (data / "image" / "s2.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cv2.imwrite(str(data / "alpha" / "s1.png"), np.zeros((10, 10), np.uint8))  # wrong size
    out = tmp_path / "scores.csv"
    assert main(["eval", "--data", str(data), "--device", "cpu", "--csv", str(out)]) == 0
    rows = {r["image"]: r for r in read_csv(out) if r["row"] == "image"}
    assert rows["s0"]["status"] == "ok"
    assert rows["s1"]["status"] == "error" and "alpha is 10×10" in rows["s1"]["error"]
    assert rows["s2"]["status"] == "error" and "not an image" in rows["s2"]["error"]
    assert "(2 err)" in capsys.readouterr().out


def test_eval_set_errors_name_the_fix(tmp_path, capsys):
    data = make_set(tmp_path / "set", trimaps=("trimap",))
    assert find_eval_set(data).trimap_dir == "trimap"
    (data / "image" / "extra.jpg").write_bytes((data / "image" / "s0.jpg").read_bytes())
    with pytest.raises(ValueError, match="no partner.*extra"):
        find_eval_set(data)
    with pytest.raises(FileNotFoundError, match="no image/ folder"):
        find_eval_set(tmp_path)
    (data / "image" / "extra.jpg").unlink()
    assert main(["eval", "--data", str(data), "--trimap-dir", "trimap9"]) == 2
    assert "trimap9" in capsys.readouterr().err


def test_settings_and_models_are_parsed_strictly():
    base = PostprocParams(erode=1)
    s = parse_setting("tight:alpha_threshold=10, erode=2", base)
    assert (s.name, s.params.alpha_threshold, s.params.erode) == ("tight", 10, 2)
    assert parse_setting("default", base).params == base
    assert parse_setting("feather=1.5", base).params.feather == 1.5
    s = parse_setting("cf:refine=trimap,trimap_erode=5,guided_eps=0.01", base)
    assert (s.params.refine, s.params.trimap_erode, s.params.guided_eps) == ("trimap", 5, 0.01)
    with pytest.raises(ValueError, match="refine must be one of"):
        parse_setting("x:refine=magic", base)
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_setting("x:decontaminate=1", base)
    with pytest.raises(ValueError, match="alpha_threshold, erode, feather"):
        parse_setting("x:background=white", base)
    with pytest.raises(ValueError, match="within 0–255"):
        parse_setting("x:alpha_threshold=300", base)
    assert parse_model("u2netp").weights is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_model("w.onnx")
    with pytest.raises(ValueError, match="valid models"):
        parse_model("u3net")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_model("u2netp=/nonexistent/w.onnx")


def test_tta_side_by_side_with_a_report_page(tmp_path, capsys):
    """--tta none,flip scores both modes from one inference per batch; flip is the shared model/tta.py average;
    --report writes a page with every picture it names, worst image first."""
    from model import tta

    data = make_set(tmp_path / "set", trimaps=())
    out, report = tmp_path / "scores.csv", tmp_path / "report"
    assert main(["eval", "--data", str(data), "--runtime", "onnxruntime", "--device", "cpu", "--batch-size", "2",
                 "--tta", "none,flip", "--setting", "plain", "--setting", "tight:alpha_threshold=200",
                 "--csv", str(out), "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "tta" in printed.split("\n")[1] and f"report: {report / 'index.html'}" in printed
    rows = read_csv(out)
    means = {(r["tta"], r["setting"]): r for r in rows if r["row"] == "mean"}
    assert set(means) == {(m, s) for m in ("none", "flip") for s in ("plain", "tight")}
    assert means[("none", "plain")]["sad"] != means[("flip", "plain")]["sad"]
    # The flip row is what the job and Serve compute: model/tta.predict, then the same refine_alpha and metrics.
    rt = create_runtime("u2netp", runtime="onnxruntime", device="cpu")
    img = decode_image((data / "image" / "s0.jpg").read_bytes())
    prob = tta.predict(rt, model_input(img, rt.spec.preprocess)[None], "flip")[0]
    mirrored = rt.predict(model_input(img, rt.spec.preprocess)[None, :, ::-1].copy())[0, :, ::-1]
    np.testing.assert_allclose(prob, (rt.predict(model_input(img, rt.spec.preprocess)[None])[0] + mirrored) / 2,
                               atol=1e-5)
    gt = cv2.imread(str(data / "alpha" / "s0.png"), cv2.IMREAD_GRAYSCALE)
    row = next(r for r in rows if r["row"] == "image" and r["tta"] == "flip" and r["setting"] == "plain"
               and r["image"] == "s0")
    matte = refine_alpha(prob, img.height, img.width, PostprocParams(), upsample=rt.spec.preprocess.upsample)
    assert float(row["sad"]) == pytest.approx(metrics.sad(matte, gt), rel=1e-5)

    page = (report / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 3 * (2 + 4 * 2)  # per image: photo, ground truth, cut-out + error map per row
    assert all((report / s).is_file() and (report / s).stat().st_size > 0 for s in srcs)
    assert "http" not in page.replace("http-equiv", "") and "<script" not in page
    assert '<table class="metrics">' in page and page.index("<table") < page.index('<section class="image"')
    per_image = {}
    for r in rows:
        if r["row"] == "image":
            per_image.setdefault(r["image"], []).append(float(r["sad"]))
    worst_first = sorted(per_image, key=lambda s: -np.mean(per_image[s]))
    assert re.findall(r'<section class="image" id="([^"]+)"', page) == worst_first


def test_tta_modes_are_checked(tmp_path, capsys):
    data = make_set(tmp_path / "set", trimaps=(), n=1)
    assert main(["eval", "--data", str(data), "--tta", "none,mirror"]) == 2
    assert "tta must be one of none, flip" in capsys.readouterr().err


def test_upsample_entries_share_one_inference_and_score_their_own_filter(tmp_path, capsys, monkeypatch):
    """'--model u2netp:upsample=F' entries differ after inference only: the model runs once for all,
    and each row is the matte made with its own filter (what the job renders with that spec)."""
    import model.runtimes

    data = make_set(tmp_path / "set", n=2)
    made = []
    real = model.runtimes.create_runtime
    monkeypatch.setattr(model.runtimes, "create_runtime", lambda cfg, **kw: made.append(cfg) or real(cfg, **kw))
    out = tmp_path / "scores.csv"
    code = main(["eval", "--data", str(data), "--runtime", "onnxruntime", "--device", "cpu",
                 "--model", "u2netp:upsample=linear", "--model", "u2netp:upsample=pil_lanczos_u8", "--csv", str(out)])
    assert code == 0, capsys.readouterr().out
    assert len(made) == 1
    rows = {(r["model"], r["image"]): r for r in read_csv(out) if r["row"] == "image"}
    rt = real("u2netp", runtime="onnxruntime", device="cpu")
    img = decode_image((data / "image" / "s1.jpg").read_bytes())
    prob = rt.predict(model_input(img, rt.spec.preprocess)[None])[0]
    gt = cv2.imread(str(data / "alpha" / "s1.png"), cv2.IMREAD_GRAYSCALE)
    sads = {}
    for f in ("linear", "pil_lanczos_u8"):
        sads[f] = metrics.sad(refine_alpha(prob, img.height, img.width, PostprocParams(), upsample=f), gt)
        assert float(rows[(f"u2netp:upsample={f}", "s1")]["sad"]) == pytest.approx(sads[f], rel=1e-6)
    assert sads["linear"] != sads["pil_lanczos_u8"]
