"""Each input's output key in one run: no two inputs share one (OutputNaming), decided over the whole
listing (NamingCounter) and stable across processes (key_hashes)."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

# Extensions an input may lose in its output key (`b.jpg` → `b.png`); any other keeps its own
# (`b.dat` → `b.dat.png`). Lowercase; a fixed list, so output keys do not depend on Pillow's plugins.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".tif", ".tiff",
                              ".bmp", ".dib", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".ico", ".tga",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".psd", ".svg", ".dng", ".cr2", ".nef", ".arw"})


def key_hashes(keys: list[str]) -> np.ndarray:
    """64-bit hashes, stable across processes (Python's hash() is salted per process)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                        for k in keys), dtype=np.uint64, count=len(keys))


def _split(key: str) -> tuple[str, str, str, str]:
    folder, _, name = key.rpartition("/")
    stem, ext = posixpath.splitext(name)
    return folder, name, stem, ext


def _check_safe(source_key: str) -> None:
    parts = source_key.split("/")
    if source_key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe key {source_key!r}: empty, '.' or '..' path components are refused")


def _contains(sorted_hashes: np.ndarray, value: str) -> bool:
    if not len(sorted_hashes):
        return False
    h = key_hashes([value])[0]
    i = int(np.searchsorted(sorted_hashes, h))
    return i < len(sorted_hashes) and sorted_hashes[i] == h


@dataclass(frozen=True)
class OutputNaming:
    """Each input's output key in one run. The rule (README, docs/operations.md):

    `folder/stem.ext` → `folder/stem<format extension>` when `.ext` is an image extension and no
    other input of the folder could claim that name: none has the same stem with an image
    extension (`b.jpg` and `b.webp`) and none is named `stem` itself (`b.jpg` and `b`, `b.x.jpg`
    and `b.x`). Every other input keeps its whole name: `folder/name<format extension>`
    (`b.jpg.png`, `b.webp.png`). No two inputs of one listing get the same key, by construction:
    short keys differ by stem, long keys by name, and a short key equals a long one only if a
    stem equals another input's name, which makes that stem long. The inputs that count are the
    run's listing plus, when the previous state is loaded, every input of earlier runs, so a
    name an earlier output holds is not handed to another input.

    `shared`: sorted hashes of the `folder/stem`s that must stay long; `taken`: sorted hashes of
    output keys that earlier runs' current rows hold and this run does not rewrite (an input
    whose key is taken gets `output_collision`). 64-bit hashes: a collision of two of them can
    only make a key long, never give two inputs one key.
    """

    extension: str
    shared: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    taken: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))

    def key(self, source_key: str) -> str:
        _check_safe(source_key)
        folder, name, stem, ext = _split(source_key)
        short = ext.lower() in IMAGE_EXTENSIONS and not _contains(self.shared, f"{folder}/{stem}")
        return (f"{folder}/" if folder else "") + (stem if short else name) + self.extension

    def is_taken(self, out_key: str) -> bool:
        return _contains(self.taken, out_key)


class NamingCounter:
    """Collects, over a whole listing, what OutputNaming needs: 16 bytes per input."""

    def __init__(self) -> None:
        self._stems: list[np.ndarray] = []
        self._names: list[np.ndarray] = []

    def add(self, keys: Iterable[str]) -> None:
        stems, names = [], []
        for key in keys:
            folder, name, stem, ext = _split(key)
            names.append(f"{folder}/{name}")
            if ext.lower() in IMAGE_EXTENSIONS:
                stems.append(f"{folder}/{stem}")
        self._stems.append(key_hashes(stems))
        self._names.append(key_hashes(names))

    def naming(self, extension: str, taken: np.ndarray | None = None) -> OutputNaming:
        stems = np.concatenate(self._stems or [np.empty(0, np.uint64)])
        names = np.concatenate(self._names or [np.empty(0, np.uint64)])
        unique, counts = np.unique(stems, return_counts=True)
        shared = np.union1d(unique[counts > 1], np.intersect1d(unique, names))
        return OutputNaming(extension, shared, np.unique(taken) if taken is not None else np.empty(0, np.uint64))


def output_key(source_key: str, extension: str) -> str:
    """`photos/a/b.jpg` → `photos/a/b.png` when nothing else in the run claims the name (see
    OutputNaming). Refuses keys that could escape the destination."""
    return OutputNaming(extension).key(source_key)
