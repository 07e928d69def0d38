"""An ONNX file from `matting export` (FP32 or FP16) carries its spec, so it can be named by its path
in `matting run`, `matting eval` and Serve (issue 12 item 8)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import onnx
import pytest

from catalog import real_photos
from model.export import export_onnx
from model.runtimes import create_runtime
from model.specs import get_spec
from model.weights import SPEC_METADATA_KEY, spec_from_file
from postproc import PostprocParams, decode_image, model_input
from test_evaluate import make_set


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    export_onnx("u2netp", folder / "u2netp.onnx", check=False)
    export_onnx("u2netp", folder / "u2netp-fp16.onnx", fp16=True, check=False)
    return {False: folder / "u2netp.onnx", True: folder / "u2netp-fp16.onnx"}


def photos(n: int = 2) -> np.ndarray:
    pre = get_spec("u2netp").preprocess
    return np.stack([model_input(decode_image(data), pre) for _, data in real_photos(n)])


@pytest.mark.parametrize("fp16", [False, True])
def test_exported_file_carries_the_spec_the_loader_reads(exported, fp16):
    path = exported[fp16]
    meta = {m.key: m.value for m in onnx.load(str(path), load_external_data=False).metadata_props}
    assert set(meta) == {SPEC_METADATA_KEY, "precision"} and meta["precision"] == ("fp16" if fp16 else "fp32")
    spec, registered = spec_from_file(path), get_spec("u2netp")
    assert json.loads(meta[SPEC_METADATA_KEY])["preprocess"]["resize"] == registered.preprocess.resize
    assert spec.preprocess == registered.preprocess and spec.arch_kwargs == registered.arch_kwargs
    # FP16 changes the alphas: its outputs must not pass for the FP32 model's in incremental runs.
    assert spec.version == registered.version + ("-fp16" if fp16 else "")
    rt = create_runtime(str(path), runtime="onnxruntime", device="cpu")
    assert rt.precision == ("fp16" if fp16 else "fp32") and rt.spec.version == spec.version
    imgs = photos()
    diff = np.abs(rt.predict(imgs) - create_runtime("u2netp", runtime="onnxruntime", device="cpu").predict(imgs))
    assert diff.max() < (0.2 if fp16 else 1e-3) and diff.mean() < (5e-3 if fp16 else 1e-5)


def test_a_file_without_a_spec_names_the_fix(tmp_path, exported):
    m = onnx.load(str(exported[False]))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="carries no model spec"):
        spec_from_file(tmp_path / "bare.onnx")


def test_eval_takes_an_exported_file_by_its_path(exported, tmp_path, capsys):
    from pipelines.cli import main

    data = make_set(tmp_path / "set", n=2)
    assert main(["eval", "--data", str(data), "--model", str(exported[True]), "--model", "u2netp",
                 "--runtime", "onnxruntime", "--device", "cpu", "--csv", str(tmp_path / "s.csv")]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    sad = {ln[0]: float(ln[3]) for ln in lines if ln and ln[0] in ("u2netp-fp16.onnx", "u2netp")}
    assert set(sad) == {"u2netp-fp16.onnx", "u2netp"}
    assert abs(sad["u2netp-fp16.onnx"] - sad["u2netp"]) < 0.05 * sad["u2netp"] + 0.05


def test_the_job_runs_an_exported_file_by_its_path(exported, tmp_path, monkeypatch):
    """What `matting run --model FILE.onnx` does, stage by stage in this process (the Ray job runs these)."""
    from model.config import RuntimeConfig
    from pipelines.batch.job import JobConfig
    from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
    from pipelines.storage import open_location

    monkeypatch.chdir(exported[True].parent)
    cfg = JobConfig(source="in", dest="out", inference=RuntimeConfig(model=exported[True].name))
    assert cfg.inference.model == str(exported[True])
    assert cfg.fingerprint().model_version == "u2netp-rembg-0.1.3-fp16"
    src = tmp_path / "src"
    src.mkdir()
    for key, data in real_photos(2):
        (src / key.rsplit("/", 1)[-1]).write_bytes(data)
    keys = sorted(p.name for p in src.iterdir())
    source, dest = open_location(str(src)), open_location(str(tmp_path / "dst"), create=True)
    spec = cfg.inference.spec
    rows = [decode_input(read_input({"key": k, "size": -1}, source=source, max_bytes=10**8),
                         preprocess=spec.preprocess, max_pixels=10**8) for k in keys]
    batch = {k: np.array([r[k] for r in rows], dtype=object) if k == "pixels" else np.array([r[k] for r in rows])
             for k in rows[0]}
    out = Predictor(cfg.inference.replace(runtime="onnxruntime", device="cpu"))(batch)
    assert set(out["precision"]) == {"fp16"}
    done = [render_output({k: out[k][i] for k in out}, dest=dest, params=PostprocParams.create(),
                          model_name=spec.name, model_version=spec.version) for i in range(len(keys))]
    assert [d["status"] for d in done] == ["ok", "ok"]


def test_serve_builds_a_model_deployment_from_a_path(exported, tmp_path):
    from pydantic import ValidationError

    from serve.app import model_deployment_name
    from serve.model_deployment import MattingModel
    from serve.settings import AppArgs

    path = str(exported[True])
    args = AppArgs(models=[path, "unet-small"])
    assert args.model_names == ["u2netp", "unet-small"]  # served under its spec's name, from its own file
    assert args.runtime_configs["u2netp"].model == path
    name = model_deployment_name(path)
    assert name.startswith("Model_u2netp-fp16_") and "/" not in name and name != model_deployment_name("u2netp")
    with pytest.raises(ValidationError, match="two entries serve the model name 'u2netp'"):
        AppArgs(models=[path, "u2netp"])
    replica = MattingModel.func_or_class(args.runtime_configs["u2netp"], runtime="onnxruntime", device="cpu")
    asyncio.run(replica.check_health())
    assert replica.describe()["version"] == "u2netp-rembg-0.1.3-fp16" and replica.describe()["precision"] == "fp16"
    with pytest.raises(ValidationError, match="does not exist"):
        AppArgs(models=[str(tmp_path / "missing.onnx")])
    with pytest.raises(ValidationError, match="registered"):
        AppArgs(models=["u2net-xl"])
