"""The bounded working size of erosion and feathering (postproc.alpha.WorkLimit): exact within the
limit, close to the full-resolution result beyond it, and cheap whatever the radius."""

from __future__ import annotations

import time

import numpy as np
import pytest

from postproc import PostprocParams
from postproc.alpha import WorkLimit, bounding_box, erode, feather
from postproc.render import refine_alpha

LIMIT = WorkLimit(max_pixels=250_000, max_radius=8)


def disc(size: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) <= radius ** 2).astype(np.uint8) * 255


def test_within_the_limit_the_result_is_the_full_resolution_one():
    a = disc(400, 120)  # 160 kP, under 250 kP
    for px in (1, 4, 8):
        assert np.array_equal(erode(a, px, LIMIT), erode(a, px))
        assert np.array_equal(feather(a, float(px), LIMIT), feather(a, float(px)))
    assert LIMIT.scale(160_000, 8, order=2) == 1.0 and LIMIT.scale(160_000, 8, order=1) == 1.0


def test_beyond_the_limit_the_cost_is_bounded_and_the_result_close():
    a = disc(1200, 400)  # 1.44 MP
    px = 64
    s = LIMIT.scale(a.size, px, order=2)
    assert s < 1.0 and a.size * s ** 2 * (px * s) ** 2 <= LIMIT.max_pixels * LIMIT.max_radius ** 2 * 1.0001
    bounded, exact = erode(a, px, LIMIT), erode(a, px)
    assert bounded.shape == exact.shape and bounded.dtype == np.uint8
    bx, by, bw, bh = bounding_box(bounded, 128)
    ex, ey, ew, eh = bounding_box(exact, 128)
    # The edge moves by the same 64 px, give or take a working pixel.
    assert abs(bw - ew) <= 2 / s and abs(bx - ex) <= 1 / s
    fb, fe = feather(a, float(px), LIMIT).astype(int), feather(a, float(px)).astype(int)
    assert np.abs(fb - fe).max() <= 3  # a wide Gaussian loses nothing at the working size


def test_worst_case_erosion_and_feathering_are_cheap_under_a_limit():
    """erode=256 and feather=256 on a 4472x4472 matte (the issue's 20 MP case) under the server's default limit."""
    prob = np.zeros((320, 320), np.float32)
    prob[60:260, 80:240] = 1.0
    params = PostprocParams(erode=256, feather=256.0)
    t0 = time.process_time()
    a = refine_alpha(prob, 4472, 4472, params, limit=WorkLimit())
    cpu = time.process_time() - t0
    assert a.shape == (4472, 4472) and a.max() > 200 and a[0, 0] == 0
    # Unbounded, this took over 100 s of CPU (issue 16); the limit brings it to a few seconds even on a loaded box.
    assert cpu < 20, cpu


def test_checkpoint_stops_the_work():
    class Stop(Exception):
        pass

    calls = []

    def checkpoint():
        calls.append(1)
        if len(calls) >= 2:
            raise Stop

    with pytest.raises(Stop):
        refine_alpha(np.ones((32, 32), np.float32), 64, 64, PostprocParams(erode=2), checkpoint=checkpoint)
    assert len(calls) == 2
