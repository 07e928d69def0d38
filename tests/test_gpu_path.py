"""The GPU data path (pipelines/batch/gpu_path.py) run on CPU tensors, against the CPU path on the same inputs."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from model.config import RuntimeConfig
from model.specs import get_spec

from catalog import corrupt_files, real_photos, write_tree
from pipelines.batch.gpu_path import GpuPredictor, JpegDecoder, decode_or_defer, gpu_decodable, use_gpu_path
from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
from pipelines.storage import open_location
from postproc import PostprocParams

MAX_PIXELS = 10**8


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def odd_inputs() -> dict[str, bytes]:
    """What nvJPEG must not take (and a greyscale JPEG, which it may)."""
    photo = Image.open(io.BytesIO(real_photos(1)[0][1])).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: Pillow turns it upright, nvJPEG would not
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 255).point(lambda v: v))
    a = np.asarray(rgba).copy()
    a[:, : a.shape[1] // 4, 3] = 0
    png = io.BytesIO()
    Image.fromarray(a).save(png, "PNG")
    return {"odd/progressive.jpg": _jpeg(photo, progressive=True), "odd/cmyk.jpg": _jpeg(photo.convert("CMYK")),
            "odd/rotated.jpg": _jpeg(photo, exif=exif.tobytes()), "odd/transparent.png": png.getvalue(),
            "odd/grey.jpg": _jpeg(photo.convert("L"))}


def test_only_plain_baseline_jpegs_are_deferred_to_the_gpu():
    odd = odd_inputs()
    assert gpu_decodable(real_photos(1)[0][1], MAX_PIXELS)
    assert gpu_decodable(odd["odd/grey.jpg"], MAX_PIXELS)
    for key in ("odd/progressive.jpg", "odd/cmyk.jpg", "odd/rotated.jpg", "odd/transparent.png"):
        assert gpu_decodable(odd[key], MAX_PIXELS) is None, key
    for key, data in corrupt_files().items():
        if key != "broken/truncated.jpg":  # its header is whole: the decoder finds the damage
            assert gpu_decodable(data, MAX_PIXELS) is None, key
    assert gpu_decodable(real_photos(1)[0][1], 1000) is None  # over the limit: the CPU decoder says why


def test_the_job_takes_the_gpu_path_only_where_it_can():
    plain = PostprocParams.create()
    assert not use_gpu_path("auto", 0, plain)  # CPU-only nodes keep today's path
    assert use_gpu_path("on", 0, plain)
    assert not use_gpu_path("off", 1, plain)
    assert not use_gpu_path("auto", 1, PostprocParams.create(refine="guided"))
    with pytest.raises(ValueError, match="pymatting"):
        use_gpu_path("on", 1, PostprocParams.create(decontaminate=True))
    with pytest.raises(ValueError, match="auto, on, off"):
        use_gpu_path("always", 1, plain)


def test_nvjpeg_is_asked_for_the_batch_then_each_image():
    dec = JpegDecoder("cpu")
    assert not dec.available and "CUDA" in dec.why_not and dec([b"x"]) == [None]
    calls = []

    def fake(x, mode, device):  # fails a whole batch holding a bad image, as torchvision does
        calls.append(len(x) if isinstance(x, list) else 1)
        items = x if isinstance(x, list) else [x]
        if any(bytes(t[:2].tolist()) != b"\xff\xd8" for t in items):
            raise RuntimeError("nvjpeg: bad")
        decoded = [torch.zeros(3, 2, 2, dtype=torch.uint8) for _ in items]
        return decoded if isinstance(x, list) else decoded[0]

    dec._decode, dec._mode = fake, "RGB"
    out = dec([b"\xff\xd8a", b"bad", b"\xff\xd8b"])
    assert calls == [3, 1, 1, 1] and out[1] is None and out[0].shape == out[2].shape == (3, 2, 2)


class PillowAsNvjpeg:
    """Stands in for nvJPEG on machines without CUDA: decodes with Pillow into tensors, refuses some."""

    available = True

    def __init__(self, refuse: set[bytes]):
        self.refuse, self.seen = refuse, 0

    def __call__(self, datas):
        self.seen += len(datas)
        return [None if d in self.refuse else self._decode(d) for d in datas]

    @staticmethod
    def _decode(data: bytes):
        try:  # nvJPEG's failures come back as None, as JpegDecoder returns them
            return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1).copy())
        except OSError:
            return None


def _nbytes(v) -> int:
    """Bytes a column holds: each element of an object column (bytes, arrays), else the array's own."""
    if isinstance(v, (bytes, str)):
        return len(v)
    v = np.asarray(v)
    return sum(_nbytes(x) for x in v) if v.dtype == object else v.nbytes


def _run(tmp_path, files, params, gpu: bool, decoder=None):
    src = open_location(str(tmp_path / "src"))
    dst = open_location(str(tmp_path / ("gpu" if gpu else "cpu")), create=True)
    decode = decode_or_defer if gpu else decode_input
    rows = [decode(read_input({"key": k, "size": -1}, source=src, max_bytes=10**8), preprocess=get_spec("u2netp").preprocess,
                   max_pixels=MAX_PIXELS) for k in sorted(files)]
    if gpu:
        actor = GpuPredictor(RuntimeConfig("u2netp", device="cpu"), params=params, max_pixels=MAX_PIXELS, post_device="cpu",
                             decoder=decoder)
    else:
        actor = Predictor(RuntimeConfig("u2netp", device="cpu"))
    batch = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        if k == "data" or (k == "model_input" and len({v.shape for v in values}) > 1):
            batch[k] = np.empty(len(values), dtype=object)  # as Ray hands over a variable-shaped column
            batch[k][:] = values
        else:
            batch[k] = np.array(values)
    into_actor = sum(_nbytes(v) for v in batch.values())
    out = actor(batch)
    manifest = {m["source_key"]: m for m in
                (render_output({k: out[k][i] for k in out}, dest=dst, params=params, model_name="u2netp",
                               model_version="v", upsample=actor.runtime.spec.preprocess.upsample)
                 for i in range(len(rows)))}
    return manifest, dst, into_actor


@pytest.mark.parametrize("kwargs", [dict(), dict(background="#20408080", crop=True, erode=2,
                                                 feather=1.0, max_size=300)],
                         ids=["plain", "options"])
def test_gpu_path_on_cpu_tensors_matches_the_cpu_path(tmp_path, kwargs):
    files = {f"a/{name}": data for name, data in real_photos(2)}
    files.update(corrupt_files())
    files.update(odd_inputs())
    write_tree(tmp_path / "src", files)
    params = PostprocParams.create(**kwargs)
    # nvJPEG's stand-in refuses one baseline photo: the actor decodes it on the CPU instead.
    decoder = PillowAsNvjpeg(refuse={files["a/" + real_photos(2)[1][0]]})
    cpu, cpu_dst, _ = _run(tmp_path, files, params, gpu=False)
    gpu, gpu_dst, _ = _run(tmp_path, files, params, gpu=True, decoder=decoder)
    assert decoder.seen == 4  # the 2 photos, the greyscale JPEG and the truncated one
    assert sorted(cpu) == sorted(gpu) == sorted(files)
    for key in files:
        c, g = cpu[key], gpu[key]
        assert (c["status"], c["error_reason"], c["output_key"], c["width"], c["height"]) == \
               (g["status"], g["error_reason"], g["output_key"], g["width"], g["height"]), key
        if c["status"] != "ok":
            continue
        assert all(abs(c[f"bbox_{s}"] - g[f"bbox_{s}"]) <= 2 for s in ("left", "top", "width", "height")), key
        a = cv2.imread(str(tmp_path / "cpu" / c["output_key"]), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(tmp_path / "gpu" / g["output_key"]), cv2.IMREAD_UNCHANGED).astype(int)
        assert a.shape == b.shape, key
        assert np.abs(a - b).max() <= 2, (key, np.abs(a - b).max())  # the bound: 2/255
    assert {cpu[k]["error_reason"] for k in corrupt_files()} == {"empty", "corrupt", "unsupported_format"}


def test_gpu_path_keeps_full_resolution_pixels_out_of_the_object_store(tmp_path):
    files = {f"a/{name}": data for name, data in real_photos(2)}
    write_tree(tmp_path / "src", files)
    _, _, cpu_in = _run(tmp_path, files, PostprocParams.create(), gpu=False)
    _, _, gpu_in = _run(tmp_path, files, PostprocParams.create(), gpu=True, decoder=PillowAsNvjpeg(set()))
    compressed = sum(len(d) for d in files.values())
    assert gpu_in < compressed + 4096 < cpu_in  # bytes and bookkeeping; the CPU path adds the model input


@pytest.mark.timeout(600)
def test_gpu_path_through_ray_gives_the_cpu_paths_rows(tmp_path, ray_local):
    """The lazy chain read → defer → GpuPredictor → render on a real local Ray, on CPU tensors: Ray
    carries the mixed-shape columns (model input, probabilities, pictures) and every input gets its row."""
    from pipelines.batch.job import JobConfig, run_job
    from pipelines.manifest import read_manifest

    files = {f"a/{name}": data for name, data in real_photos(3)}
    files.update(corrupt_files())
    files.update(odd_inputs())
    write_tree(tmp_path / "src", files)
    rows = {}
    for path in ("on", "off"):
        result = run_job(JobConfig(source=str(tmp_path / "src"), dest=str(tmp_path / path), batch_size=4,
                                   gpu_path=path, stall_timeout_s=300))
        rows[path] = {r["source_key"]: r for r in
                      read_manifest(open_location(str(tmp_path / path)), result.run_id).to_pylist()}
    assert sorted(rows["on"]) == sorted(rows["off"]) == sorted(files)
    for key in files:
        on, off = rows["on"][key], rows["off"][key]
        assert (on["status"], on["error_reason"], on["width"], on["height"]) == \
               (off["status"], off["error_reason"], off["width"], off["height"]), key
        if on["status"] == "ok":
            a = cv2.imread(str(tmp_path / "on" / on["output_key"]), cv2.IMREAD_UNCHANGED).astype(int)
            b = cv2.imread(str(tmp_path / "off" / off["output_key"]), cv2.IMREAD_UNCHANGED).astype(int)
            assert np.abs(a - b).max() <= 2, key
    assert sum(r["status"] == "ok" for r in rows["on"].values()) == len(files) - 3
