"""INT8 models (model/quantize.py): CPU detection, calibration photos, the checksummed cache.

The cache tests quantize unet-small (the smallest registered model: ~5 s here) on a tiny
calibration folder of real photos; the quality of each shipped recipe is the INT8 case of the
shared model tester (tests/test_model.py) and bench/int8.py's table.
"""

from __future__ import annotations

import json

import dataclasses
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from catalog import real_photos
from model import quantize as q
from model.specs import get_spec


@pytest.fixture
def photo_dir(tmp_path):
    """A calibration folder of 4 real photos in two subfolders, plus a mask folder to be skipped."""
    root = tmp_path / "train"
    for i, (name, data) in enumerate(real_photos(4)):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}_{name}").write_bytes(data)
    (root / "b" / "mask").mkdir()
    (root / "b" / "mask" / "m.png").write_bytes(b"not a photo")
    return root


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """unet-small's recipe on 2 photos, into a private weights cache."""
    monkeypatch.setenv("MATTING_WEIGHTS_DIR", str(tmp_path / "weights"))
    spec = get_spec("unet-small")
    return spec, dataclasses.replace(q.recipe_for(spec), photos=2)


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512_vnni", True),
    ("fpu sse avx2 avx_vnni", True),
    ("fpu avx512f amx_tile amx_int8", True),
    ("fpu sse avx2 fma", False),
])
def test_fast_int8_is_read_from_the_cpu_flags(tmp_path, flags, expected, monkeypatch):
    monkeypatch.delenv(q.CPU_INT8_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert q.cpu_has_fast_int8(info) is expected


def test_fast_int8_is_false_without_cpu_information(tmp_path):
    assert q.cpu_has_fast_int8(tmp_path / "missing") is False
    (tmp_path / "empty").write_text("")
    assert q.cpu_has_fast_int8(tmp_path / "empty") is False


def test_fast_int8_on_this_machine_agrees_with_its_flags(monkeypatch):
    monkeypatch.setenv(q.CPU_INT8_ENV, "0")  # the opt-out (and what tests/conftest.py sets)
    assert q.cpu_has_fast_int8() is False
    monkeypatch.delenv(q.CPU_INT8_ENV)
    if not os.path.exists("/proc/cpuinfo"):
        assert q.cpu_has_fast_int8() is False
        return
    text = open("/proc/cpuinfo").read()
    assert q.cpu_has_fast_int8() is any(f in text.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def test_calibration_photos_are_spread_deterministic_and_never_eval(photo_dir, tmp_path):
    picked = q.calibration_photos(3, photo_dir)
    assert len(picked) == 3 and picked == q.calibration_photos(3, photo_dir)
    assert {p.parent.name for p in picked} == {"a", "b"}  # round-robin over subfolders
    assert all("mask" not in p.parts for p in q.calibration_photos(10, photo_dir))
    assert len(q.calibration_photos(10, photo_dir)) == 4  # all there is
    evalset = tmp_path / "shared" / "eval" / "ecssd60"
    evalset.mkdir(parents=True)
    with pytest.raises(ValueError, match="never on eval"):
        q.calibration_photos(2, evalset)
    with pytest.raises(FileNotFoundError, match="--calibration"):
        q.calibration_photos(2, tmp_path / "nope")


def test_calibration_input_is_the_inference_input(photo_dir):
    """The calibrator sees exactly what the runtime feeds: the spec's resize and normalisation."""
    from model.preprocess import normalize_batch
    from postproc import decode_image, model_input

    spec = get_spec("unet-small")
    paths = q.calibration_photos(2, photo_dir)
    want = normalize_batch(np.stack([model_input(decode_image(p.read_bytes()), spec.preprocess)
                                     for p in paths]), spec.preprocess)
    np.testing.assert_array_equal(q.preprocess_photos(paths, spec), want)


def test_recipe_is_checked():
    with pytest.raises(ValueError, match="method"):
        q.Recipe(method="kl")
    with pytest.raises(ValueError, match="photos"):
        q.Recipe(photos=0)


def test_int8_file_is_built_once_reused_and_rebuilt_when_corrupted(tiny, photo_dir, monkeypatch):
    spec, recipe = tiny
    path = q.int8_model_path(spec, recipe=recipe, calibration_dir=photo_dir)
    assert path.parent == q.int8_dir() and path.is_file()
    assert path.with_suffix(".sha256").read_text().split()[0] == q.sha256_of(path)
    m = onnx.load(str(path))
    assert any(n.op_type == "QuantizeLinear" for n in m.graph.node)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["precision"] == "int8" and json.loads(meta["spec"])["name"] == "unet-small"
    # The file carries its spec, so `matting eval --model FILE` and get_spec(path) read it.
    assert get_spec(str(path)).name == "unet-small"

    built = []
    real = q.quantize
    monkeypatch.setattr(q, "quantize", lambda *a, **k: built.append(1) or real(*a, **k))
    assert q.int8_model_path(spec, recipe=recipe, calibration_dir=photo_dir) == path
    assert built == []  # a cache hit builds nothing

    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # a torn or corrupted file
    assert q.int8_model_path(spec, recipe=recipe, calibration_dir=photo_dir) == path
    assert built == [1] and q.sha256_of(path) == path.with_suffix(".sha256").read_text().split()[0]
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # whole again
    assert not list(path.parent.glob(".*partial"))


def test_cache_key_follows_recipe_source_and_onnxruntime(tiny, photo_dir, monkeypatch):
    spec, recipe = tiny
    source = q.fp32_source(spec)
    key = q.cache_key(spec, source, recipe, photo_dir)
    assert key == q.cache_key(spec, source, recipe, photo_dir)
    assert key != q.cache_key(spec, source, dataclasses.replace(recipe, method="percentile"), photo_dir)
    assert key != q.cache_key(spec, source, dataclasses.replace(recipe, photos=3), photo_dir)
    assert key != q.cache_key(spec, source, recipe, None)  # the default folder
    assert key != q.cache_key(spec, q.fp32_source(get_spec("unet-base")), recipe, photo_dir)
    monkeypatch.setattr(q, "RECIPE_VERSION", q.RECIPE_VERSION + 1)
    assert key != q.cache_key(spec, source, recipe, photo_dir)
    monkeypatch.setattr(q, "RECIPE_VERSION", q.RECIPE_VERSION - 1)
    monkeypatch.setattr(ort, "__version__", "0.0.1")
    assert key != q.cache_key(spec, source, recipe, photo_dir)


def test_a_built_file_is_found_without_the_calibration_photos(tiny, photo_dir, monkeypatch):
    """Workers read what set-up built: a cache hit needs neither the photos nor a build."""
    spec, recipe = tiny
    monkeypatch.setenv(q.CALIBRATION_ENV, str(photo_dir))
    path = q.int8_model_path(spec, recipe=recipe)
    monkeypatch.setenv(q.CALIBRATION_ENV, str(photo_dir.parent / "gone"))
    monkeypatch.setattr(q, "quantize", lambda *a, **k: pytest.fail("rebuilt on a cache hit"))
    assert q.int8_model_path(spec, recipe=recipe) == path


def test_cli_builds_the_int8_file(tiny, photo_dir, monkeypatch, capsys):
    from pipelines.cli import main

    spec, recipe = tiny
    monkeypatch.setitem(q.RECIPES, "unet-small", recipe)
    assert main(["weights", "int8", "unet-small", "--calibration", str(photo_dir)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(".onnx") and os.path.isfile(out)
    assert main(["weights", "int8", "unet-small", "--calibration", str(photo_dir / "nope")]) == 2


def test_head_nodes_are_the_one_channel_logits_and_what_carries_them():
    """U²-Netp's head: its six side-output Convs and the fuse Conv (1 output channel each), the
    Resizes that upsample those logits, their Concat and the Sigmoids; nothing of the decoder."""
    spec = get_spec("u2netp")
    model = q.fp32_onnx(spec, q.fp32_source(spec))
    nodes = {n.name: n for n in model.graph.node}
    head = q.head_nodes(model)
    ops = [nodes[n].op_type for n in head]
    assert ops.count("Conv") == 7 and ops.count("Resize") == 5 and ops.count("Concat") == 1
    assert nodes[head[ops.index("Concat")]].output[0] in nodes[head[ops.index("Conv", ops.index("Concat"))]].input  # fuse
    produced = {o for n in head for o in nodes[n].output}
    assert model.graph.output[0].name in produced  # the alpha itself comes out of the head
    assert set(ops) == {"Conv", "Resize", "Concat", "Sigmoid"}
    # The recipe keeps them FP32 after the large-valued Convs, without repeats.
    keep = q.convs_to_keep(model, q.Recipe(keep_fp32_above=16.0, keep_fp32_head=True))
    assert keep[:4] == q.convs_to_keep(model, q.Recipe(keep_fp32_above=16.0)) and keep[4:] == head
    # Our U-Net's head is its 1×1 Conv and the Sigmoid.
    unet = get_spec("unet-small")
    assert [n.split("/")[-1] for n in q.head_nodes(q.fp32_onnx(unet, q.fp32_source(unet)))] == ["Conv", "Sigmoid"]


def test_one_pass_calibration_matches_onnxruntimes_calibrators(photo_dir, tmp_path):
    """calibrate() folds photos in one at a time; its ranges must be onnxruntime's: MinMax exactly,
    percentile within one histogram bin of onnxruntime's own collector fed the same photos."""
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    spec = get_spec("unet-small")
    pre = q.prepare_for_quantization(q.fp32_onnx(spec, q.fp32_source(spec)), tmp_path)
    x = q.preprocess_photos(q.calibration_photos(3, photo_dir), spec)
    mm, pc = q.Calibration("minmax"), q.Calibration("percentile", 99.99)
    ranges = q.calibrate(pre, x, [mm, pc], tmp_path)

    ref = HistogramCalibrater(pre, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                              augmented_model_path=str(tmp_path / "ref.onnx"))
    ref.augment_graph()
    ref.create_inference_session()
    session = ref.infer_session
    names, feed = [o.name for o in session.get_outputs()], session.get_inputs()[0].name
    outs = [dict(zip(names, session.run(None, {feed: x[i:i + 1]}))) for i in range(len(x))]
    collector = HistogramCollector("percentile", True, 2048, 128, 99.99, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        for o in outs:
            collector.collect({n: [v] for n, v in o.items() if n in ref.tensors_to_calibrate})
        want = collector.compute_collection_result()
    assert set(ranges[mm].keys()) == set(ref.tensors_to_calibrate) == set(want)
    for n in want:
        lo, hi = ranges[mm][n].range_value
        assert lo == min(o[n].min() for o in outs) and hi == max(o[n].max() for o in outs)
        edges = collector.histogram_dict[n][1]
        bin_width = float(edges[1] - edges[0])
        got = ranges[pc][n].range_value
        assert abs(float(got[1]) - float(want[n][1])) <= bin_width * 1.01 + 1e-7, n
        assert abs(float(got[0]) - float(want[n][0])) <= bin_width * 1.01 + 1e-7, n
        assert float(got[0]) >= lo and float(got[1]) <= hi  # clipped to what the photos produced


def test_auto_finds_int8_only_where_its_file_is_built(photo_dir, monkeypatch, tmp_path):
    """`auto` asks int8_built before picking INT8: a job never starts by calibrating, photos or not."""
    monkeypatch.setattr(q, "int8_dir", lambda: tmp_path / "int8")  # a private, empty INT8 cache
    monkeypatch.setenv(q.CALIBRATION_ENV, str(photo_dir))  # photos to build from do not count
    u2, small = get_spec("u2netp"), get_spec("unet-small")
    assert q.int8_built(u2) is False and q.int8_built(small) is False
    # Built (here: each key over its weights file, a stand-in INT8 file, which is all the lookup reads).
    q.int8_dir().mkdir(parents=True)
    for spec in (u2, small):  # an ONNX file and a torch checkpoint are keyed alike, by their own file
        key = q.cache_key(spec, q.fp32_source(spec), q.recipe_for(spec))
        (q.int8_dir() / f"{spec.name}-int8-{key}.onnx").write_bytes(b"x")
        (q.int8_dir() / f"{spec.name}-int8-{key}.sha256").write_text("x\n")
    assert q.int8_built(u2) is True and q.int8_built("unet-small") is True
    assert q.int8_built(u2, tmp_path / "missing.onnx") is False
