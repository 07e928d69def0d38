"""Nightly mode: --incremental, --prune, resuming a killed driver, and input manifests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import catalog
from raystate import inference_actors_started
from pipelines.batch.job import JobConfig, run_job
from pipelines.manifest import list_runs, read_run
from pipelines.batch.state import consolidated
from pipelines.storage import open_location
from postproc import PostprocParams

pytestmark = pytest.mark.timeout(900)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)


def test_incremental_runs_only_what_changed(tmp_path, ray_local):
    files = dict(list(catalog(5).items()))  # 5 photos + 3 corrupt files
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, files)
    cfg = dict(source=str(src), dest=str(dst), batch_size=4, incremental=True)

    first = run_job(JobConfig(**cfg))
    assert (first.images, first.ok, first.errors, first.inferred) == (8, 5, 3, 5)

    actors_before = inference_actors_started()
    assert actors_before >= 1
    second = run_job(JobConfig(**cfg))
    # Nothing changed: nothing is read, no actor is started, nothing is inferred.
    assert (second.listed, second.skipped, second.images, second.inferred) == (8, 8, 0, 0)
    assert inference_actors_started() == actors_before

    photos = sorted(k for k in files if k.startswith("photos/"))
    (src / photos[0]).write_bytes(files[photos[1]])  # changed content
    (src / photos[2]).write_bytes(files[photos[2]])  # rewritten, same bytes: new mtime only
    (src / "photos/new.jpg").write_bytes(files[photos[3]])  # new
    third = run_job(JobConfig(**cfg))
    assert (third.images, third.skipped, third.inferred) == (3, 6, 2)
    reused = [r for r in read_run(open_location(str(dst)), third.run_id).to_pylist() if r["reused"]]
    assert [r["source_key"] for r in reused] == [photos[2]]

    # New parameters: every input is redone (the corrupt ones fail again, without inference).
    fourth = run_job(JobConfig(**cfg, params=PostprocParams.create(alpha_threshold=30)))
    assert (fourth.images, fourth.inferred, fourth.errors) == (9, 6, 3)

    view = consolidated(open_location(str(dst))).to_pylist()
    assert sorted(r["source_key"] for r in view) == sorted([*files, "photos/new.jpg"])  # one current row each


def test_prune_removes_outputs_of_deleted_inputs(tmp_path, ray_local):
    files = {k: v for k, v in catalog(3).items() if k.startswith("photos/")}
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, files)
    run_job(JobConfig(source=str(src), dest=str(dst), incremental=True))
    gone = sorted(files)[0]
    (src / gone).unlink()
    result = run_job(JobConfig(source=str(src), dest=str(dst), incremental=True, prune=True))
    assert result.pruned == 1 and result.inferred == 0
    assert not (dst / gone).with_suffix(".png").exists()
    assert len(list(dst.rglob("*.png"))) == 2
    assert gone not in {r["source_key"] for r in consolidated(open_location(str(dst))).to_pylist()}


def test_input_manifest_limits_the_run_to_its_keys(tmp_path, ray_local):
    files = {k: v for k, v in catalog(4).items() if k.startswith("photos/")}
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, files)
    keys = sorted(files)[:2]
    csv = tmp_path / "keys.csv"
    csv.write_text("key\n" + "\n".join(keys) + "\n")
    result = run_job(JobConfig(source=str(src), dest=str(dst), input_manifest=str(csv)))
    assert result.images == 2 and sorted(r["source_key"] for r in read_run(open_location(str(dst)), result.run_id)
                                         .to_pylist()) == keys
    uris = tmp_path / "uris.parquet"
    pq.write_table(pa.table({"uri": [f"{src}/{k}" for k in sorted(files)[2:]]}), uris)
    assert run_job(JobConfig(source=str(src), dest=str(dst), input_manifest=str(uris))).ok == 2
    outside = tmp_path / "outside.csv"
    outside.write_text("uri\n/etc/passwd\n")
    with pytest.raises(ValueError, match="not under SOURCE"):
        run_job(JobConfig(source=str(src), dest=str(dst), input_manifest=str(outside)))


# Killed on Ray (its driver and the local instance it started) or in its own process (the default
# of a CPU run): one session, one thread, flip TTA, so the run is still going when the kill comes.
KILLED = {"ray": ({"RAY_ADDRESS": "local"}, ["--batch-size", "2"]),
          "local": ({}, ["--actors", "1", "--threads", "1", "--tta", "flip"])}


@pytest.mark.parametrize("executor", sorted(KILLED))
def test_killed_driver_resumes_and_does_only_the_remainder(tmp_path, executor):
    files = {k: v for k, v in catalog(16).items() if k.startswith("photos/")}
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tree(src, files)
    env_extra, flags = KILLED[executor]
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(src), str(dst), "--manifest-flush-rows", "2", *flags]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env_extra}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = open_location(str(dst), create=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = list_runs(d)
            if runs and read_run(d, runs[-1]).num_rows >= 4:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the job made no progress")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    run_id = list_runs(d)[-1]
    done_before = read_run(d, run_id).num_rows
    assert 4 <= done_before < len(files)
    assert not [p for p in dst.rglob("*.png") if p.stat().st_size == 0]

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "(resumed)" in second.stdout
    rows = read_run(d, run_id).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(files)  # exactly one row per input
    assert f"done: {len(files) - done_before} images" in second.stdout
