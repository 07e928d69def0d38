"""A held-out-style corpus of what a file system throws at the batch job (issue 16): FIFOs, sockets,
symlink loops, dangling links, links out of SOURCE, undecodable names, 250-byte names, inputs whose
output keys would collide, hidden files, camera names starting with `_`, and an unreadable folder.

`build(root)` writes it under `root/src` (plus `root/outside`, which a link points into) and
returns what every listed entry must become: key → Expected(outcome, output key). The outcome is
"ok" or the row's reason (postproc/reasons.py).
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from catalog import real_photos

LONG_OK = "n" * 246 + ".jpg"  # 250 bytes: its output name (250 bytes) fits, its old temporary name did not
LONG_SHARED = "m" * 249  # with .jpg and .webp: each output keeps its extension, 257 bytes: too long to write
LOCKED = "locked"  # a folder nobody (root without CAP_DAC_*) may list


@dataclass(frozen=True)
class Expected:
    outcome: str  # "ok" or the reason
    output_key: str = ""


def _link(path: Path, target: str) -> None:
    os.symlink(target, path)


def build(root: Path, *, locked_unreadable: bool) -> tuple[Path, dict[str, Expected]]:
    """The corpus under root/src. `locked_unreadable`: whether the job will run unable to list
    `locked/` (as a user, or as root with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped)."""
    src, outside = root / "src", root / "outside"
    src.mkdir(parents=True)
    outside.mkdir()
    photos = [data for _, data in real_photos(3)]
    photo = photos[0]
    expected: dict[str, Expected] = {}

    def put(key: str, data: bytes, outcome: str, out: str = "") -> None:
        p = src / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[key] = Expected(outcome, out)

    put("photo.jpg", photo, "ok", "photo.png")
    put("_DSC0001.JPG", photos[1], "ok", "_DSC0001.png")  # Sony/Nikon names: real photos
    put("_private/_DSC0002.JPG", photos[2], "ok", "_private/_DSC0002.png")
    # Three inputs that all used to write item.png: each keeps its own extension now.
    for i, ext in enumerate((".jpg", ".jpeg", ".webp")):
        put(f"shop/item{ext}", photos[i], "ok", f"shop/item{ext}.png")
    put("shop/other.jpg", photo, "ok", "shop/other.png")  # alone with its stem: the plain rule
    put(LONG_OK, photo, "ok", LONG_OK[:-4] + ".png")
    for ext in (".jpg", ".webp"):
        put(LONG_SHARED + ext, photo, "output_name_too_long")
    # Hidden: skipped with a row each, never silently dropped.
    put("..dots.jpg", photo, "hidden")
    put(".DS_Store", b"\x00\x00\x00\x01Bud1", "hidden")
    put(".thumbnails/photo.jpg", photo, "hidden")
    put("shop/._item.jpg", b"\x00\x05\x16\x07", "hidden")  # AppleDouble
    # Ours: SOURCE's top-level _manifests/ is the one thing never listed (no row expected).
    (src / "_manifests" / "run").mkdir(parents=True)
    (src / "_manifests" / "run" / "part-00000.parquet").write_bytes(b"PAR1")

    os.mkfifo(src / "fifo.jpg")
    expected["fifo.jpg"] = Expected("not_a_regular_file")
    with socket.socket(socket.AF_UNIX) as s:  # the socket file stays after the socket closes
        s.bind(str(src / "socket.jpg"))
    expected["socket.jpg"] = Expected("not_a_regular_file")
    _link(src / "loop.jpg", "loop.jpg")
    expected["loop.jpg"] = Expected("symlink_loop")
    _link(src / "ping.jpg", "pong.jpg")
    _link(src / "pong.jpg", "ping.jpg")
    expected["ping.jpg"] = expected["pong.jpg"] = Expected("symlink_loop")
    _link(src / "dangling.jpg", "no-such-file.jpg")
    expected["dangling.jpg"] = Expected("dangling_symlink")
    (outside / "secret.jpg").write_bytes(photo)
    _link(src / "outside.jpg", str(outside / "secret.jpg"))
    expected["outside.jpg"] = Expected("symlink_outside_source")
    _link(src / "escape.jpg", "../outside/secret.jpg")
    expected["escape.jpg"] = Expected("symlink_outside_source")
    _link(src / "inside-link.jpg", "photo.jpg")  # a link within SOURCE is followed
    expected["inside-link.jpg"] = Expected("ok", "inside-link.png")
    _link(src / "linked-folder", "shop")  # links to folders are not followed (loops, double work)
    expected["linked-folder"] = Expected("not_a_regular_file")
    # A name that is not UTF-8 (Latin-1 "café.jpg"): its key shows the byte escaped.
    with open(os.path.join(os.fsencode(src), b"caf\xe9.jpg"), "wb") as f:
        f.write(photo)
    expected["caf\\xe9.jpg"] = Expected("undecodable_name")

    put(f"{LOCKED}/inside.jpg", photo, "ok", f"{LOCKED}/inside.png")
    if locked_unreadable:
        del expected[f"{LOCKED}/inside.jpg"]
        expected[f"{LOCKED}/"] = Expected("unreadable_folder")
    os.chmod(src / LOCKED, 0)
    return src, expected


def unlock(src: Path) -> None:
    """Make the tree removable again (pytest's tmp_path cleanup, as a user)."""
    if (src / LOCKED).exists():
        os.chmod(src / LOCKED, stat.S_IRWXU)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under root (links not followed): path → (size, mtime_ns), to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.fsdecode(p)] = (st.st_size, st.st_mtime_ns)
    return out
