"""The job's metrics reach Ray's Prometheus endpoint: what the dashboard and Prometheus scrape."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from catalog import catalog
from conftest import free_port
from pipelines.batch.job import JobConfig, run_job

pytestmark = pytest.mark.timeout(600)


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_images_errors_and_stage_seconds_are_exported(tmp_path):
    import ray

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        files = {k: v for k, v in catalog(2).items() if k.startswith("photos/") or k.endswith("empty.jpg")}
        for key, data in files.items():
            (tmp_path / "src" / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "src" / key).write_bytes(data)
        run_job(JobConfig(source=str(tmp_path / "src"), dest=str(tmp_path / "dst")))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = scrape(port)
            if metric_sum(text, "ray_matting_images_total", status="ok") >= 2:
                break
            time.sleep(1)
        assert metric_sum(text, "ray_matting_images_total", status="ok") == 2
        assert metric_sum(text, "ray_matting_errors_total", reason="empty") == 1
        for stage in ("read", "decode", "infer", "postprocess", "encode", "write"):
            assert metric_sum(text, "ray_matting_stage_seconds_count", stage=stage) == 2, stage
        assert re.search(r'ray_matting_stage_seconds_sum\{[^}]*stage="infer"[^}]*\} [0-9.e-]+', text)
    finally:
        ray.shutdown()
