"""A 3-node ray.cluster_utils.Cluster: inference lands on the (fake) GPU node and falls back to CPU there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog import catalog
from pipelines.batch.job import JobConfig, run_job
from pipelines.manifest import read_manifest
from pipelines.storage import open_location

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


@pytest.fixture
def three_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)  # a fake GPU: no CUDA behind it
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster, gpu_node
    ray.shutdown()
    cluster.shutdown()


def test_inference_actor_lands_on_gpu_node_and_falls_back_to_cpu(tmp_path, three_nodes):
    _, gpu_node = three_nodes
    files = dict(list(catalog(8).items()))
    for key, data in files.items():
        p = Path(tmp_path, "src", key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    result = run_job(JobConfig(source=str(tmp_path / "src"), dest=str(tmp_path / "dst"), batch_size=4))
    rows = read_manifest(open_location(str(tmp_path / "dst")), result.run_id).to_pylist()
    assert len(rows) == len(files) and result.ok == 8
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["inference_node"] for r in ok} == {gpu_node.node_id}
    assert {r["device"] for r in ok} == {"cpu"}


def start_job(src: Path, dst: Path, address: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(src), str(dst), "--batch-size", "2",
           "--manifest-flush-rows", "2", *extra]
    return subprocess.Popen(cmd, env={**os.environ, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def manifest_rows(dst: Path) -> int:
    try:
        return read_manifest(open_location(str(dst))).num_rows
    except FileNotFoundError:
        return 0


def wait_for_rows(dst: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the driver has n rows in the manifest (outputs alone are not enough: a row whose
    result block lived on the killed node is lost with it, and redone by the rerun)."""
    deadline = time.monotonic() + timeout
    while manifest_rows(dst) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the job made no progress: {proc.communicate()[1][-3000:] if proc.poll() is not None else ''}")
        time.sleep(0.3)


def test_losing_the_gpu_node_mid_job(tmp_path, three_nodes):
    """Kill the node holding the inference actor: with capacity back, the job finishes with one ok row
    per input; without it, it stops after the stall timeout with a clear message and a rerun finishes."""
    cluster, gpu_node = three_nodes
    files = {k: v for k, v in catalog(12).items() if k.startswith("photos/")}
    src = tmp_path / "src"
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)

    # 1. Capacity returns: a new GPU node joins a few seconds after the old one died.
    dst = tmp_path / "dst1"
    proc = start_job(src, dst, cluster.address)
    wait_for_rows(dst, 2, proc)
    cluster.remove_node(gpu_node)
    time.sleep(3)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    rows = read_manifest(open_location(str(dst))).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(files)
    assert all(r["status"] == "ok" for r in rows)

    # 2. Capacity does not return: the job stops with a clear message instead of hanging...
    dst = tmp_path / "dst2"
    proc = start_job(src, dst, cluster.address, "--stall-timeout", "60")
    wait_for_rows(dst, 2, proc)
    cluster.remove_node(gpu_node)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    assert "no result for" in err and "run the same command again" in err
    done = read_manifest(open_location(str(dst))).num_rows
    assert 0 < done < len(files)
    # ...and once a GPU node is back, the same command finishes the rest.
    cluster.add_node(num_cpus=1, num_gpus=1)
    proc = start_job(src, dst, cluster.address, "--stall-timeout", "60")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "(resumed)" in out and f"done: {len(files) - done} images" in out
    rows = read_manifest(open_location(str(dst))).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(files)
    assert all(r["status"] == "ok" for r in rows)
