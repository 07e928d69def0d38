"""Post-processing from the CLI: presets and overrides, the effective parameters in the manifest,
background images, the ZIP bundle of a run, and the warm-up command."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import corrupt_files, real_photos
from pipelines.batch.bundle import write_bundle
from pipelines.cli import build_parser, main
from pipelines.cli.common import params_from_args
from pipelines.manifest import ManifestWriter, read_manifest
from pipelines.batch.stages import render_output
from pipelines.storage import open_location
from postproc import PostprocParams
from postproc.geometry import crop_box


def parse(*argv):
    return params_from_args(build_parser().parse_args(["run", "src", "dst", *argv]))


def test_cli_preset_with_overrides_gives_the_effective_parameters():
    p = parse("--preset", "avatar", "--erode", "0", "--refine", "guided", "--no-decontaminate")
    assert (p.alpha_threshold, p.erode, p.background, p.refine, p.decontaminate) == (6, 0, "#f0f0f0", "guided", False)
    assert parse("--preset", "id-photo").format == "jpeg"
    assert parse() == PostprocParams()  # no option: the defaults, untouched


@pytest.mark.parametrize("argv,message", [
    (["--preset", "id-photo", "--background", "transparent"], "JPEG has no alpha"),
    (["--trimap-fg", "5", "--trimap-bg", "9"], "trimap_bg"),
    (["--background-image", "/nonexistent/bg.jpg"], "no such file"),
])
def test_cli_refuses_bad_post_processing_options_with_one_clear_line(argv, message, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["run", str(tmp_path / "src"), str(tmp_path / "dst"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("matting: error:") and message in err and "Traceback" not in err


def test_cli_refuses_a_background_image_that_is_not_an_image(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "bg.jpg").write_bytes(b"not a picture" * 20)
    argv = ["run", str(tmp_path / "src"), str(tmp_path / "dst"), "--background-image", str(tmp_path / "bg.jpg")]
    assert main(argv) == 2
    assert "not an image" in capsys.readouterr().err


def test_warmup_command_loads_the_kernels(capsys):
    assert main(["warmup"]) == 0
    assert "pymatting kernels ready" in capsys.readouterr().out


# -- the bundle, from stages run as plain functions ----------------------------------------------

def fake_row(key: str, rgb: np.ndarray, error: str = "") -> dict:
    prob = np.zeros((20, 20), np.float32)
    prob[5:15, 5:15] = 1.0
    # The render stage decodes the compressed bytes once more (full-resolution pixels skip the actor).
    data = b"" if error else cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()
    return {"source_key": key, "error": error, "error_reason": "corrupt" if error else "", "data": data,
            "prob": prob, "size_bytes": 10, "sha256": "0" * 64, "width": rgb.shape[1], "height": rgb.shape[0],
            "t_read": 0.0, "t_decode": 0.0, "input_etag": "", "reused_output_key": ""}


def make_run(tmp_path, params: PostprocParams, run_id="run1"):
    dest = open_location(str(tmp_path / "dst"), create=True)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    rows = [render_output(fake_row(k, rgb), dest=dest, params=params, model_name="u2netp", model_version="v")
            for k in ("a/one.jpg", "b/two.jpg")]
    rows.append(render_output(fake_row("bad.jpg", rgb, error="the image data is truncated"), dest=dest,
                              params=params, model_name="u2netp", model_version="v"))
    writer = ManifestWriter(dest, run_id)
    writer.add(pa.Table.from_pylist(rows))
    writer.flush()
    return dest, rows


def test_manifest_records_effective_parameters_and_bbox(tmp_path):
    params = PostprocParams.create(preset="ecommerce", crop=True, crop_margin=2)
    dest, rows = make_run(tmp_path, params)
    table = read_manifest(dest, "run1").to_pylist()
    ok = [r for r in table if r["status"] == "ok"]
    assert len(ok) == 2
    for r in ok:
        eff = json.loads(r["params_json"])
        assert eff["alpha_threshold"] == 10 and eff["feather"] == 1.0 and eff["crop"] and eff["crop_margin"] == 2
        assert r["params_hash"] == hashlib.sha256(r["params_json"].encode()).hexdigest()[:16]
        # prob 5..14 of 20 at 40×60 → subject at x 15..44, y 10..29 (feathering adds a faint fringe).
        assert 12 <= r["bbox_left"] <= 15 and 7 <= r["bbox_top"] <= 10
        out = cv2.imdecode(np.frombuffer(dest.read(r["output_key"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert out.shape[:2] == (min(40, r["bbox_height"] + 4), min(60, r["bbox_width"] + 4))


def test_bundle_holds_every_output_and_the_log(tmp_path):
    dest, rows = make_run(tmp_path, PostprocParams.create(format="webp"))
    res = write_bundle(dest.uri, str(tmp_path / "out" / "run.zip"))
    assert res.outputs == 2 and not res.missing and res.run_id == "run1"
    with zipfile.ZipFile(tmp_path / "out" / "run.zip") as zf:
        names = set(zf.namelist())
        assert names == {"a/one.webp", "b/two.webp", "_log/report.txt", "_log/manifest.csv", "_log/manifest.parquet"}
        assert zf.read("a/one.webp") == dest.read("a/one.webp")
        report = zf.read("_log/report.txt").decode()
        assert "3 inputs, 2 ok, 1 errors" in report and "bad.jpg" in report
        assert zf.read("_log/manifest.csv").decode().count("\n") == 4  # header + one line per input
        assert zf.getinfo("a/one.webp").compress_type == zipfile.ZIP_STORED
    assert not list((tmp_path / "out").glob("*.partial"))


def test_bundle_names_outputs_that_went_missing_and_the_cli_prints_it(tmp_path, capsys):
    dest, _ = make_run(tmp_path, PostprocParams.create())
    (tmp_path / "dst" / "b" / "two.png").unlink()
    assert main(["bundle", dest.uri, str(tmp_path / "run.zip")]) == 0
    assert "1 listed outputs were missing" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "run.zip") as zf:
        assert "b/two.png" in zf.read("_log/report.txt").decode() and "b/two.png" not in zf.namelist()


def test_bundle_of_the_current_view_takes_each_inputs_latest_output(tmp_path):
    make_run(tmp_path, PostprocParams.create(), run_id="run1")
    dest, _ = make_run(tmp_path, PostprocParams.create(format="webp"), run_id="run2")
    res = write_bundle(dest.uri, str(tmp_path / "all.zip"), current=True)
    assert res.outputs == 2
    with zipfile.ZipFile(tmp_path / "all.zip") as zf:
        assert {n for n in zf.namelist() if not n.startswith("_log/")} == {"a/one.webp", "b/two.webp"}


def test_bundle_of_a_destination_without_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["bundle", str(tmp_path / "empty"), str(tmp_path / "x.zip")]) == 2
    assert "no manifests" in capsys.readouterr().err


# -- the whole job from the CLI, on a real local Ray instance ---------------------------------------

@pytest.mark.timeout(600)
def test_cli_run_with_preset_refinement_background_image_crop_and_zip(tmp_path, ray_local):
    src = tmp_path / "src"
    src.mkdir()
    photos = dict(real_photos(2))
    for name, data in {**photos, **{k.replace("/", "_"): v for k, v in corrupt_files().items()}}.items():
        (src / name).write_bytes(data)
    bg = np.zeros((30, 50, 3), np.uint8)
    bg[:] = (10, 120, 240)
    (tmp_path / "bg.png").write_bytes(cv2.imencode(".png", bg[..., ::-1])[1].tobytes())
    dst, zpath = tmp_path / "dst", tmp_path / "run.zip"
    code = main(["run", str(src), str(dst), "--preset", "id-photo", "--refine", "guided", "--decontaminate",
                 "--background-image", str(tmp_path / "bg.png"), "--crop", "--crop-margin", "8", "--max-size", "256",
                 "--zip", str(zpath)])
    assert code == 0
    rows = read_manifest(open_location(str(dst))).to_pylist()
    assert len(rows) == 5 and sum(r["status"] == "ok" for r in rows) == 2
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        eff = json.loads(r["params_json"])
        assert (eff["alpha_threshold"], eff["erode"], eff["format"], eff["refine"]) == (20, 2, "jpeg", "guided")
        assert eff["background_image"] == str(tmp_path / "bg.png") and eff["background"] is None
        assert eff["decontaminate"] is True and eff["max_size"] == 256
        out = cv2.imdecode(np.frombuffer((dst / r["output_key"]).read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        assert r["output_key"].endswith(".jpg") and out.ndim == 3 and out.shape[2] == 3
        assert r["bbox_width"] > 0 and max(out.shape[:2]) <= 256
        bbox = (r["bbox_left"], r["bbox_top"], r["bbox_width"], r["bbox_height"])
        _, _, w, h = crop_box(bbox, 8, r["height"], r["width"])
        s = min(1.0, 256 / max(w, h))
        assert abs(out.shape[1] - w * s) <= 1 and abs(out.shape[0] - h * s) <= 1
    with zipfile.ZipFile(zpath) as zf:
        assert sorted(n for n in zf.namelist() if not n.startswith("_log/")) == sorted(r["output_key"] for r in ok)
        assert pq.read_table(io.BytesIO(zf.read("_log/manifest.parquet"))).num_rows == 5


# -- the contact sheet: `matting report DEST --html FILE` --------------------------------------------

def soft_row(key: str, rgb: np.ndarray, unsure_rows: int) -> dict:
    """A fake inference whose first `unsure_rows` of 20 rows are 0.5: an unsure model there."""
    row = fake_row(key, rgb)
    row["prob"][:unsure_rows] = 0.5
    return row


def test_contact_sheet_least_confident_first_with_links_and_errors(tmp_path, capsys):
    from pipelines.batch.stages import uncertain_fraction

    dest = open_location(str(tmp_path / "dst"), create=True)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    params = PostprocParams.create()
    rows = [render_output(soft_row(k, rgb, n), dest=dest, params=params, model_name="u2netp", model_version="v")
            for k, n in (("a/sure.jpg", 0), ("b/unsure.jpg", 8), ("c/middle.jpg", 3))]
    rows.append(render_output(fake_row("bad.jpg", rgb, error="the image data is truncated"), dest=dest,
                              params=params, model_name="u2netp", model_version="v"))
    writer = ManifestWriter(dest, "run1")
    writer.add(pa.Table.from_pylist(rows))
    writer.flush()
    table = {r["source_key"]: r for r in read_manifest(dest).to_pylist()}
    assert table["b/unsure.jpg"]["uncertain_fraction"] == pytest.approx(8 / 20)
    assert table["a/sure.jpg"]["uncertain_fraction"] == 0.0 == uncertain_fraction(np.eye(4))
    assert table["bad.jpg"]["uncertain_fraction"] is None  # nothing was inferred

    page_file = tmp_path / "sheet" / "run.html"
    assert main(["report", str(tmp_path / "dst"), "--html", str(page_file)]) == 0
    assert f"contact sheet: {page_file}" in capsys.readouterr().out
    page = page_file.read_text()
    links = re.findall(r'<a href="([^"]+)"><img src="([^"]+)"', page)
    assert [href.rsplit("/", 1)[-1] for href, _ in links] == ["unsure.png", "middle.png", "sure.png"]
    for href, src in links:
        assert (page_file.parent / href).resolve() == (tmp_path / "dst" / href.split("dst/", 1)[1]).resolve()
        assert (page_file.parent / href).is_file() and (page_file.parent / src).stat().st_size > 0
    assert "bad.jpg" in page and "corrupt" in page and "the image data is truncated" in page
    assert "strictly between 0.05 and 0.95" in page and "<script" not in page and "http" not in page


def test_contact_sheet_reads_a_manifest_from_before_the_confidence_column(tmp_path):
    dest, _ = make_run(tmp_path, PostprocParams.create())
    part = next((tmp_path / "dst" / "_manifests" / "run1").glob("part-*.parquet"))
    pq.write_table(pq.read_table(part).drop_columns(["uncertain_fraction"]), part)  # as an older version wrote it
    assert main(["report", str(tmp_path / "dst"), "--html", str(tmp_path / "old.html")]) == 0
    page = (tmp_path / "old.html").read_text()
    assert page.count("unsure n/a") == 2 and len(re.findall(r"<img ", page)) == 2


def test_a_large_run_shows_the_least_confident_then_a_sample():
    from pipelines.batch.contact_sheet import LARGE_RUN, LEAST_CONFIDENT, SAMPLE, choose

    rows = [{"source_key": f"k{i:04d}", "uncertain_fraction": (i % 97) / 97} for i in range(600)]
    rows += [{"source_key": f"old{i}", "uncertain_fraction": None} for i in range(40)]
    shown, note = choose(rows)
    assert len(shown) == LARGE_RUN == LEAST_CONFIDENT + SAMPLE
    least = [r for r, why in shown if why == "least confident"]
    assert len(least) == LEAST_CONFIDENT
    assert min(r["uncertain_fraction"] for r in least) >= max(
        r["uncertain_fraction"] or 0 for r in rows if r not in least)
    sample = [r for r, why in shown if why == "sample"]
    assert len({r["source_key"] for r in sample}) == SAMPLE and not set(map(id, sample)) & set(map(id, least))
    assert choose(rows)[0] == shown  # a fixed seed: the same page for the same run
    assert "50 least confident" in note and "random sample of 150 of the other 590" in note
    small, note = choose(rows[:5])
    assert [r["source_key"] for r, _ in small] == ["k0004", "k0003", "k0002", "k0001", "k0000"]
