"""The batch job end to end on local folders, on a real local Ray instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog import catalog, check_outputs
from raystate import inference_actors_started
from model.config import RuntimeConfig
from pipelines.batch.job import JobConfig, run_job
from pipelines.manifest import read_manifest
from pipelines.storage import open_location

pytestmark = pytest.mark.timeout(600)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_local_catalog_gives_one_row_per_input_and_valid_cutouts(tmp_path, ray_local):
    files = catalog(30)
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, files)
    actors_before = inference_actors_started()
    # Two CPU actors on this 2-CPU instance: a fixed pool (Ray's autoscaler kept it at one), which
    # must leave Ray Data's 1-CPU tasks room (it once did not: the job hung, silently).
    result = run_job(JobConfig(source=str(src), dest=str(dst), batch_size=4, actors=2, stall_timeout_s=180))
    assert inference_actors_started() - actors_before == 2

    assert (result.images, result.ok, result.errors) == (len(files), 30, 3)
    rows = read_manifest(open_location(str(dst)), result.run_id).to_pylist()
    check_outputs(files, rows, lambda key: (dst / key).read_bytes())
    # The manifest says which precision ran (RuntimeConfig's auto: FP32 on a CPU without INT8 in this build).
    assert {r["precision"] for r in rows if r["status"] == "ok"} == {"fp32"}
    # No temporary file is left visible beside the outputs.
    assert not [p for p in dst.rglob("*.partial")]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["model"] for r in ok} == {"u2netp"} and {r["device"] for r in ok} == {"cpu"}
    assert len({r["params_hash"] for r in rows}) == 1
    assert all(r["t_infer"] > 0 and r["t_decode"] > 0 for r in ok)
    assert all(len(r["sha256"]) == 64 for r in rows)  # corrupt inputs were read, so they have a hash too


def test_destination_inside_source_is_refused_before_anything_is_written(tmp_path):
    # It used to be skipped in the listing; issue 16 asks to refuse it (tests/test_fs_corpus.py has the rest).
    files = dict(list(catalog(2).items())[:2])
    write_tree(tmp_path, files)
    with pytest.raises(ValueError, match="lies inside SOURCE"):
        run_job(JobConfig(source=str(tmp_path), dest=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_cuda_on_a_machine_without_gpus_fails_at_start(tmp_path, ray_local):
    write_tree(tmp_path / "src", dict(list(catalog(1).items())[:1]))
    with pytest.raises(RuntimeError, match="CUDA|GPU"):
        run_job(JobConfig(source=str(tmp_path / "src"), dest=str(tmp_path / "dst"),
                          inference=RuntimeConfig(device="cuda")))


# Lines a normal run must not print (issue 12 item 9): Ray's, caused by our settings or harmless.
NOISE = ("constructor arguments in the object store",  # Ray core, about Ray Data's actor pool (filtered)
         "minimum number of concurrent actors",  # Ray Data: a pool larger than the job's batches
         "Token authentication is",  # Ray 2.60 on a new local instance whose auth mode nobody chose
         "View the dashboard at")  # the dashboard a local run does not start


@pytest.mark.parametrize("executor", ["auto", "ray"])
def test_a_normal_run_prints_no_warnings_of_ours_or_rays_avoidable_ones(tmp_path, executor):
    """`matting run` on the 5 bundled photos, as a user runs it: its own process (auto: in that process;
    ray: with the local Ray instance it starts)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(repo / "pipelines" / "samples"),
                           str(tmp_path / "out"), "--executor", executor], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "done: 5 images, 5 ok, 0 errors" in out
    assert f"executor: {'local' if executor == 'auto' else executor}" in out
    assert [n for n in NOISE if n in out] == [], out[-3000:]
    ours = [line for line in out.splitlines()
            if any(f"{level} {name}" in line for level in ("WARNING", "ERROR") for name in ("pipelines.", "model."))]
    warnings = [line for line in out.splitlines() if "Warning: " in line]  # Python warnings.warn output
    assert ours == [] and warnings == [], out[-3000:]
    # No error-level line from anyone (Ray's core, Ray Data, a worker's traceback) in a run that went well.
    errors = [line for line in out.splitlines() if " ERROR " in line or "\tERROR " in line or "Traceback" in line]
    assert errors == [], out[-3000:]
