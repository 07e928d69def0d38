"""Training data for `matting train`: image lists, (image, alpha) pairs, the teacher-alpha cache.

The teacher runs once per image, not once per step: each image is squashed to the cache size
(as the job squashes inputs to the model's size), matted by the teacher, and stored as one RGBA
PNG (photo + teacher alpha) keyed by a hash of the image's bytes and the teacher's version: a copied,
moved or re-synced photo folder keeps its cache (a key of path and mtime lost all of it whenever
../shared was copied again). A killed precompute resumes where it stopped; training only reads these files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model.atomic import atomic_path, write_bytes_atomic
from model.preprocess import LEGACY_RESIZE
from postproc import DecodeError, decode_image, model_input
from postproc.formats import PHOTO_EXTENSIONS

log = logging.getLogger(__name__)



def list_images(dirs: list[str | os.PathLike], max_images: int | None = None) -> list[Path]:
    """Images directly inside each folder (not below: a mask/ folder beside image/ is not a photo).

    Folders are interleaved round-robin, so any prefix (`max_images`) draws on every folder.
    """
    per_dir = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise ValueError(f"image folder {d} does not exist")
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise ValueError(f"image folder {d} holds no images ({', '.join(sorted(PHOTO_EXTENSIONS))})")
        per_dir.append(files)
    out = [lst[i] for i in range(max(map(len, per_dir), default=0)) for lst in per_dir if i < len(lst)]
    return out[:max_images] if max_images else out


@dataclass(frozen=True)
class Pair:
    image: Path
    alpha: Path
    coarse: bool  # a binary mask (mask/), not a matte (alpha/): its edges are not trusted


def find_pairs(pairs_dir: str | os.PathLike) -> list[Pair]:
    """(image, alpha) pairs from DIR/image and DIR/alpha (mattes) or DIR/mask (binary masks), by file stem."""
    root = Path(pairs_dir)
    images = root / "image"
    kinds = [k for k in ("alpha", "mask") if (root / k).is_dir()]
    if not images.is_dir() or not kinds:
        raise ValueError(f"--pairs {root} needs image/ and alpha/ (or mask/) folders inside it")
    targets = {}
    for kind in reversed(kinds):  # alpha/ wins over mask/ where both have the stem
        for p in (root / kind).iterdir():
            if p.suffix.lower() in PHOTO_EXTENSIONS:
                targets[p.stem] = (p, kind == "mask")
    pairs, missing = [], 0
    for img in list_images([images]):
        if img.stem in targets:
            pairs.append(Pair(img, *targets[img.stem]))
        else:
            missing += 1
    if missing:
        log.info("pairs: %d images in %s have no alpha/mask and are used only as unlabelled photos", missing, images)
    if not pairs:
        raise ValueError(f"--pairs {root}: no image in image/ has an alpha or mask with the same stem")
    return pairs


def read_rgb(path: Path, size: int, preprocess) -> np.ndarray:
    """(size, size, 3) uint8, squashed like the job's model input, with `preprocess`'s resize filter
    (a PreprocessSpec: the teacher's, so the teacher sees its photos as it does in a job); raises
    DecodeError for bad files."""
    return model_input(decode_image(path.read_bytes()), preprocess, (size, size))


def read_alpha(path: Path, size: int) -> np.ndarray:
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise DecodeError("corrupt", f"cannot read alpha {path}")
    if a.ndim == 3:  # an RGBA cut-out: its alpha channel; an RGB/grey map: its first channel
        a = a[..., 3] if a.shape[2] == 4 else a[..., 0]
    if a.dtype != np.uint8:
        a = (a.astype(np.float32) / np.iinfo(a.dtype).max * 255).round().astype(np.uint8)
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)


def cache_path(cache_dir: Path, image: Path, teacher_version: str, size: int, resize: str = LEGACY_RESIZE) -> Path:
    # Hashing the bytes reads every photo once per run (126 MB for ../shared/train: well under a
    # second); the teacher costs 0.4 s per photo on a CPU. The resize filter makes other photos
    # and other teacher alphas, so it names its own folder (the legacy one keeps its old name).
    key = hashlib.blake2b(image.read_bytes(), digest_size=10).hexdigest()
    folder = f"{teacher_version}-{size}" if resize == LEGACY_RESIZE else f"{teacher_version}-{resize}-{size}"
    return cache_dir / folder / f"{key}.png"


def write_rgba(path: Path, rgb: np.ndarray, alpha: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.dstack([rgb[..., ::-1], alpha]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    write_bytes_atomic(path, buf.tobytes())  # a killed run leaves whole files or none


def read_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
        raise ValueError(f"cache file {path} is not an RGBA PNG; delete it and precompute again")
    return np.ascontiguousarray(bgra[..., 2::-1]), np.ascontiguousarray(bgra[..., 3])


def precompute_teacher(images: list[Path], *, teacher, cache_dir: str | os.PathLike, size: int,
                       batch_size: int = 8, log_every_s: float = 30.0) -> list[tuple[Path, Path]]:
    """Run the teacher on every image not cached yet; return (image, cache file) of all readable images.

    `teacher` is a pipelines.training.teacher.Teacher (one model or an ensemble, each with its TTA),
    a model.config.RuntimeConfig, or a model name run with the defaults."""
    from model.config import RuntimeConfig
    from pipelines.training.teacher import Teacher

    if not isinstance(teacher, Teacher):
        teacher = Teacher((teacher if isinstance(teacher, RuntimeConfig) else RuntimeConfig(model=str(teacher)),))
    cache_dir = Path(cache_dir)
    pre = teacher.preprocess
    target = {p: cache_path(cache_dir, p, teacher.version, size, pre.resize) for p in images}  # hashes each photo once
    todo = [p for p in images if not target[p].is_file()]
    log.info("teacher %s: %d of %d images cached in %s, %d to do", teacher.label, len(images) - len(todo), len(images),
             cache_dir, len(todo))
    if todo:
        opened = teacher.open()
        t0 = last = time.perf_counter()
        done = bad = 0
        chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        # Decoding the next chunk and encoding the last one's PNGs run on threads (OpenCV and Pillow
        # release the GIL) while the teacher works: on a GPU one host thread doing both was the limit
        # (61 images/s for U²-Netp on an H100).
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            loading = [pool.submit(_decode, p) for p in chunks[0]]
            writing: list = []
            for i, chunk in enumerate(chunks):
                loaded = [f.result() for f in loading]
                if i + 1 < len(chunks):
                    loading = [pool.submit(_decode, p) for p in chunks[i + 1]]
                ok = []
                for p, (photo, error) in zip(chunk, loaded):
                    if photo is None:
                        bad += 1
                        log.warning("skipping %s: %s", p, error)
                    else:
                        ok.append((p, photo))
                if not ok:
                    continue
                # Each member makes its own input from the decoded photo, with its own filter and size.
                alphas = opened.mat([photo for _, photo in ok], size)
                writing += [pool.submit(_write_cached, target[p], photo, pre, size, a) for (p, photo), a in zip(ok, alphas)]
                while len(writing) > 2 * batch_size:  # at most two chunks' photos held for encoding
                    writing.pop(0).result()
                done += len(ok)
                if time.perf_counter() - last > log_every_s:
                    last = time.perf_counter()
                    log.info("teacher: %d/%d images, %.2f images/s", done, len(todo), done / (last - t0))
            for f in writing:
                f.result()  # an encoding or write error surfaces here, not silently
        log.info("teacher: %d images in %.0f s, %d unreadable", done, time.perf_counter() - t0, bad)
    return [(p, target[p]) for p in images if target[p].is_file()]


def _decode(path: Path):
    """(decoded photo, None) or (None, the reason it cannot be read): a bad photo is skipped, not fatal."""
    try:
        return decode_image(path.read_bytes()), None
    except (DecodeError, OSError) as e:
        return None, e


def _write_cached(path: Path, photo, preprocess, size: int, alpha: np.ndarray) -> None:
    write_rgba(path, model_input(photo, preprocess, (size, size)), (alpha * 255).round().astype(np.uint8))


class CachedPhotos:
    """(photo, teacher alpha) by index, decoded from the cache's PNG files at each access."""

    def __init__(self, files: list[Path]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return read_rgba(self.files[i])


class PackedPhotos:
    """(photo, teacher alpha) by index from a pack file: views of one memory-mapped uint8 array.

    Each process maps the file on first access, and the object pickles as its path: data-loading
    processes share the page cache instead of each receiving a copy.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.shape = np.load(self.path, mmap_mode="r").shape
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array[i, ..., :3], self._array[i, ..., 3]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def array(self) -> np.ndarray:
        """The whole pack, (N, S, S, RGB + alpha) uint8, memory-mapped read-only (for one upload to a device)."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array


def pack_cache(files: list[Path], size: int) -> PackedPhotos:
    """Decode the cache files once into one (N, size, size, RGB+alpha) uint8 .npy beside them.

    A training sample otherwise starts with a PNG decode (4–6 ms of one core: the largest cost of a
    sample once colour jitter became one matrix), and GPU training waits on data loading. The pack
    is named by a hash of the files' names (themselves hashes of the photos' bytes), so the same
    photos reuse it; a new pack replaces the older ones in that folder (each is N × 400 KB at 320²).
    """
    if not files:
        raise ValueError("no cache files to pack")
    folder = files[0].parent
    key = hashlib.blake2b("\n".join(f.name for f in files).encode(), digest_size=8).hexdigest()
    path = folder / f"pack-{key}.npy"
    if path.is_file():
        packed = PackedPhotos(path)
        if packed.shape == (len(files), size, size, 4):
            return packed
    t0 = time.perf_counter()
    # A failed pack removes its temporary file; a killed run leaves a .partial, never a short pack.
    with atomic_path(path) as partial:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 4))
        try:
            # PNG decoding on threads (OpenCV releases the GIL): 5,343 photos on one thread took ~75 s.
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
                for start in range(0, len(files), 256):
                    chunk = files[start:start + 256]
                    for i, f, (rgb, alpha) in zip(range(start, start + len(chunk)), chunk, pool.map(read_rgba, chunk)):
                        if alpha.shape != (size, size):
                            raise ValueError(f"cache file {f} is {alpha.shape[1]}×{alpha.shape[0]}, not {size}²; "
                                             "delete it and precompute again")
                        array[i, ..., :3], array[i, ..., 3] = rgb, alpha
            array.flush()
        finally:
            del array  # unmapped before the rename (or the removal)
    for old in folder.glob("pack-*.npy"):
        if old != path:
            old.unlink()  # a process still mapping it keeps its pages until it ends
    log.info("packed %d cache files into %s (%.1f GB) in %.0f s", len(files), path,
             path.stat().st_size / 1e9, time.perf_counter() - t0)
    return PackedPhotos(path)


@dataclass(frozen=True)
class PackedPairs:
    """The readable --pairs, packed: photos[i] is pair i's (photo, alpha), coarse[i] whether it is a mask."""

    photos: PackedPhotos
    coarse: np.ndarray  # (M,) bool


def pack_pairs(pairs: list[Pair], size: int, preprocess, folder: str | os.PathLike) -> PackedPairs:
    """Decode the pairs once into one (M, size, size, RGB+alpha) uint8 .npy in `folder` (for device sampling).

    Photos are squashed with `preprocess`'s resize filter (read_rgb) and alphas with INTER_AREA
    (read_alpha), as DistillDataset reads them at each sample. An unreadable pair is left out with a
    warning (on the loader path it costs only its samples). The pack is named by a hash of the pairs'
    paths, sizes and mtimes, the size and the filter, so an unchanged folder reuses it; the coarse flags
    of the packed pairs sit beside it in `<pack>.coarse.npy`, written first, so a pack is never found
    without them. A new pack replaces the older ones in `folder`.
    """
    if not pairs:
        raise ValueError("no pairs to pack")
    folder = Path(folder)
    ident = [f"{size} {preprocess.resize}"]
    for p in pairs:
        for f in (p.image, p.alpha):
            st = f.stat()
            ident.append(f"{f.resolve()} {st.st_size} {st.st_mtime_ns}")
        ident.append(str(p.coarse))
    key = hashlib.blake2b("\n".join(ident).encode(), digest_size=8).hexdigest()
    path, coarse_path = folder / f"pairs-{key}.npy", folder / f"pairs-{key}.coarse.npy"
    if path.is_file() and coarse_path.is_file():
        packed, coarse = PackedPhotos(path), np.load(coarse_path)
        if packed.shape[1:] == (size, size, 4) and coarse.shape == (len(packed),):
            return PackedPairs(packed, coarse)
    t0 = time.perf_counter()
    rgbs, alphas, coarse = [], [], []
    for p in pairs:
        try:
            rgb, alpha = read_rgb(p.image, size, preprocess), read_alpha(p.alpha, size)
        except (DecodeError, OSError) as e:
            log.warning("pairs: leaving out %s: %s", p.image, e)
            continue
        rgbs.append(rgb)
        alphas.append(alpha)
        coarse.append(p.coarse)
    if not rgbs:
        raise ValueError(f"none of the {len(pairs)} pairs is readable")
    with atomic_path(coarse_path) as partial:
        with open(partial, "xb") as f:
            np.save(f, np.array(coarse, bool))
    # A failed pack removes its temporary file; a killed run leaves a .partial, never a short pack.
    with atomic_path(path) as partial:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(rgbs), size, size, 4))
        try:
            for i, (rgb, alpha) in enumerate(zip(rgbs, alphas)):
                array[i, ..., :3], array[i, ..., 3] = rgb, alpha
            array.flush()
        finally:
            del array  # unmapped before the rename (or the removal)
    for old in folder.glob("pairs-*.npy"):
        if old not in (path, coarse_path):
            old.unlink()  # a process still mapping it keeps its pages until it ends
    log.info("packed %d of %d pairs into %s (%.1f GB) in %.0f s", len(rgbs), len(pairs), path,
             path.stat().st_size / 1e9, time.perf_counter() - t0)
    return PackedPairs(PackedPhotos(path), np.array(coarse, bool))
