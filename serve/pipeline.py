"""The ingress side of one request: decode in a thread, infer on a model replica, render in a thread.

Decoding and post-processing are CPU work on full-resolution pixels; they run in a bounded thread
pool of the ingress replica (OpenCV, Pillow and fpng release the GIL), so neither the ingress's
event loop nor the model replica's ever waits on them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import anyio
import numpy as np
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from model.specs import get_spec
from postproc import DecodedImage, DecodeError, decode_image, model_input
from serve.errors import ApiError

# DecodeError.reason → (status, code). Reasons postproc adds later fall back to 400.
_DECODE_STATUS = {
    "unsupported_format": (415, "unsupported_type"),
    "too_many_pixels": (413, "too_large"),
}


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
    def __init__(self, handles: dict, max_pixels: int, cpu_threads: int, request_timeout_s: float):
        self.handles = handles
        self.max_pixels = max_pixels
        self.limiter = anyio.CapacityLimiter(cpu_threads)
        self.request_timeout_s = request_timeout_s

    async def in_thread(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def _decode(self, data: bytes, size: tuple[int, int]) -> tuple[DecodedImage, np.ndarray]:
        img = decode_image(data, max_pixels=self.max_pixels)
        return img, model_input(img, size)

    async def decode(self, data: bytes, model: str) -> tuple[DecodedImage, np.ndarray]:
        try:
            return await self.in_thread(self._decode, data, get_spec(model).preprocess.input_size)
        except DecodeError as e:
            status, code = _DECODE_STATUS.get(e.reason, (400, "undecodable"))
            raise ApiError(status, code, str(e)) from None

    async def infer(self, model: str, small: np.ndarray, tta: str = "none") -> np.ndarray:
        """One model-sized image → its (h, w) probabilities, batched with other requests on the replica
        (with `tta` "flip", with other flip requests: the replica's predict_flip)."""
        handle = self.handles[model]
        try:
            response = (handle.predict_flip if tta == "flip" else handle.predict).remote(small)
            prob = await asyncio.wait_for(response, self.request_timeout_s)
        except BackPressureError:
            raise ApiError(503, "overloaded", "the model's queue is full; retry shortly", retry_after_s=1) from None
        except (asyncio.TimeoutError, TimeoutError):
            raise ApiError(503, "overloaded", f"no model answer within {self.request_timeout_s:g} s; retry later",
                           retry_after_s=5) from None
        except (RayActorError, DeploymentUnavailableError):
            raise ApiError(503, "unavailable", "the model is restarting; retry shortly", retry_after_s=5) from None
        return np.asarray(prob, np.float32)
