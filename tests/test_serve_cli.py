"""`matting serve` end to end: Serve's own `serve run` on serve/config.yaml, reachable, then stopped cleanly.

The first test is slow (a whole new Ray instance with its dashboard starts): `pytest -m slow tests/test_serve_cli.py`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from catalog import SAMPLES
from serve.local import free_port

pytestmark = pytest.mark.timeout(600)


def test_matting_serve_runs_the_config_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "MATTING_API_KEYS": "cli-test-key"}
    log = open(tmp_path / "matting-serve.log", "wb")  # a file, not a pipe nobody reads (Ray logs a lot)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the app not deployed yet
                pass
            time.sleep(2)
        early = "matting serve exited early:\n"
        assert proc.poll() is None, early + (tmp_path / "matting-serve.log").read_text()[-4000:]
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json()
        assert health["auth"] is True and health["models"]["u2netp"]["max_batch_size"] == 8  # config.yaml's
        r = requests.post(f"http://127.0.0.1:{port}/v1.0/removebg", headers={"X-Api-Key": "cli-test-key"},
                          files={"image_file": (SAMPLES / "coffee.jpg").read_bytes()}, timeout=120)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        finally:
            leftovers = _group_members(proc.pid)
            with contextlib.suppress(ProcessLookupError):  # only what this test started: its own process group
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    assert proc.returncode == 0, (tmp_path / "matting-serve.log").read_text()[-4000:]
    assert not leftovers, f"processes left running after matting serve stopped: {leftovers}"


def _group_members(pgid: int) -> list[str]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.append(open(f"/proc/{d}/cmdline").read().replace("\0", " ")[:80])
    return out


def test_matting_serve_without_keys_refuses_to_start():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATTING_API_KEYS")}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "MATTING_API_KEYS" in done.stderr and "--no-auth" in done.stderr
