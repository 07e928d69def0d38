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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"{ATTACKER}\n{SECOND}\n{NORMAL}\n")
    args = AppArgs(auth=True, cpu_threads=CPU_THREADS, max_in_flight_per_key=PER_KEY, deadline_s=DEADLINE_S,
                   rate_limit_burst=100, max_upload_mb=5)
    overrides = {"Model_u2netp": {"ray_actor_options": {"num_cpus": 0}},
                 "MattingIngress": {"ray_actor_options": {"num_cpus": 0}}}
    with running_app(args, overrides, env={"MATTING_API_KEYS_FILE": str(keys)}) as base:
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
    r, t0, t1 = post(server, NORMAL, normal)
    assert r.status_code == 200
    idle = t1 - t0
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
    assert took < 10.0, took  # was 80 s (issue 16); "a few seconds" on a loaded 2-core box
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
