"""Synthetic catalog photos for the benches: varied 1024×768 JPEGs made from the bundled samples.

Each photo is a random crop of a sample (flipped half the time, brightness shifted), so a catalog
of thousands is not thousands of copies of five files. Photo i depends only on (seed, i), so any
subset can be made in parallel and reproduced.
"""

from __future__ import annotations

import os
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "pipelines" / "samples"
WIDTH, HEIGHT = 1024, 768


def make_photo(i: int, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    rng = np.random.default_rng(seed + i)
    photos = sorted(SAMPLES.glob("*.jpg"))
    img = cv2.imread(str(photos[i % len(photos)]), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    cw = min(w, h * width / height) * rng.uniform(0.8, 1.0)
    ch = cw * height / width
    x, y = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
    crop = img[y:y + int(ch), x:x + int(cw)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return np.clip(out + int(rng.integers(-12, 13)), 0, 255).astype(np.uint8)


def _write_one(args) -> str:
    i, folder, seed = args
    path = Path(folder) / f"img_{i:05d}.jpg"
    cv2.imwrite(str(path), make_photo(i, seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return str(path)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write n photos (img_00000.jpg …) into folder, using every core."""
    folder.mkdir(parents=True, exist_ok=True)
    with Pool(min(os.cpu_count() or 1, max(1, n))) as pool:
        return [Path(p) for p in pool.map(_write_one, [(i, str(folder), seed) for i in range(n)], chunksize=64)]
