"""Pack training photos small enough to travel to a lent GPU machine (64 MiB per call, our tree included).

Each photo is squashed to --size² exactly as `matting train` squashes it for its teacher cache
(postproc.model_input with the teacher u2netp's resize filter), then re-encoded as WebP; masks (a `mask/` or `alpha/` folder beside `image/`)
are squashed the same way and kept lossless as PNG. The teacher then mats the packed photos on the GPU
machine, so what trains there is these photos, not the originals: WebP at quality 75 is about 11 KB
per 320² photo (../shared/train's 3,750 photos and 1,003 masks: 42 MiB) and adds compression noise of
its own, which we accept as one more augmentation.

    python bench/pack_photos.py ../shared/train/clothing_cc0 ../shared/train/caltech101_objects \\
        ../shared/train/ccp_fullbody --out .gpu/train

A folder with image/ inside (a pairs folder) keeps that layout; other folders are packed flat.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.specs import get_spec  # noqa: E402
from pipelines.training.train_data import list_images, read_alpha, read_rgb  # noqa: E402
from postproc import DecodeError  # noqa: E402

TEACHER = "u2netp"  # matting train's default teacher: its resize filter makes the cached photos


def pack_photo(job: tuple[Path, Path, int, int]) -> int:
    src, dst, size, quality = job
    try:
        rgb = read_rgb(src, size, get_spec(TEACHER).preprocess)
    except DecodeError as e:  # an unreadable photo is skipped here as the trainer would skip it
        print(f"skipping {src}: {e}", file=sys.stderr)
        return 0
    ok, buf = cv2.imencode(".webp", rgb[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"could not encode {src} as WebP")
    dst.write_bytes(buf.tobytes())
    return len(buf)


def pack_mask(job: tuple[Path, Path, int, int]) -> int:
    src, dst, size, _ = job
    ok, buf = cv2.imencode(".png", read_alpha(src, size), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"could not encode {src} as PNG")
    dst.write_bytes(buf.tobytes())
    return len(buf)


def jobs_for(folder: Path, out: Path, size: int, quality: int):
    """(function, job) pairs; the photo keeps its stem so pairs still match by name."""
    if (folder / "image").is_dir():
        for kind in ("image", "alpha", "mask"):
            if (folder / kind).is_dir():
                yield from jobs_for_files(folder / kind, out / folder.name / kind, size, quality, kind != "image")
    else:
        yield from jobs_for_files(folder, out / folder.name, size, quality, False)


def jobs_for_files(folder: Path, out: Path, size: int, quality: int, is_mask: bool):
    out.mkdir(parents=True, exist_ok=True)
    for src in list_images([folder]):
        suffix = ".png" if is_mask else ".webp"
        yield (pack_mask if is_mask else pack_photo), (src, out / f"{src.stem}{suffix}", size, quality)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=320, help="squash to this square size (the teacher cache's)")
    p.add_argument("--quality", type=int, default=75, help="WebP quality of the photos")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    work = [j for f in args.folders for j in jobs_for(f, args.out, args.size, args.quality)]
    with ProcessPoolExecutor(args.workers) as pool:
        sizes = list(pool.map(_call, work, chunksize=32))
    print(f"packed {sum(1 for s in sizes if s)} files, {sum(sizes) / 2**20:.1f} MiB, into {args.out}")
    return 0


def _call(item):
    fn, job = item
    return fn(job)


if __name__ == "__main__":
    raise SystemExit(main())
