"""The in-process executor (pipelines/batch/in_process.py): the same stages as the Ray Data chain, in
this process's threads, chosen by `auto` for a CPU run that names no cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog import catalog, check_outputs, write_tree
from model.config import RuntimeConfig
from pipelines.batch import in_process
from pipelines.batch.config import JobConfig
from pipelines.batch.execution import JobStalled, LocalPlan, cgroup_cpu_quota, choose_executor, plan_local
from pipelines.batch.job import run_job
from pipelines.manifest import list_runs, read_manifest, read_run
from pipelines.storage import open_location

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parent.parent

# Manifest columns that say where and when a row was made, not what it holds.
WHERE_AND_WHEN = {"t_read", "t_decode", "t_infer", "t_postprocess", "t_encode", "t_write", "inference_node",
                  "worker_node", "worker_pid"}


def photos(n: int) -> dict[str, bytes]:
    return {k: v for k, v in catalog(n).items() if k.startswith("photos/")}


def test_same_cutouts_and_manifest_rows_as_the_ray_chain(tmp_path, ray_local):
    files = catalog(10)  # 10 photos and the corrupt files
    src = write_tree(tmp_path / "src", files)
    runs = {}
    for executor in ("ray", "local"):
        dst = tmp_path / executor
        result = run_job(JobConfig(source=str(src), dest=str(dst), executor=executor, batch_size=4,
                                   stall_timeout_s=180))
        assert result.executor == executor
        rows = read_manifest(open_location(str(dst)), result.run_id).to_pylist()
        check_outputs(files, rows, lambda key, dst=dst: (dst / key).read_bytes())
        runs[executor] = dst, {r["source_key"]: {k: v for k, v in r.items() if k not in WHERE_AND_WHEN} for r in rows}
    (ray_dst, ray_rows), (local_dst, local_rows) = runs["ray"], runs["local"]
    assert local_rows == ray_rows
    outputs = [r["output_key"] for r in local_rows.values() if r["output_key"]]
    assert len(outputs) == 10
    for key in outputs:
        assert (local_dst / key).read_bytes() == (ray_dst / key).read_bytes(), key


def test_a_default_cpu_run_never_imports_ray(tmp_path):
    """`matting run` with no cluster named runs in its own process: Ray is not even imported."""
    code = ("import sys; from pipelines.cli import main; rc = main(['run', sys.argv[1], sys.argv[2]]); "
            "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "pipelines" / "samples"), str(tmp_path / "out")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "done: 5 images, 5 ok, 0 errors" in out and "executor: local" in out, out[-3000:]
    assert "ray imported: False" in out, out[-3000:]
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


def test_auto_runs_in_process_only_when_nothing_asks_for_ray(monkeypatch):
    def cfg(**kw) -> JobConfig:
        return JobConfig(source="/s", dest="/d", **kw)

    class StartedRay:  # stands in for a Ray a notebook or test already started in this process
        @staticmethod
        def is_initialized() -> bool:
            return True

    cpu = RuntimeConfig(device="cpu")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert choose_executor(cfg(inference=cpu)) == "local"
    assert choose_executor(cfg(inference=cpu), address="ray://head:10001") == "ray"
    assert choose_executor(cfg(inference=RuntimeConfig(device="cuda"))) == "ray"  # the GPU path runs in actors
    assert choose_executor(cfg(inference=cpu, executor="ray")) == "ray"
    assert choose_executor(cfg(inference=cpu, executor="local"), address="ray://head:10001") == "local"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert choose_executor(cfg(inference=cpu)) == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setitem(sys.modules, "ray", StartedRay)
    assert choose_executor(cfg(inference=cpu)) == "ray"
    with pytest.raises(ValueError, match="--executor ray"):
        cfg(executor="local", inference=RuntimeConfig(device="cuda"))
    with pytest.raises(ValueError, match="executor must be one of"):
        cfg(executor="threads")


def test_local_layout_uses_every_cpu_without_reserving_one_for_ray():
    cfg = JobConfig(source="/s", dest="/d")
    assert plan_local(cfg, cpus=2) == LocalPlan(sessions=2, threads=1, workers=4)
    one = plan_local(cfg, cpus=2, inputs=1)  # one input: one session, which gets both cores
    assert (one.sessions, one.threads) == (1, 2)
    big = plan_local(cfg, cpus=16)
    assert (big.sessions, big.threads) == (4, 4)
    assert plan_local(JobConfig(source="/s", dest="/d", actors=1), cpus=2).threads == 2
    assert plan_local(JobConfig(source="/s", dest="/d", inference=RuntimeConfig(threads=3)), cpus=2).threads == 3
    assert plan_local(JobConfig(source="/s", dest="/d", batch_size=8), cpus=2, inputs=5).sessions == 1


def test_a_containers_cpu_quota_caps_the_layout(tmp_path, monkeypatch):
    """`docker run --cpus 1.5` on a big host: the affinity shows every core, the quota says 1.5."""
    v2, quota, period = tmp_path / "cpu.max", tmp_path / "quota", tmp_path / "period"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(v2), (str(quota), str(period))) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_cpu_quota(str(v2), (str(quota), str(period))) is None
    v2.unlink()
    quota.write_text("200000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_quota(str(v2), (str(quota), str(period))) == 2.0
    quota.write_text("-1\n")
    assert cgroup_cpu_quota(str(v2), (str(quota), str(period))) is None
    from pipelines.batch import execution

    affinity = len(os.sched_getaffinity(0))
    for allowed, expected in ((0.5, 1), (1.5, min(2, affinity)), (None, affinity), (10_000.0, affinity)):
        monkeypatch.setattr(execution, "cgroup_cpu_quota", lambda allowed=allowed: allowed)
        assert execution.available_cpus() == expected, allowed


def test_a_failure_keeps_finished_rows_and_a_rerun_does_only_the_rest(tmp_path, monkeypatch):
    files = photos(8)
    src, dst = write_tree(tmp_path / "src", files), tmp_path / "dst"
    doomed = sorted(files)[-1]
    render = in_process.render_output

    def render_or_fail(row: dict, **kwargs) -> dict:  # a failure that is no input's own: the disk went away
        if row["source_key"] == doomed:
            raise OSError("the disk went away")
        return render(row, **kwargs)

    monkeypatch.setattr(in_process, "render_output", render_or_fail)
    cfg = JobConfig(source=str(src), dest=str(dst), executor="local", manifest_flush_rows=1)
    with pytest.raises(OSError, match="the disk went away"):
        run_job(cfg)
    d = open_location(str(dst))
    run_id = list_runs(d)[-1]
    done = read_run(d, run_id).to_pylist()
    assert 1 <= len(done) < len(files) and doomed not in {r["source_key"] for r in done}
    assert all(r["status"] == "ok" and (dst / r["output_key"]).is_file() for r in done)

    monkeypatch.setattr(in_process, "render_output", render)
    second = run_job(cfg)
    assert second.resumed and second.images == len(files) - len(done)
    rows = read_run(d, run_id).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(files)  # exactly one row per input
    assert not list(dst.rglob("*.partial"))


def test_a_stage_that_stops_answering_stops_the_run_resumably(tmp_path, monkeypatch):
    files = photos(3)
    src = write_tree(tmp_path / "src", files)

    class Stuck(in_process.Predictor):
        def __call__(self, batch):
            time.sleep(4)
            return super().__call__(batch)

    monkeypatch.setattr(in_process, "Predictor", Stuck)
    started = time.monotonic()
    with pytest.raises(JobStalled, match="run the same command again"):
        run_job(JobConfig(source=str(src), dest=str(tmp_path / "dst"), executor="local", stall_timeout_s=1.5))
    assert time.monotonic() - started < 60
