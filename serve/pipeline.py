"""The ingress side of one request: decode in a thread, infer on a model replica, render in a thread.

Decoding and post-processing are CPU work on full-resolution pixels; they run in a bounded thread
pool of the ingress replica (OpenCV, Pillow and fpng release the GIL), so neither the ingress's
event loop nor the model replica's ever waits on them.

Every request has a Deadline. The CPU work is stopped cooperatively: the render checks the
deadline between its steps (each step's cost is bounded by the WorkLimit), and a request that
runs out of time, or whose client left, cancels its deadline so the thread stops at its next
step. Threads are never abandoned while they run: the pool has `cpu_threads` workers, and a
worker still finishing a step counts against them, so the CPU bound holds.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from model.specs import get_spec
from postproc import DecodedImage, DecodeError, decode_image, model_input
from postproc.reasons import HTTP_STATUS
from postproc.alpha import WorkLimit
from serve.errors import ApiError
from serve.limits import Deadline, DeadlineExceeded

# DecodeError.reason → (status, code), from the one reasons table; a reason without an HTTP
# answer there falls back to 400.
_DECODE_STATUS = HTTP_STATUS


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    parts: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.parts[name] = (now - since) * 1000.0
        return now

    @property
    def total_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def server_timing(self) -> str:
        items = [f"{k};dur={v:.1f}" for k, v in self.parts.items()]
        return ", ".join(items + [f"total;dur={self.total_ms:.1f}"])


class Pipeline:
    def __init__(self, handles: dict, max_pixels: int, cpu_threads: int, request_timeout_s: float,
                 deadline_s: float = 30.0, work_limit: WorkLimit | None = None):
        self.handles = handles
        self.max_pixels = max_pixels
        self.executor = ThreadPoolExecutor(cpu_threads, thread_name_prefix="matting-cpu")
        self.request_timeout_s = request_timeout_s
        self.deadline_s = deadline_s
        self.work_limit = work_limit or WorkLimit()

    def deadline(self) -> Deadline:
        return Deadline(self.deadline_s)

    async def in_thread(self, deadline: Deadline, fn, *args, **kwargs):
        """fn(*args, **kwargs) on a pool thread, within the deadline; 503 deadline_exceeded past it.

        Wrap a render in render_call() first, so it checks the deadline between its steps.
        """

        def run():
            deadline.check()  # the request may have run out of time while queued for a thread
            return fn(*args, **kwargs)

        future = None
        try:
            deadline.check()
            future = asyncio.get_running_loop().run_in_executor(self.executor, run)
            # shield: wait_for's own cancellation must not be what stops the work; deadline.cancel() does,
            # at the thread's next step. future.cancel() below drops a job still queued for a thread,
            # and the result of one still running (a running thread cannot be cancelled, only told).
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline.remaining()))
        except (asyncio.TimeoutError, TimeoutError, DeadlineExceeded):
            deadline.cancel()
            if future is not None:
                future.cancel()
            raise deadline.error() from None
        except asyncio.CancelledError:
            deadline.cancel()  # the client left (Serve cancels the request): stop the thread's work too
            if future is not None:
                future.cancel()
            raise

    def render_call(self, fn, deadline: Deadline, *args, **kwargs):
        """fn with this server's work limit and the request's checkpoint: for in_thread."""
        return functools.partial(fn, *args, limit=self.work_limit, checkpoint=deadline.check, **kwargs)

    def _decode(self, data: bytes, preprocess) -> tuple[DecodedImage, np.ndarray]:
        img = decode_image(data, max_pixels=self.max_pixels)
        return img, model_input(img, preprocess)

    async def decode(self, data: bytes, model: str, deadline: Deadline) -> tuple[DecodedImage, np.ndarray]:
        try:
            return await self.in_thread(deadline, self._decode, data, get_spec(model).preprocess)
        except DecodeError as e:
            status, code = _DECODE_STATUS.get(e.reason, (400, "undecodable"))
            raise ApiError(status, code, str(e)) from None

    async def infer(self, model: str, small: np.ndarray, deadline: Deadline, tta: str = "none") -> np.ndarray:
        """One model-sized image → its (h, w) probabilities, batched with other requests on the replica
        (with `tta` "flip", with other flip requests: the replica's predict_flip)."""
        wait = min(self.request_timeout_s, deadline.remaining())
        if wait <= 0:
            deadline.cancel()
            raise deadline.error()
        try:
            handle = self.handles[model]
            response = (handle.predict_flip if tta == "flip" else handle.predict).remote(small)
            prob = await asyncio.wait_for(response, wait)
        except BackPressureError:
            raise ApiError(503, "overloaded", "the model's queue is full; retry shortly", retry_after_s=1) from None
        except (asyncio.TimeoutError, TimeoutError):
            if deadline.remaining() <= 0:
                deadline.cancel()
                raise deadline.error() from None
            raise ApiError(503, "overloaded", f"no model answer within {self.request_timeout_s:g} s; retry later",
                           retry_after_s=5) from None
        except (RayActorError, DeploymentUnavailableError):
            raise ApiError(503, "unavailable", "the model is restarting; retry shortly", retry_after_s=5) from None
        return np.asarray(prob, np.float32)
