"""The bench scripts keep up with the code they measure (benchmarks themselves never run in CI).

Two went stale unnoticed after issue 12 moved modules and changed the stages' signatures:
bench/int8.py's recipe scoring imported a module that had moved, and bench/job_gpu.py's last step
(bytes into and out of the inference actor) called the stages the old way, so a GPU lease would
have lost its final figures. These checks are cheap: imports, and that one step on four photos.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
OURS = ("model", "postproc", "pipelines", "serve")


def our_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from OUR.MODULE import NAME` in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in OURS:
            found += [(node.lineno, node.module, a.name) for a in node.names]
    return found


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_name_a_bench_script_imports_from_our_packages_exists(script):
    missing = []
    for line, module, name in our_imports(BENCH / script):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{script}:{line}: {module} ({e})")
            continue
        if not hasattr(mod, name) and importlib.util.find_spec(f"{module}.{name}") is None:
            missing.append(f"{script}:{line}: {module}.{name}")
    assert missing == []


def test_job_gpu_counts_the_bytes_into_and_out_of_the_actor_on_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its neighbours as `python bench/job_gpu.py` does
    spec = importlib.util.spec_from_file_location("bench_job_gpu", BENCH / "job_gpu.py")
    job_gpu = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_job_gpu", job_gpu)
    spec.loader.exec_module(job_gpu)
    counted = job_gpu.actor_bytes(types.SimpleNamespace(device="cpu"), REPO / "pipelines" / "samples", "u2netp",
                                  "off", n=2)
    h, w = 320, 320  # u2netp's input: the model input goes in (uint8 RGB), float16 probabilities come out
    assert counted["into_actor"]["model_input"] == h * w * 3
    assert counted["out_of_actor"]["prob"] == h * w * 2
    assert "model_input" not in counted["out_of_actor"] and counted["into_actor"]["data"] > 0


def test_the_gpu_training_lease_is_valid_bash():
    import subprocess

    subprocess.run(["bash", "-n", str(BENCH / "gpu_train_lease.sh")], check=True)


@pytest.mark.slow
def test_the_gpu_training_lease_runs_end_to_end_on_cpu(tmp_path, packaged_weights):
    """The lease's one call, rehearsed on CPU on a few packed photos: the teacher, the packs, the four
    students side by side (samples made on the device), the samples bench, the files that come back.
    A GPU lease is rare and short; a script that broke since the last one would waste it."""
    import os
    import shutil
    import subprocess

    import cv2
    import numpy as np
    from catalog import real_photos

    gpu = tmp_path / "gpu"
    photos = iter(real_photos(15))
    for folder in ("clothing_cc0", "clothing_cc0_more", "caltech101_objects", "ccp_fullbody/image", "ccp_people"):
        (gpu / "train" / folder).mkdir(parents=True)
        for _ in range(3):
            stem, data = next(photos)
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            img = cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(gpu / "train" / folder / f"{stem}.webp"), img)
            if folder == "ccp_fullbody/image":
                (gpu / "train" / "ccp_fullbody" / "mask").mkdir(exist_ok=True)
                mask = np.zeros((96, 96), np.uint8)
                cv2.circle(mask, (48, 48), 30, 255, -1)
                cv2.imwrite(str(gpu / "train" / "ccp_fullbody" / "mask" / f"{stem}.png"), mask)
    (gpu / "weights").mkdir()
    shutil.copy(packaged_weights, gpu / "weights" / packaged_weights.name)
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "MIN": "0.05", "BATCH": "2", "SAMPLES_ON": "device", "LIMIT": "500",
           "OUT": str(out), "GPU_DIR": str(gpu), "WORK": str(tmp_path / "work")}
    subprocess.run(["bash", str(BENCH / "gpu_train_lease.sh"), "run"], cwd=REPO, env=env, check=True, timeout=600)
    log = (out / "log.txt").read_text()
    assert "teacher exit 0" in log and "samples exit 0" in log, log[-3000:]
    runs = ("base256", "w16-256", "w24-288", "w32-320")
    back = sorted(p.name for p in out.iterdir())
    assert back == sorted([*(f"{r}.safetensors" for r in runs), "curves.tar.gz", "log.txt",
                           "curves.png" if "curves.png" in back else "curves.svg"])
    assert len(back) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())  # what comes back
    from model import create_model

    for r in runs:
        assert next(create_model(str(out / f"{r}.safetensors")).parameters()).dtype.is_floating_point
    assert "samples made on cpu" in log  # the device sampler ran, not the loader
