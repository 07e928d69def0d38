"""Test-time augmentation (TTA): predict on the batch and on its mirror image, and average.

One implementation, shared by the batch job (the inference stage), Serve (the model replica) and
`matting eval`. It wraps any runtime's `predict`: the batch and its horizontally flipped copy go
through the network in ONE call (2N images), the flipped half is flipped back and the two alpha
maps are averaged. Each half is finished as the spec says (sigmoid, min-max) before averaging,
so the result is a mean of two alpha maps in [0, 1].

"flip" costs twice the inference of "none" per image (the network runs on 2N images); what it
gains was measured with `matting eval --tta none,flip` (bench/RESULTS.md). Multi-scale TTA was
measured too and left out (bench/RESULTS.md says why).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TTA_MODES = ("none", "flip")


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return mode


def predict_modes(runtime, images: np.ndarray, modes: Iterable[str]) -> dict[str, np.ndarray]:
    """The alpha maps of (N, H, W, 3) uint8 `images` under each TTA mode, from one `runtime.predict` call.

    Asking for "none" and "flip" together costs one 2N call, not three N calls: "none" is the
    unflipped half of what "flip" needs (this is how `matting eval` compares them side by side).
    """
    modes = [check_mode(m) for m in dict.fromkeys(modes)]
    if not modes:
        raise ValueError(f"name at least one tta mode of {', '.join(TTA_MODES)}")
    n = len(images)
    flip = "flip" in modes
    batch = np.concatenate([images, images[:, :, ::-1]]) if flip else images
    out = runtime.predict(np.ascontiguousarray(batch))
    plain = out[:n]
    result = {}
    if "none" in modes:
        result["none"] = plain
    if flip:
        result["flip"] = ((plain + out[n:, :, ::-1]) * 0.5).astype(np.float32)
    return result


def predict(runtime, images: np.ndarray, tta: str = "none") -> np.ndarray:
    """`runtime.predict(images)` under TTA mode `tta` ("none": exactly runtime.predict)."""
    if check_mode(tta) == "none":
        return runtime.predict(images)
    return predict_modes(runtime, images, [tta])[tta]


def versioned(model_version: str, tta: str) -> str:
    """The model version a manifest records: TTA changes the output, so it is part of what made it
    (and `--incremental` redoes inputs when it changes)."""
    return model_version if check_mode(tta) == "none" else f"{model_version}+tta-{tta}"
