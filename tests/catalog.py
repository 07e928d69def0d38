"""Test catalogs made of real photos (../shared/train when present, else the bundled samples),
plus a few corrupt files, and the checks every job test applies to its outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SHARED_TRAIN = REPO.parent / "shared" / "train"
SAMPLES = REPO / "pipelines" / "samples"


def real_photos(n: int) -> list[tuple[str, bytes]]:
    """n real photos as (name, JPEG bytes): products, objects and people from the training pool.

    Without ../shared, the five bundled samples are cropped and flipped into n distinct photos.
    """
    if SHARED_TRAIN.is_dir():
        pools = [sorted((SHARED_TRAIN / d).glob("*.jpg")) for d in
                 ("clothing_cc0", "caltech101_objects", "ccp_fullbody/image")]
        picked = []
        i = 0
        while len(picked) < n:
            pool = pools[i % len(pools)]
            picked.append(pool[(i // len(pools)) * 7 % len(pool)])
            i += 1
        return [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in picked]
    out = []
    samples = sorted(SAMPLES.glob("*.jpg"))
    for i in range(n):
        img = cv2.imread(str(samples[i % len(samples)]))
        h, w = img.shape[:2]
        k = i // len(samples)
        img = img[k * 5 % (h // 4):, k * 7 % (w // 4):]
        if k % 2:
            img = img[:, ::-1]
        out.append((f"sample{i:03d}.jpg", cv2.imencode(".jpg", img)[1].tobytes()))
    return out


def corrupt_files() -> dict[str, bytes]:
    jpeg = real_photos(1)[0][1]
    return {
        "broken/empty.jpg": b"",
        "broken/truncated.jpg": jpeg[: len(jpeg) // 3],
        "broken/not-an-image.jpg": b"this is a text file, not a JPEG\n" * 10,
    }


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write {relative key: bytes} under root (folders made as needed); returns root."""
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


def catalog(n_real: int = 30) -> dict[str, bytes]:
    """key → bytes: real photos spread over nested folders, plus the corrupt files."""
    files = {}
    for i, (name, data) in enumerate(real_photos(n_real)):
        files[f"photos/{'ab'[i % 2]}/{name}"] = data
    files.update(corrupt_files())
    return files


def check_outputs(files: dict[str, bytes], manifest_rows: list[dict], read_output) -> None:
    """Every input has exactly one row; every ok output decodes, matches its input's size and has a subject."""
    keys = sorted(r["source_key"] for r in manifest_rows)
    assert keys == sorted(files), "manifest must hold exactly one row per input"
    by_key = {r["source_key"]: r for r in manifest_rows}
    for key in set(corrupt_files()) & set(files):
        row = by_key[key]
        assert row["status"] == "error" and row["error"] and row["output_key"] == "", row
    for key, data in files.items():
        if key in corrupt_files():
            continue
        row = by_key[key]
        assert row["status"] == "ok", row
        assert row["output_key"] == key.rsplit(".", 1)[0] + ".png"
        src = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out = cv2.imdecode(np.frombuffer(read_output(row["output_key"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert out is not None and out.ndim == 3 and out.shape[2] == 4, key
        assert out.shape[:2] == src.shape[:2] == (row["height"], row["width"]), key
        alpha = out[..., 3]
        fg = float((alpha > 127).mean())
        # A photo with a subject: some opaque and some transparent area, not an all-or-nothing matte.
        assert 0.01 < fg < 0.99 and alpha.max() >= 200, f"{key}: foreground fraction {fg:.3f}"
        assert row["size_bytes"] == len(data)


def read_parquet_rows(fs, path: str) -> list[dict]:
    return pq.read_table(path, filesystem=fs).to_pylist()


def png_bytes(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


