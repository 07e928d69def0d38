"""The teacher of `matting train`: one model, or the mean of several, each with its own TTA.

A teacher is a tuple of RuntimeConfigs (model, weights, runtime, tta), one per member. Each member
sees the photo as it does in a job: `model_input` with its own spec's resize filter, at its own
input size; its alpha (after its TTA) is resized to the cache size; the teacher's alpha is the mean
of the members'. The cached photo the student trains on is made with the first member's filter,
which the student's spec records.

Which teacher to use is chosen on the teachers' own figures on ../shared/eval (bench/teacher.py,
bench/RESULTS.md): the eval sets pick the teacher, never the student's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from model.config import RuntimeConfig
from model.specs import ModelSpec
from model.tta import predict as tta_predict
from postproc import model_input
from postproc.decode import DecodedImage


@dataclass(frozen=True)
class Teacher:
    members: tuple[RuntimeConfig, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a teacher needs at least one model")
        object.__setattr__(self, "members", tuple(self.members))

    @classmethod
    def parse(cls, models: str, *, tta: str = "none", runtime: str = "auto", device: str = "auto",
              threads: int | None = None) -> Teacher:
        """'u2net,u2netp' → the mean of u2net and u2netp, each run with TTA mode `tta`."""
        names = [m.strip() for m in str(models).split(",") if m.strip()]
        if not names:
            raise ValueError(f"--teacher names no model: {models!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"--teacher names a model twice: {models!r}")
        return cls(tuple(RuntimeConfig(model=n, runtime=runtime, device=device, threads=threads, tta=tta)
                         for n in names))

    @property
    def version(self) -> str:
        """What made the cached alphas: every member's version and TTA. One plain member keeps its
        own version, so caches made before ensembles existed stay valid."""
        return "+".join(m.model_version for m in self.members)

    @property
    def preprocess(self):
        """The filter and pre-shrink of the cached photos: the first member's."""
        return self.members[0].spec.preprocess

    @property
    def label(self) -> str:
        tta = {m.tta for m in self.members}
        return ",".join(m.model for m in self.members) + ("" if tta == {"none"} else f" (tta {'/'.join(sorted(tta))})")

    def open(self) -> OpenTeacher:
        from model.runtimes import create_runtime

        # The teacher's alphas are the student's targets, cached once: they are made in FP32
        # wherever it runs, never with the INT8 file `auto` picks on a VNNI/AMX CPU or the FP16
        # `auto` picks on CUDA (the cache's version names neither, and both change the alphas a
        # little: U²-Netp's folded biases reach 1,361). FP32 costs little next to training.
        members = [m.replace(precision="fp32") if m.precision == "auto" else m for m in self.members]
        return OpenTeacher(self, [create_runtime(m) for m in members])


class OpenTeacher:
    """A teacher with its runtimes loaded (once; reused for every batch)."""

    def __init__(self, teacher: Teacher, runtimes: list):
        self.teacher, self.runtimes = teacher, runtimes

    def member_alphas(self, photos: Sequence[DecodedImage], size: int) -> list[np.ndarray]:
        """Per member, (N, size, size) float32 alphas in [0, 1] of decoded `photos`."""
        out = []
        for cfg, rt in zip(self.teacher.members, self.runtimes):
            spec: ModelSpec = rt.spec
            x = np.stack([model_input(p, spec.preprocess) for p in photos])
            alphas = tta_predict(rt, x, cfg.tta)
            out.append(np.stack([resize_alpha(a, size) for a in alphas]))
        return out

    def mat(self, photos: Sequence[DecodedImage], size: int) -> np.ndarray:
        """(N, size, size) float32: the mean of the members' alphas."""
        return combine(self.member_alphas(photos, size))


def combine(member_alphas: Sequence[np.ndarray]) -> np.ndarray:
    """The ensemble's alpha: the plain mean of its members' (one place, shared by training and bench/teacher.py)."""
    return np.mean(np.stack(member_alphas), axis=0).astype(np.float32)


def resize_alpha(alpha: np.ndarray, size: int) -> np.ndarray:
    """A model-size alpha to the cache's size (bilinear: the teacher's alpha is smooth at this scale)."""
    if alpha.shape == (size, size):
        return alpha.astype(np.float32)
    return cv2.resize(alpha.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
