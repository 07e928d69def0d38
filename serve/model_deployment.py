"""The model replica: batched inference with `@serve.batch`, nothing else.

It receives model-sized (H, W, 3) uint8 inputs (the ingress decodes and resizes) and returns
(H, W) float16 probabilities (the ingress post-processes), so the only work on this replica is the
network. Inference itself runs in a worker thread: the replica's event loop keeps queueing the next
batch and answering health checks while a batch runs.

Batch size and wait come from `user_config` (serve/config.yaml); Serve calls `reconfigure` with it
at start and on every config change, without restarting the replica.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from model.preprocess import probabilities_to_ship

log = logging.getLogger("ray.serve")


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.02, ge=0, le=5)


@serve.deployment(
    # Defaults only: serve/config.yaml overrides every one of them.
    max_ongoing_requests=16,
    max_queued_requests=64,
    user_config=BatchConfig().model_dump(),
    ray_actor_options={"num_cpus": 1},
)
class MattingModel:
    def __init__(self, config, **fields):
        """`config`: a model.config.RuntimeConfig (AppArgs.runtime_configs), or a model name with its fields."""
        from model.runtimes import create_runtime

        self.runtime = create_runtime(config, **fields)
        self.batch_config = BatchConfig()
        log.warning("model replica ready: %s", self.runtime.describe())

    def reconfigure(self, user_config: dict) -> None:
        cfg = BatchConfig.model_validate(user_config or {})
        for method in (self.predict, self.predict_flip):
            method.set_max_batch_size(cfg.max_batch_size)
            method.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.batch_config = cfg
        log.info("batching: max_batch_size=%d batch_wait_timeout_s=%g", cfg.max_batch_size, cfg.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.stack(images)
        prob = await asyncio.to_thread(self.runtime.predict, batch)
        return list(probabilities_to_ship(prob, self.runtime.spec.preprocess.upsample))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict_flip(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """`predict` with flip TTA (model/tta.py): N requests' images and their mirror images in one call.
        Its own batch queue, so a batch never mixes modes and `predict` stays what it was."""
        from model.tta import predict as tta_predict

        prob = await asyncio.to_thread(tta_predict, self.runtime, np.stack(images), "flip")
        return list(probabilities_to_ship(prob, self.runtime.spec.preprocess.upsample))

    def describe(self) -> dict:
        spec = self.runtime.spec
        return {"name": spec.name, "version": spec.version, "input_size": list(self.runtime.input_size),
                "runtime": self.runtime.name, "device": self.runtime.device, "precision": self.runtime.precision,
                **self.batch_config.model_dump()}

    async def check_health(self) -> None:
        """Serve's periodic health check: the model must answer a real (small) inference, sanely."""
        h, w = self.runtime.input_size
        probe = np.full((1, h, w, 3), 128, np.uint8)
        probe[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 230
        out = await asyncio.to_thread(self.runtime.predict, probe)
        if out.shape != (1, h, w) or not np.isfinite(out).all() or out.min() < 0 or out.max() > 1:
            raise RuntimeError(f"the model answered a health probe with {out.shape} {out.dtype} "
                               f"in [{out.min():.3g}, {out.max():.3g}], expected (1, {h}, {w}) in [0, 1]")
