"""The batch job's stages as plain callables: each can be tested without a cluster.

Rows carry an `error` string from the stage that failed onwards; later stages pass such rows
through untouched, so every input reaches the manifest exactly once, with its reason.
Ray hands batches over as read-only views: stages build new arrays, never write into them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time

import numpy as np

from model.preprocess import LEGACY_UPSAMPLE, probabilities_to_ship
from model.tta import predict as tta_predict
from postproc import DecodeError, PostprocParams, decode_image, model_input
from postproc.alpha import bounding_box
from postproc.render import compose_and_encode, encode_picture, refine_alpha
from pipelines.manifest import ManifestRow
from pipelines.metrics import record_row
from pipelines.storage import InputRefused, Location, OutputNaming, output_key, write_failure_reason
from postproc.reasons import reason as known_reason

log = logging.getLogger(__name__)


def _node_id() -> str:
    ray = sys.modules.get("ray")  # a run in this process (pipelines/batch/in_process.py) never imports Ray
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else "local"


def _planned(row: dict, source: Location, max_bytes: int, naming: OutputNaming | None, dest: Location | None
             ) -> tuple[str, bytes]:
    """The input's output key and bytes, or InputRefused: every refusal that needs no pixels comes
    before anything is read (the listing's, an unsafe or unwritable output key, a collision)."""
    key = row["key"]
    if row.get("reason"):  # the listing found it is not to be read (a FIFO, a hidden file, ...)
        raise InputRefused(row["reason"], row.get("message") or row["reason"])
    try:  # a key that could escape DEST is refused here
        out_key = naming.key(key) if naming is not None else OutputNaming("").key(key)
    except ValueError as e:
        raise InputRefused("unsafe_key", str(e)) from None
    if naming is None:
        out_key = ""  # called without the run's naming (tests, tools): the render stage decides
    elif naming.is_taken(out_key):
        raise InputRefused("output_collision", f"output key {out_key!r} is another input's current output "
                                               "(from an earlier run): not overwritten")
    elif dest is not None and (problem := dest.key_problem(out_key)):
        raise InputRefused(problem, f"output key {out_key!r}: a file name longer than DEST accepts")
    return out_key, source.read_input(key, row.get("size"), max_bytes)


def read_input(row: dict, *, source: Location, max_bytes: int, dest: Location | None = None,
               naming: OutputNaming | None = None) -> dict:
    """Stage 1: fetch the bytes of one key (or find that its existing output can be reused)."""
    t0 = time.perf_counter()
    key, listed_size = row["key"], row.get("size")
    out = {"source_key": key, "input_etag": row.get("etag") or "", "error": "", "error_reason": "",
           "reused_output_key": "", "sha256": "", "output_key": ""}
    try:
        out["output_key"], data = _planned(row, source, max_bytes, naming, dest)
        out["sha256"] = hashlib.sha256(data).hexdigest()
        size = len(data)
    except InputRefused as e:
        out.update(error=str(e), error_reason=known_reason(e.reason).name, output_key="")
        data, size = b"", max(int(listed_size or 0), 0)
        if e.reason == "too_large" and e.size is not None:
            size = e.size
    prev_out = row.get("prev_output_key") or ""
    if data and prev_out and out["sha256"] == row.get("prev_sha256") and dest is not None and dest.exists(prev_out):
        out["reused_output_key"] = prev_out  # same bytes, model and parameters: nothing to redo
        data = b""
    out.update(data=data, size_bytes=size, t_read=time.perf_counter() - t0)
    return out


def _skip(row: dict) -> bool:
    return bool(row["error"] or row["reused_output_key"])


def decode_input(row: dict, *, preprocess, max_pixels: int) -> dict:
    """Stage 2: bytes → the model input (+ the image's size). The compressed bytes stay in the row.

    `preprocess` is the model's PreprocessSpec: its input size and resize filter make the model input.
    Full-resolution pixels never travel: through the inference actor they cost 2.4 MB each way
    per 1024×768 image in the object store, while the bytes are ~0.12 MB and render_output decodes
    them once more (bench/RESULTS.md, issue 14).
    """
    t0 = time.perf_counter()
    out = dict(row)
    small, width, height = np.zeros((*preprocess.input_size, 3), np.uint8), 0, 0
    if not _skip(row):
        try:
            img = decode_image(row["data"], max_pixels=max_pixels)
            small = model_input(img, preprocess)
            width, height = img.width, img.height
        except DecodeError as e:
            out.update(error=str(e), error_reason=e.reason, data=b"")
    out.update(model_input=small, width=width, height=height, t_decode=time.perf_counter() - t0)
    return out


def full_pixels(row: dict) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The row's image decoded again where the output is rendered: (rgb, input alpha or None, seconds).

    decode_input already applied the job's pixel limit to these very bytes.
    """
    t0 = time.perf_counter()
    img = decode_image(row["data"], max_pixels=np.iinfo(np.int64).max)
    return img.rgb, img.alpha, time.perf_counter() - t0


class Predictor:
    """Stage 3: batched inference in an actor; the model is loaded once, in `__init__`.

    `config` is the job's RuntimeConfig; remote weights are fetched here, once per node, into the
    local cache (the storage layer's job: model/ reads local files only).
    """

    def __init__(self, config, s3_endpoint: str | None = None):
        t0 = time.perf_counter()
        from model.runtimes import create_runtime
        from pipelines.storage import localize_weights

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.runtime = create_runtime(localize_weights(config, s3_endpoint))
        self.tta = config.tta
        self.node_id = _node_id()
        # Logged once per actor, so a run's log says where and how inference ran, and what starting cost.
        log.info("inference actor ready on node %s in %.1f s: %s tta=%s", self.node_id[:12],
                 time.perf_counter() - t0, self.runtime.describe(), self.tta)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["source_key"])
        ok = np.asarray([not (e or r) for e, r in zip(batch["error"], batch["reused_output_key"])], bool)
        h, w = self.runtime.input_size
        prob = np.zeros((n, h, w), np.float16)
        t0 = time.perf_counter()
        if ok.any():
            prob[ok] = probabilities_to_ship(tta_predict(self.runtime, np.asarray(batch["model_input"])[ok], self.tta),
                                             self.runtime.spec.preprocess.upsample)
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
                  model_version: str, background: np.ndarray | None = None, upsample: str = LEGACY_UPSAMPLE) -> dict:
    """Stage 4: post-process, encode and write one output atomically; return its manifest row
    (a ManifestRow, as the dict Ray Data's map returns). `row` is an InFlightRow (pipelines/manifest.py);
    `upsample` is the model spec's filter for the alpha (PreprocessSpec.upsample)."""
    t0 = time.perf_counter()
    key = row["source_key"]
    error, reason = row["error"], row["error_reason"]
    out_key, bbox = "", None
    t_post = t_encode = t_write = 0.0
    uncertain = None
    if not error and row["reused_output_key"]:
        out_key = row["reused_output_key"]
    elif not error:
        try:  # the read stage decided the key; rows made without it (tests, tools) get the one-input rule
            out_key = row.get("output_key") or output_key(key, params.extension)
        except ValueError as e:
            error, reason = str(e), "unsafe_key"
    t_decode = float(row["t_decode"])
    if not error and not row["reused_output_key"] and row.get("rendered"):
        # Post-processed on the GPU (pipelines/batch/gpu_path.py): only encoding and writing are left.
        left, top, bw, bh = (int(v) for v in row["bbox"])
        bbox, t_post = ((left, top, bw, bh) if bw > 0 else None), float(row["t_postprocess"])
        uncertain = float(row["uncertain"])
        t1 = time.perf_counter()
        data = encode_picture(np.asarray(row["picture"]), params)
        t_encode = time.perf_counter() - t1
    elif not error and not row["reused_output_key"]:
        rgb, in_alpha, t_again = full_pixels(row)
        t_decode += t_again
        t0 = time.perf_counter()
        alpha = refine_alpha(np.asarray(row["prob"], np.float32), rgb.shape[0], rgb.shape[1], params, in_alpha,
                             rgb=rgb, upsample=upsample)
        uncertain = uncertain_fraction(row["prob"])
        bbox = bounding_box(alpha)
        t_post = time.perf_counter() - t0
        t1 = time.perf_counter()
        data = compose_and_encode(rgb, alpha, params, background)
        t_encode = time.perf_counter() - t1
    if not error and not row["reused_output_key"]:
        t1 = time.perf_counter()
        try:
            dest.write_atomic(out_key, data)
        except OSError as e:  # a folder where the file goes is a collision, a too-long name permanent
            error, reason, out_key = f"could not write output: {e}", write_failure_reason(e), ""
        t_write = time.perf_counter() - t1
    left, top, bw, bh = bbox if bbox else (-1, -1, 0, 0)
    result = ManifestRow(
        source_key=key,
        output_key=out_key,
        status=(known_reason(reason).status if reason else "error") if error else "ok",
        error=error,
        error_reason=reason,
        size_bytes=int(row["size_bytes"]),
        input_etag=row["input_etag"],
        sha256=row["sha256"],
        width=int(row["width"]),
        height=int(row["height"]),
        model=model_name,
        model_version=model_version,
        params_hash=params.params_hash(),
        params_json=params.to_json(),  # the effective values the hash was taken of
        bbox_left=left, bbox_top=top, bbox_width=bw, bbox_height=bh,
        t_read=float(row["t_read"]),
        t_decode=t_decode,
        t_infer=float(row.get("t_infer", 0.0)),
        t_postprocess=t_post,
        t_encode=t_encode,
        t_write=t_write,
        inference_node=str(row.get("inference_node", "")),
        worker_node=_node_id(),
        worker_pid=os.getpid(),
        device=str(row.get("device", "")),
        precision=str(row.get("precision", "")),
        reused=bool(row["reused_output_key"]),
        uncertain_fraction=uncertain,
    ).as_dict()
    record_row(result)
    return result
