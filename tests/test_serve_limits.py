"""What one request and one key may cost the server (issue 16, defect 2), over real HTTP on a local Ray.

A worst case: a 4472x4472 JPEG (20 MP, 0.3 MB) with erode=256&feather=256 cost over 100 s of CPU
before the WorkLimit; four of them took every render thread and a normal request waited 80 s.
Here a handful of them are in flight while a normal request from another key is answered.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests

from catalog import SAMPLES
from serve.settings import AppArgs
from serve_harness import running_app

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ATTACKER, SECOND, NORMAL = "limits-key-attacker-1", "limits-key-second-2", "limits-key-normal-3"
DEADLINE_S = 15.0
CPU_THREADS = 4
PER_KEY = 2
WORST_QUERY = "erode=256&feather=256"
KEEP_ALIVE_S = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"{ATTACKER}\n{SECOND}\n{NORMAL}\n")
    args = AppArgs(auth=True, cpu_threads=CPU_THREADS, max_in_flight_per_key=PER_KEY, deadline_s=DEADLINE_S,
                   rate_limit_burst=100, max_upload_mb=5)
    overrides = {"Model_u2netp": {"ray_actor_options": {"num_cpus": 0}},
                 "MattingIngress": {"ray_actor_options": {"num_cpus": 0}}}
    with running_app(args, overrides, env={"MATTING_API_KEYS_FILE": str(keys)},
                     http_options={"keep_alive_timeout_s": KEEP_ALIVE_S, "request_timeout_s": 60}) as base:
        yield base


@pytest.fixture(scope="module")
def worst_jpeg() -> bytes:
    img = np.full((4472, 4472, 3), 120, np.uint8)
    cv2.circle(img, (2236, 2236), 1400, (40, 90, 200), -1)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes()


def post(server, key, data, query=""):
    t0 = time.monotonic()
    r = requests.post(f"{server}/v1/matte?{query}", headers={"X-Api-Key": key, "Content-Type": "image/jpeg"},
                      data=data, timeout=120)
    return r, t0, time.monotonic()


def assert_json_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text[:200])
    assert r.headers["content-type"] == "application/json" and r.json()["error"]["code"] == code, r.text[:200]


def test_worst_case_requests_leave_room_for_a_normal_one(server, worst_jpeg):
    normal = (SAMPLES / "coffee.jpg").read_bytes()
    idle = 1e9
    for _ in range(2):  # the better of two: the first may pay for warm-up
        r, t0, t1 = post(server, NORMAL, normal)
        assert r.status_code == 200
        idle = min(idle, t1 - t0)
    with ThreadPoolExecutor(8) as pool:
        worst = [pool.submit(post, server, ATTACKER, worst_jpeg, WORST_QUERY) for _ in range(PER_KEY + 1)]
        worst += [pool.submit(post, server, SECOND, worst_jpeg, WORST_QUERY)]
        time.sleep(0.5)  # they are decoding and rendering now
        r, n0, n1 = post(server, NORMAL, normal)
        results = [f.result() for f in worst]
    took = n1 - n0
    print(f"normal request: {idle:.2f} s idle, {took:.2f} s with {len(worst)} worst-case requests sent; worst-case: "
          + ", ".join(f"{w.status_code} in {e - s:.1f} s" for w, s, e in results))
    assert r.status_code == 200, r.text[:200]
    # Issue 16: 80 s against 0.55 s idle. Now a few seconds more than idle at most; relative to idle,
    # since on a shared, overloaded machine the idle time itself is seconds.
    assert took < idle + 8.0, (took, idle)
    attacker = [w for w, _, _ in results[:PER_KEY + 1]]
    refused = [w for w in attacker if w.status_code == 429]
    assert len(refused) >= 1, [w.status_code for w in attacker]  # one key holds at most PER_KEY
    for w in refused:
        assert_json_error(w, 429, "too_many_in_flight")
        assert int(w.headers["Retry-After"]) >= 1
    for w, s, e in results:
        if w.status_code == 200:
            assert w.headers["content-type"] == "image/png" and w.headers["X-Width"] == "4472"
        elif w.status_code == 503:
            assert_json_error(w, 503, "deadline_exceeded")
        else:
            assert w.status_code == 429, w.text[:200]
        assert e - s < DEADLINE_S + 10, e - s  # answered by the deadline (plus one step and the upload)
    assert any(e > n0 for w, s, e in results if w.status_code != 429), "no worst-case request was in flight"


def test_the_cap_is_per_key_and_released(server):
    """After the burst, each key has its slots back: nothing leaked by 429s or deadlines."""
    data = (SAMPLES / "coffee.jpg").read_bytes()
    for key in (ATTACKER, SECOND, NORMAL):
        assert post(server, key, data)[0].status_code == 200
    with ThreadPoolExecutor(PER_KEY) as pool:
        statuses = [f.result()[0].status_code for f in [pool.submit(post, server, ATTACKER, data)
                                                        for _ in range(PER_KEY)]]
    assert statuses == [200] * PER_KEY


def test_idle_keep_alive_connections_are_closed(server):
    """http_options.keep_alive_timeout_s reaches the proxy: an idle connection is closed after it."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(server)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        t0 = time.monotonic()
        s.settimeout(KEEP_ALIVE_S + 20)
        while s.recv(65536):  # the rest of the first response, if any; then b"" when the server closes
            pass
        idle = time.monotonic() - t0
    assert KEEP_ALIVE_S - 0.5 <= idle < KEEP_ALIVE_S + 10, idle
