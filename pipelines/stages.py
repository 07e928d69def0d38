"""The batch job's stages as plain callables: each can be tested without a cluster.

Rows carry an `error` string from the stage that failed onwards; later stages pass such rows
through untouched, so every input reaches the manifest exactly once, with its reason.
Ray hands batches over as read-only views: stages build new arrays, never write into them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import numpy as np

from model.tta import predict as tta_predict
from postproc import DecodeError, PostprocParams, decode_image, model_input
from postproc.alpha import bounding_box
from postproc.render import compose_and_encode, refine_alpha
from pipelines.metrics import record_row
from pipelines.storage import Location, output_key

log = logging.getLogger(__name__)

# Placeholders keep the block schema uniform for rows that failed before they had pixels.
_NO_PIXELS = np.zeros((1, 1, 3), np.uint8)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


class InputRefused(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _fetch(key: str, size: int | None, source: Location, max_bytes: int) -> bytes:
    try:
        output_key(key, "")  # a key that could escape DEST is refused before anything is read
    except ValueError as e:
        raise InputRefused("unsafe_key", str(e)) from None
    try:
        if size is None or size < 0:  # from an input manifest: ask the store before reading
            size = source.fs.get_file_info(source.path(key)).size or 0
        if size > max_bytes:
            raise InputRefused("too_large", f"input is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB")
        return source.read(key)
    except (OSError, ValueError) as e:  # gone since listing, permissions, an S3 error after retries
        raise InputRefused("read_failed", f"could not read input: {e}") from None


def read_input(row: dict, *, source: Location, max_bytes: int, dest: Location | None = None) -> dict:
    """Stage 1: fetch the bytes of one key (or find that its existing output can be reused)."""
    t0 = time.perf_counter()
    key, listed_size = row["key"], row.get("size")
    out = {"source_key": key, "input_etag": row.get("etag") or "", "error": "", "error_reason": "",
           "reused_output_key": "", "sha256": ""}
    try:
        data = _fetch(key, listed_size, source, max_bytes)
        out["sha256"] = hashlib.sha256(data).hexdigest()
        size = len(data)
    except InputRefused as e:
        out.update(error=str(e), error_reason=e.reason)
        data, size = b"", max(int(listed_size or 0), 0)
        if e.reason == "too_large" and size == 0:
            size = source.fs.get_file_info(source.path(key)).size or 0
    prev_out = row.get("prev_output_key") or ""
    if data and prev_out and out["sha256"] == row.get("prev_sha256") and dest is not None and dest.exists(prev_out):
        out["reused_output_key"] = prev_out  # same bytes, model and parameters: nothing to redo
        data = b""
    out.update(data=data, size_bytes=size, t_read=time.perf_counter() - t0)
    return out


def _skip(row: dict) -> bool:
    return bool(row["error"] or row["reused_output_key"])


def decode_input(row: dict, *, input_size: tuple[int, int], max_pixels: int) -> dict:
    """Stage 2: bytes → full-resolution pixels (RGB, or RGBA when the input is transparent) + model input."""
    t0 = time.perf_counter()
    out = {k: v for k, v in row.items() if k != "data"}
    pixels, small, width, height = _NO_PIXELS, np.zeros((*input_size, 3), np.uint8), 0, 0
    if not _skip(row):
        try:
            img = decode_image(row["data"], max_pixels=max_pixels)
            pixels = img.rgb if img.alpha is None else np.dstack([img.rgb, img.alpha])
            small = model_input(img, input_size)
            width, height = img.width, img.height
        except DecodeError as e:
            out.update(error=str(e), error_reason=e.reason)
    out.update(pixels=pixels, model_input=small, width=width, height=height, t_decode=time.perf_counter() - t0)
    return out


class Predictor:
    """Stage 3: batched inference in an actor; the model is loaded once, in `__init__`."""

    def __init__(self, model: str, runtime: str = "auto", device: str = "auto", weights: str | None = None,
                 s3_endpoint: str | None = None, threads: int | None = None, providers: str | None = None,
                 trt_cache_dir: str | None = None, torch_graph: str = "auto", tta: str = "none"):
        from model.runtime import create_runtime
        from model.tta import check_mode

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.runtime = create_runtime(model, runtime=runtime, device=device, weights=weights,
                                      s3_endpoint=s3_endpoint, threads=threads, providers=providers,
                                      trt_cache_dir=trt_cache_dir, torch_graph=torch_graph)
        self.tta = check_mode(tta)
        self.node_id = _node_id()
        # Logged once per actor, so a run's log says where and how inference ran.
        log.warning("inference actor ready on node %s: %s tta=%s", self.node_id[:12], self.runtime.describe(), tta)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["source_key"])
        ok = np.asarray([not (e or r) for e, r in zip(batch["error"], batch["reused_output_key"])], bool)
        h, w = self.runtime.input_size
        prob = np.zeros((n, h, w), np.float16)
        t0 = time.perf_counter()
        if ok.any():
            prob[ok] = tta_predict(self.runtime, np.asarray(batch["model_input"])[ok], self.tta).astype(np.float16)
        per_image = (time.perf_counter() - t0) / max(int(ok.sum()), 1)
        out = {k: v for k, v in batch.items() if k != "model_input"}
        out.update(prob=prob, t_infer=np.where(ok, per_image, 0.0), inference_node=np.full(n, self.node_id),
                   device=np.full(n, self.runtime.device), precision=np.full(n, self.runtime.precision))
        return out


UNSURE_LOW, UNSURE_HIGH = 0.05, 0.95


def uncertain_fraction(prob: np.ndarray) -> float:
    """Share of the model's probabilities strictly between 0.05 and 0.95: a confident model says 0 or 1
    almost everywhere but along the subject's edge. Taken at the model's input size, before
    post-processing, so feathering or refinement settings do not change it."""
    p = np.asarray(prob)
    return float(np.count_nonzero((p > UNSURE_LOW) & (p < UNSURE_HIGH))) / max(p.size, 1)


def render_output(row: dict, *, dest: Location, params: PostprocParams, model_name: str,
                  model_version: str, background: np.ndarray | None = None) -> dict:
    """Stage 4: post-process, encode and write one output atomically; return its manifest row."""
    t0 = time.perf_counter()
    key = row["source_key"]
    error, reason = row["error"], row["error_reason"]
    out_key, bbox = "", None
    t_post = t_encode = t_write = 0.0
    uncertain = None
    if not error and row["reused_output_key"]:
        out_key = row["reused_output_key"]
    elif not error:
        try:
            out_key = output_key(key, params.extension)
        except ValueError as e:
            error, reason = str(e), "unsafe_key"
    if not error and not row["reused_output_key"]:
        pixels = np.asarray(row["pixels"])
        rgb, in_alpha = (pixels[..., :3], pixels[..., 3]) if pixels.shape[2] == 4 else (pixels, None)
        alpha = refine_alpha(np.asarray(row["prob"], np.float32), rgb.shape[0], rgb.shape[1], params, in_alpha,
                             rgb=rgb)
        uncertain = uncertain_fraction(row["prob"])
        bbox = bounding_box(alpha)
        t_post = time.perf_counter() - t0
        t1 = time.perf_counter()
        data = compose_and_encode(rgb, alpha, params, background)
        t_encode = time.perf_counter() - t1
        t1 = time.perf_counter()
        try:
            dest.write_atomic(out_key, data)
        except OSError as e:
            error, reason, out_key = f"could not write output: {e}", "write_failed", ""
        t_write = time.perf_counter() - t1
    left, top, bw, bh = bbox if bbox else (-1, -1, 0, 0)
    result = {
        "source_key": key,
        "output_key": out_key,
        "status": "error" if error else "ok",
        "error": error,
        "error_reason": reason,
        "size_bytes": int(row["size_bytes"]),
        "input_etag": row["input_etag"],
        "sha256": row["sha256"],
        "width": int(row["width"]),
        "height": int(row["height"]),
        "model": model_name,
        "model_version": model_version,
        "params_hash": params.params_hash(),
        "params_json": params.to_json(),  # the effective values the hash was taken of
        "bbox_left": left, "bbox_top": top, "bbox_width": bw, "bbox_height": bh,
        "t_read": float(row["t_read"]),
        "t_decode": float(row["t_decode"]),
        "t_infer": float(row.get("t_infer", 0.0)),
        "t_postprocess": t_post,
        "t_encode": t_encode,
        "t_write": t_write,
        "inference_node": str(row.get("inference_node", "")),
        "worker_node": _node_id(),
        "worker_pid": os.getpid(),
        "device": str(row.get("device", "")),
        "reused": bool(row["reused_output_key"]),
        "uncertain_fraction": uncertain,
    }
    record_row(result)
    return result
