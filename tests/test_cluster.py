"""A 3-node ray.cluster_utils.Cluster: inference lands on the (fake) GPU node and falls back to CPU there."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog import catalog
from pipelines.job import JobConfig, run_job
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
