"""The GPU data path: JPEG decode, model-input resize and post-processing on the inference GPU.

The CPU path (pipelines/batch/stages.py) decodes every image on a CPU task for the model input, and
decodes it once more where the output is rendered. On a GPU node that CPU work caps throughput
(issue 14: ~31 ms of one core per 1024×768 image in the plain loop), so here:

    decode_or_defer (CPU task)  baseline JPEGs: a header check only (~0.02 ms); the bytes travel on.
                                Anything else (PNG, WebP, CMYK, progressive, EXIF-rotated, over the
                                pixel limit, corrupt) is decoded by today's decoder, with its error rows.
    GpuPredictor (the actor)    the deferred JPEGs: nvJPEG in one batch (torchvision.io.decode_jpeg);
                                any it refuses go through the CPU decoder, with the same error rows;
                                the model input is resized on the GPU with the spec's filter; inference;
                                then alpha upsampling, threshold, erosion, feathering, crop, maximum size
                                and composition on the GPU (pipelines/batch/torch_ops.py). Out comes the
                                picture to encode; the other rows leave with their probabilities.
    render_output (CPU task)    encodes and writes (and renders the other rows the CPU way).

Refinement (pymatting) and decontamination have no GPU twin: with them the job takes the CPU
path (gpu_eligible), at the CPU path's cost per image (docs/operations.md).
With `device="cpu"` the same code runs on CPU tensors (the CI tests); torchvision is then not
needed, since the CPU decoder takes every deferred JPEG.
"""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
from PIL import Image

from model.preprocess import probabilities_to_ship
from model.tta import predict as tta_predict
from pipelines.batch.stages import Predictor, _skip, decode_input, uncertain_fraction
from postproc import DecodeError, PostprocParams, decode_image, model_input
from postproc.decode import DecodedImage

log = logging.getLogger(__name__)

# Placeholders keep each column a tensor of one rank where a row has no real value.
_NO_INPUT = np.zeros((1, 1, 3), np.uint8)
_NO_PROB = np.zeros((1, 1), np.float16)
_NO_PICTURE = np.zeros((1, 1, 1), np.uint8)


def gpu_decodable(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) when nvJPEG can take these bytes as they are, else None (the CPU decoder takes them).

    Baseline YCbCr or greyscale JPEGs without an EXIF rotation, within the pixel limit: the rest
    (CMYK, Adobe RGB transforms, progressive, rotated, too large, unreadable) keeps today's decoder
    and its error rows. Reads the header only.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning: the CPU decoder says why
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if (im.format != "JPEG" or im.mode not in ("RGB", "L") or w * h > max_pixels
                    or im.info.get("progressive") or im.info.get("progression") or "adobe" in im.info):
                return None
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: Pillow's exif_transpose does it
                return None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None
    return w, h


def decode_or_defer(row: dict, *, preprocess, max_pixels: int) -> dict:
    """Stage 2 of the GPU path: defer baseline JPEGs to the actor's nvJPEG, decode the rest (decode_input)."""
    t0 = time.perf_counter()
    size = None if _skip(row) else gpu_decodable(row["data"], max_pixels)
    if size is None:
        out = decode_input(row, preprocess=preprocess, max_pixels=max_pixels)
        out["gpu_decode"] = False
        return out
    out = dict(row)
    out.update(model_input=_NO_INPUT, width=size[0], height=size[1], gpu_decode=True,
               t_decode=time.perf_counter() - t0)
    return out


GPU_PATH_SETTINGS = ("auto", "on", "off")


def gpu_eligible(params: PostprocParams) -> tuple[bool, str]:
    """Whether post-processing with these parameters can run on the GPU, and why not when it cannot."""
    if params.refine != "none":
        return False, f"refine={params.refine} (pymatting) runs on the CPU"
    if params.decontaminate and not params.output.matte:
        return False, "decontamination (pymatting) runs on the CPU"
    return True, ""


def use_gpu_path(setting: str, pool_gpus: float, params: PostprocParams) -> bool:
    """Whether the job takes the GPU path. auto: on GPU pools, where the parameters allow and
    torchvision (nvJPEG) is installed; on: always, also on CPU tensors (tests, bench); off: never."""
    if setting not in GPU_PATH_SETTINGS:
        raise ValueError(f"gpu_path must be one of {', '.join(GPU_PATH_SETTINGS)}, got {setting!r}")
    ok, why = gpu_eligible(params)
    if setting == "off" or (setting == "auto" and not pool_gpus):
        return False
    if not ok:
        if setting == "on":
            raise ValueError(f"--gpu-path on: {why}; use --gpu-path auto or off")
        log.warning("GPU pool, but post-processing takes the CPU path: %s (costs throughput: docs/operations.md)",
                    why)
        return False
    if setting == "auto":
        from importlib.util import find_spec

        if find_spec("torchvision") is None:
            log.warning("GPU pool, but torchvision (nvJPEG) is not installed: decoding and post-processing "
                        "take the CPU path")
            return False
    return True


class JpegDecoder:
    """Batches of JPEG bytes → (3, H, W) uint8 tensors on `device` through nvJPEG; None where it fails."""

    def __init__(self, device: str):
        self.device = device
        self.why_not = ""
        self._decode = None
        if device != "cuda":
            self.why_not = f"nvJPEG needs CUDA (device {device})"
            return
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError as e:  # noqa: F841 - the reason is logged once by the actor
            self.why_not = f"torchvision is not importable ({e})"
            return
        self._decode, self._mode = decode_jpeg, ImageReadMode.RGB

    @property
    def available(self) -> bool:
        return self._decode is not None

    def __call__(self, datas: list[bytes]) -> list:
        if not self.available or not datas:
            return [None] * len(datas)
        import torch

        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        try:  # one call for the batch; it returns nothing when any image fails, so then one by one
            return list(self._decode(tensors, mode=self._mode, device=self.device))
        except RuntimeError:
            out = []
            for t in tensors:
                try:
                    out.append(self._decode(t, mode=self._mode, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out


class GpuPredictor(Predictor):
    """Stage 3 of the GPU path: decode the deferred JPEGs, infer, post-process them on the device.

    `post_device` is where decoding and post-processing run: the runtime's device by default
    (cuda on GPU nodes); "cpu" runs the same code on CPU tensors. `decoder` replaces nvJPEG (tests).
    """

    def __init__(self, config, s3_endpoint: str | None = None, *, params: PostprocParams, max_pixels: int,
                 background: np.ndarray | None = None, post_device: str | None = None, decoder=None):
        super().__init__(config, s3_endpoint)
        import torch

        from pipelines.batch import torch_ops

        ok, why = gpu_eligible(params)
        if not ok:
            raise ValueError(f"the GPU path cannot render these parameters: {why}")
        self.torch, self.ops = torch, torch_ops
        self.params, self.max_pixels = params, max_pixels
        self.post_device = post_device or self.runtime.device
        self.decoder = decoder or JpegDecoder(self.post_device)
        # The spec's resize filter and pre-shrink, as model_input's numpy twin applies them.
        self.filter = torch_ops.spec_filter(self.runtime.spec.preprocess)  # an unknown one fails here
        self.preshrink = self.runtime.spec.preprocess.preshrink
        self.background = None
        if background is not None:
            self.background = self._tensor(np.asarray(background)[..., :3])
        if not self.decoder.available:
            log.warning("GPU path: JPEGs decode on this actor's CPU: %s", self.decoder.why_not)
        log.warning("GPU path on %s: decode %s, post-processing %s", self.node_id[:12],
                    "nvJPEG" if self.decoder.available else "CPU (Pillow)", self.post_device)

    def _tensor(self, hwc: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1))).to(self.post_device)

    def _decode(self, datas: list[bytes]) -> list:
        """→ per image (rgb (3, H, W), alpha (H, W) or None) on the device, or the DecodeError."""
        out = []
        for data, t in zip(datas, self.decoder(datas)):
            if t is not None:
                out.append((t, None))
                continue
            try:  # nvJPEG refused it (or is not here): today's decoder, with today's error rows
                img = decode_image(data, max_pixels=self.max_pixels)
            except DecodeError as e:
                out.append(e)
                continue
            alpha = None if img.alpha is None else self.torch.from_numpy(img.alpha).to(self.post_device)
            out.append((self._tensor(img.rgb), alpha))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, ops = self.torch, self.ops
        n = len(batch["source_key"])
        t0 = time.perf_counter()
        errors, reasons = list(batch["error"]), list(batch["error_reason"])
        width, height = np.array(batch["width"]), np.array(batch["height"])
        deferred = [i for i in range(n)
                    if batch["gpu_decode"][i] and not (batch["error"][i] or batch["reused_output_key"][i])]
        images: dict[int, tuple] = {}
        model_inputs = [np.asarray(batch["model_input"][i]) for i in range(n)]
        with torch.inference_mode():
            for i, got in zip(deferred, self._decode([batch["data"][i] for i in deferred])):
                if isinstance(got, DecodeError):  # the row the CPU path gives: no size, no bytes
                    errors[i], reasons[i], width[i], height[i] = str(got), got.reason, 0, 0
                    continue
                rgb, alpha = got
                height[i], width[i] = rgb.shape[1:]  # the pixels' size, as the CPU path records it
                images[i] = (rgb, alpha)
                if self.filter is not None and self.filter.startswith("pil_"):
                    # The torch twin of Pillow's filters is not yet exact on every photo (torch_ops._pil_resize):
                    # the model input comes from the numpy reference, at the cost of a copy to the host.
                    host = DecodedImage(rgb.permute(1, 2, 0).cpu().numpy(),
                                        None if alpha is None else alpha.cpu().numpy(), "JPEG")
                    model_inputs[i] = model_input(host, self.runtime.spec.preprocess)
                else:
                    small = ops.model_input(rgb, self.runtime.input_size, alpha, self.filter, self.preshrink)
                    model_inputs[i] = small.permute(1, 2, 0).cpu().numpy()
        t_dec = (time.perf_counter() - t0) / max(len(deferred), 1)
        # Inference on every row that has an input, as Predictor does; then the deferred rows'
        # post-processing on the device, the others' probabilities for the CPU renderer.
        ok = np.asarray([not (e or r) for e, r in zip(errors, batch["reused_output_key"])], bool)
        h, w = self.runtime.input_size
        prob = np.zeros((n, h, w), np.float16)
        t1 = time.perf_counter()
        if ok.any():
            prob[ok] = probabilities_to_ship(
                tta_predict(self.runtime, np.stack([model_inputs[i] for i in np.flatnonzero(ok)]), self.tta),
                self.runtime.spec.preprocess.upsample)
        t_infer = (time.perf_counter() - t1) / max(int(ok.sum()), 1)
        t1 = time.perf_counter()
        pictures, probs = [_NO_PICTURE] * n, [_NO_PROB if i in images else prob[i] for i in range(n)]
        bbox = np.full((n, 4), -1, np.int64)
        rendered = np.zeros(n, bool)
        with torch.inference_mode():
            for i, (rgb, alpha) in images.items():
                p = torch.from_numpy(prob[i].astype(np.float32)).to(self.post_device)
                a = ops.refine_alpha(p, rgb.shape[1], rgb.shape[2], self.params, alpha,
                                     upsample=self.runtime.spec.preprocess.upsample)
                box = ops.bounding_box(a)
                if box is not None:
                    bbox[i] = box
                pictures[i] = ops.compose(rgb, a, self.params, self.background).cpu().numpy()
                rendered[i] = True
        t_post = (time.perf_counter() - t1) / max(len(images), 1)
        out = {k: v for k, v in batch.items() if k not in ("model_input", "gpu_decode")}
        # The bytes were needed only to decode here: rendered rows leave without them.
        out["data"] = _column([b"" if rendered[i] or errors[i] else batch["data"][i] for i in range(n)])
        out["t_decode"] = np.where(rendered, np.asarray(batch["t_decode"], float) + t_dec, batch["t_decode"])
        out.update(error=np.array(errors, dtype=object), error_reason=np.array(reasons, dtype=object),
                   width=width, height=height,
                   prob=_column(probs), picture=_column(pictures), rendered=rendered, bbox=bbox,
                   # the rendered rows leave their probabilities here: the manifest's confidence is taken now
                   uncertain=np.array([uncertain_fraction(prob[i]) if rendered[i] else np.nan for i in range(n)]),
                   t_postprocess=np.where(rendered, t_post, 0.0), t_infer=np.where(ok, t_infer, 0.0),
                   inference_node=np.full(n, self.node_id), device=np.full(n, self.runtime.device),
                   precision=np.full(n, self.runtime.precision))
        return out


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """A column of per-row arrays of one rank and varying shape (Ray stores a variable-shaped tensor)."""
    col = np.empty(len(arrays), dtype=object)
    col[:] = arrays
    return col
