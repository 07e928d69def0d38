"""The preprocessing contract, in one place: numpy twins and their torch twins, side by side.

What a model sees is decided by its spec (model/specs.py PreprocessSpec): the filter that shrinks
the photo to the input size, how pixels are scaled (by the image's own maximum or by 255), the
mean/std, and how the raw output becomes alpha. The numpy forms run on CPU workers, the batch job,
Serve's ingress, eval and training; the torch forms run the same arithmetic on the GPU inside
TorchRuntime (uint8 crosses the bus, not float32). tests/test_preprocess.py holds each twin
against the other, so the contract cannot drift between them.

Resize filters (PreprocessSpec.resize), all producing (h, w, 3) uint8 from any (H, W, 3) uint8:
- "area": OpenCV INTER_AREA when shrinking, INTER_LINEAR when enlarging. What every file written
  before the field existed was made with, so a spec without the field means this.
- "linear": OpenCV INTER_LINEAR, no antialiasing (samples 2×2 pixels whatever the scale).
- "pil_lanczos", "pil_bilinear", "pil_bicubic": Pillow's antialiased filters (support widened by
  the scale factor, reducing_gap=None: the exact filter, no JPEG-style draft). rembg feeds U²-Net
  Pillow's Lanczos. torch's interpolate(..., antialias=True) ports Pillow's bilinear and bicubic
  kernels (the test checks it agrees to within one grey level), so pil_bilinear/pil_bicubic are
  also "antialiased bilinear/bicubic as torch does it".

Pre-shrink (PreprocessSpec.preshrink = k > 0): Pillow's exact filters cost grows with the input's
pixels (a 24 MP photo took longer to resize than the model took to run), so an axis longer than
k × the model's takes a cheap INTER_AREA step to k × first, and the exact filter does the rest.
At k = 2 alphamatting27's scores moved by up to 2 % (MSE); the default k = 3 touches no eval photo
and still cuts a 24 MP Lanczos resize from 230 to 76 ms (bench/RESULTS.md).

Upsample filters (PreprocessSpec.upsample): how the model-size alpha is brought back to the
photo's size (postproc.alpha.to_full_resolution; its torch twin is pipelines/batch/torch_ops.py), all
from (h, w) float probabilities in [0, 1]:
- "linear": OpenCV INTER_LINEAR on the float alpha. What every spec before the field meant.
- "cubic": OpenCV INTER_CUBIC on the float alpha (clipped to [0, 1]).
- "pil_lanczos", "pil_bilinear", "pil_bicubic": Pillow's filter on the float alpha (mode "F").
- "…_u8" (e.g. "pil_lanczos_u8"): the alpha rounded to uint8 at model size first, then Pillow's
  filter on that 8-bit image, as rembg does (rembg truncates instead of rounding).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

RESIZE_FILTERS = ("area", "linear", "pil_lanczos", "pil_bilinear", "pil_bicubic")
LEGACY_RESIZE = "area"  # what a spec without a `resize` field means: the filter used before it existed
PIL_FILTERS = {"pil_lanczos": Image.Resampling.LANCZOS, "pil_bilinear": Image.Resampling.BILINEAR,
        "pil_bicubic": Image.Resampling.BICUBIC}


UPSAMPLE_FILTERS = ("linear", "cubic", "pil_lanczos", "pil_bilinear", "pil_bicubic",
                    "pil_lanczos_u8", "pil_bilinear_u8", "pil_bicubic_u8")
LEGACY_UPSAMPLE = "linear"  # what a spec without an `upsample` field means: the filter used before it existed


def check_upsample(upsample: str) -> str:
    if upsample not in UPSAMPLE_FILTERS:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_FILTERS)}, got {upsample!r}")
    return upsample


def probabilities_to_ship(prob: np.ndarray, upsample: str) -> np.ndarray:
    """Probabilities as they leave the model for the renderer (the job's inference actor, Serve's model
    replica): float16, half the bytes of float32 through the object store.

    An `_u8` upsample filter rounds the alpha to 8 bits at model size anyway (postproc.alpha
    .to_full_resolution), so the probabilities are first put on that 8-bit grid: float16 holds k/255
    to within 0.07 of a level, the renderer's rounding gives back k, and the cut-out is exactly the one
    `matting eval` scores from float32. Without it, a value within 1/4096 of a rounding boundary could
    land one level off. For the float filters, float16's steps are finer than the 8-bit matte.
    """
    prob = np.asarray(prob, np.float32)
    if check_upsample(upsample).endswith("_u8"):
        prob = np.floor(np.clip(prob, 0.0, 1.0) * 255.0 + 0.5) / 255.0  # to_full_resolution's rounding
    return prob.astype(np.float16)


def check_resize(resize: str) -> str:
    if resize not in RESIZE_FILTERS:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_FILTERS)}, got {resize!r}")
    return resize


def resize_rgb(rgb: np.ndarray, size: tuple[int, int], resize: str = LEGACY_RESIZE,
               preshrink: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8 → (h, w, 3) uint8 with the spec's filter; `size` is (h, w)."""
    check_resize(resize)
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    if resize == "area":
        interp = cv2.INTER_AREA if rgb.shape[0] >= h and rgb.shape[1] >= w else cv2.INTER_LINEAR
        return cv2.resize(rgb, (w, h), interpolation=interp)
    if resize == "linear":
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    if preshrink > 0:
        ph, pw = min(rgb.shape[0], round(preshrink * h)), min(rgb.shape[1], round(preshrink * w))
        if (ph, pw) != rgb.shape[:2]:
            rgb = cv2.resize(rgb, (pw, ph), interpolation=cv2.INTER_AREA)
    im = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(im.resize((w, h), PIL_FILTERS[resize], reducing_gap=None))


def normalize_batch(images: np.ndarray, spec) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32, scaled and standardised as the spec says."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    x = images.astype(np.float32)
    if spec.input_scale == "max":
        peak = x.reshape(len(x), -1).max(axis=1).reshape(-1, 1, 1, 1)
        x /= np.maximum(peak, 1.0)  # an all-black image stays black instead of dividing by zero
    else:
        x /= 255.0
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def normalize_batch_torch(images, spec, dtype=None):
    """Twin of normalize_batch: (N, H, W, 3) uint8 tensor → (N, 3, H, W) in `dtype`, channels_last.

    NHWC in memory is channels_last NCHW: the permute copies nothing.
    """
    import torch

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {tuple(images.shape)} {images.dtype}")
    x = images.float()
    if spec.input_scale == "max":
        x /= x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    else:
        x /= 255.0
    x = (x - torch.tensor(spec.mean, device=x.device)) / torch.tensor(spec.std, device=x.device)
    return x.permute(0, 3, 1, 2).to(dtype or torch.float32).contiguous(memory_format=torch.channels_last)


def finish_output(pred: np.ndarray, spec) -> np.ndarray:
    """(N, 1, H, W) raw output → (N, H, W) float32 alpha in [0, 1]."""
    pred = pred[:, 0].astype(np.float32)
    if spec.output_activation == "none":
        pred = 1.0 / (1.0 + np.exp(-pred))
    if spec.output_normalization == "minmax":
        lo = pred.reshape(len(pred), -1).min(axis=1).reshape(-1, 1, 1)
        hi = pred.reshape(len(pred), -1).max(axis=1).reshape(-1, 1, 1)
        pred = (pred - lo) / np.maximum(hi - lo, 1e-6)
    return np.clip(pred, 0.0, 1.0)


def finish_output_torch(pred, spec):
    """Twin of finish_output: (N, 1, H, W) raw output tensor → (N, H, W) float32 alpha in [0, 1]."""
    import torch

    pred = pred[:, 0].float()
    if spec.output_activation == "none":
        pred = torch.sigmoid(pred)
    if spec.output_normalization == "minmax":
        lo = pred.amin(dim=(1, 2), keepdim=True)
        hi = pred.amax(dim=(1, 2), keepdim=True)
        pred = (pred - lo) / (hi - lo).clamp_min(1e-6)
    return pred.clamp(0.0, 1.0)
