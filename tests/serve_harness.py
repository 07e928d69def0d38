"""The Serve app on a real local Ray, on a free loopback port, for the serve test modules and the bench."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import requests


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(args, overrides: dict | None = None, env: dict[str, str] | None = None, num_cpus: int = 2):
    """Start Ray (address="local"), Serve on 127.0.0.1:<free port>, and the app; yield its base URL.

    `env` reaches every replica through the job's runtime_env (how the keys file is named to it).
    """
    import ray
    from ray import serve

    from serve.app import make_app

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=10**9,
             runtime_env={"env_vars": dict(env or {})}, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app(args, overrides), name="matting", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=10).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not become healthy within 60 s")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def session_logs_dir() -> Path:
    """Where this Ray session writes every process's logs (Serve's access logs included)."""
    import ray

    return Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
