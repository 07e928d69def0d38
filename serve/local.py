"""Running the app on this machine.

`matting serve` (run): Serve's own `serve run` on our config file, with the command line's overrides.
The config file stays the one source of deployment settings; this only rewrites host, port and the
auth flag into a temporary copy and hands it to `serve run` (the documented way to run a config).

`running_app`: the app in-process on a local Ray and a free loopback port, for tests and bench/.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from serve.settings import AppArgs, load_api_keys

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).parent
CPU_CONFIG = CONFIGS / "config.yaml"
GPU_CONFIG = CONFIGS / "config.gpu.yaml"


def default_config() -> Path:
    from model.runtimes import cuda_usable

    ok, _ = cuda_usable()
    return GPU_CONFIG if ok else CPU_CONFIG


def local_config(path: Path, host: str, port: int, auth: bool) -> dict:
    """The config at `path` with http_options and every application's `auth` overridden; validated."""
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(Path(path).read_text())
    config.setdefault("http_options", {}).update(host=host, port=port)
    for app in config.get("applications", []):
        app.setdefault("args", {})["auth"] = auth
        args = AppArgs.model_validate(app["args"])  # a bad arg fails here, with pydantic's message
        check_proxy_timeout(config["http_options"], args)
    ServeDeploySchema.model_validate(config)
    return config


def check_proxy_timeout(http_options: dict, args: AppArgs) -> None:
    """The proxy's request_timeout_s must leave room for the app's deadline and its JSON answer."""
    proxy = http_options.get("request_timeout_s")
    if proxy is not None and proxy <= args.deadline_s:
        raise ValueError(f"http_options.request_timeout_s ({proxy:g} s) must be above the app's deadline_s "
                         f"({args.deadline_s:g} s), or the proxy answers a text/plain 408 before our JSON 503")


def run(config_path: Path | None, host: str, port: int, auth: bool, address: str | None) -> int:
    path = Path(config_path) if config_path else default_config()
    config = local_config(path, host, port, auth)
    if auth and not load_api_keys():
        raise ValueError("authentication is on but no API key is configured: export MATTING_API_KEYS=key1,key2 "
                         "(or MATTING_API_KEYS_FILE=/path/to/keys), or pass --no-auth on your own machine")
    if not auth:
        log.warning("!!! --no-auth: AUTHENTICATION IS OFF. Anyone who can reach %s:%d can use the API. !!!", host, port)
    print(f"serving {path.name} on http://{host}:{port}/ (web page), http://{host}:{port}/docs (API); Ctrl-C stops it",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="matting-serve-") as tmp:
        cfg = Path(tmp) / path.name
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [sys.executable, "-m", "ray.serve.scripts", "run", str(cfg)]
        if address:
            cmd += ["--address", address]
        # `serve run` shuts Serve and its local Ray down on SIGINT. A child started from a background
        # job inherits SIGINT ignored, so restore it, and turn our SIGTERM into the child's SIGINT.
        child = subprocess.Popen(cmd, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # Ctrl-C reached the child too; wait for its clean shutdown
                continue


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(args: AppArgs, overrides: dict | None = None, env: dict[str, str] | None = None,
                num_cpus: int = 2, http_options: dict | None = None):
    """Start Ray (address="local"), Serve on 127.0.0.1:<free port> and the app; yield its base URL.

    `env` reaches every replica through the job's runtime_env (how a keys file is named to it).
    `overrides` maps deployment names to `.options(...)`, as a config file's `deployments:` would.
    `http_options` adds to Serve's proxy options (keep_alive_timeout_s, request_timeout_s, ...).
    """
    import ray
    import requests
    from ray import serve

    from serve.app import make_app

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=10**9,
             runtime_env={"env_vars": dict(env or {})}, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={**(http_options or {}), "host": "127.0.0.1", "port": port})
        serve.run(make_app(args, overrides), name="matting", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/healthz", timeout=10).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not become healthy within 60 s")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
