"""Sources and sinks: every store behind one interface (base.Location), one module per backend.

    base.py    the Location interface, ListedInput, InputRefused
    local.py   local folders (plain paths)
    s3.py      s3://bucket/prefix, with the one S3 set-up and its retry policy
    naming.py  each input's output key (OutputNaming)

A backend is chosen by the URI's scheme from BACKENDS below; a new scheme (gs://, az://, an
fsspec-backed one) is one module with a Location subclass plus one line here (tests/test_storage.py
adds a memory:// backend the same way).

Every write is atomic: a local file is written beside its target and renamed over it
(model.atomic); an S3 object only becomes visible when its upload completes. A reader never sees
half a file. Also what a run may read and write: SOURCE and DEST must not overlap (check_disjoint);
every entry of SOURCE is listed with the reason it will not be read, if any (list_inputs); a local
input is opened only once it is known to be a regular file inside SOURCE (read_input); and each
input's output key is decided so that no two inputs share one (OutputNaming).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import posixpath
from typing import Iterator

from pipelines.storage.base import (MANIFEST_DIR, InputRefused, ListedInput, Location,  # noqa: F401
                                    hidden, under)
from pipelines.storage.local import LocalLocation, classify_local  # noqa: F401
from pipelines.storage.naming import (IMAGE_EXTENSIONS, NamingCounter, OutputNaming, key_hashes,  # noqa: F401
                                      output_key)
from pipelines.storage.s3 import (S3_KEY_MAX, TRANSIENT_S3_ERRORS, S3Location, S3Settings,  # noqa: F401
                                  boto3_client, retry_transient, s3_filesystem)

# Scheme → backend: a Location subclass, or "module:Class" imported when first used. Plain paths
# (no "://") are local folders.
BACKENDS: dict[str, type[Location] | str] = {
    "": LocalLocation,
    "s3": S3Location,
}


def backend_for(uri: str) -> type[Location]:
    """The Location class for `uri`'s scheme; an unknown scheme raises with the ones we have."""
    scheme, sep, _ = str(uri).partition("://")
    scheme = scheme.lower() if sep else ""
    backend = BACKENDS.get(scheme)
    if backend is None:
        known = ", ".join(f"{s}://…" for s in sorted(BACKENDS) if s)
        raise ValueError(f"unsupported location {uri!r}: use a local folder or one of {known} "
                         "(e.g. s3://bucket/prefix)")
    if isinstance(backend, str):
        module, _, name = backend.partition(":")
        backend = getattr(importlib.import_module(module), name)
    return backend


def open_location(uri: str, s3_endpoint: str | None = None, create: bool = False, **options) -> Location:
    """The Location `uri` names, by its scheme. `create`: make the folder where the store has folders.
    `s3_endpoint` and `options` go to the backend, which takes those it knows."""
    return backend_for(uri).open(uri, create=create, s3_endpoint=s3_endpoint, **options)


def list_inputs(loc: Location) -> Iterator[ListedInput]:
    """Every entry under the location, streamed, keys relative to it; those not to be read carry a reason.

    Only SOURCE's top-level `_manifests/` is left out (ours). Names starting with `_` are inputs
    like any other: cameras name photos `_DSC0001.JPG`.
    """
    return loc.list_inputs()


def check_disjoint(source: str, dest: str) -> None:
    """Refuse a DEST that is SOURCE, lies inside it or contains it, before anything is read.

    Outputs written into SOURCE overwrite inputs (`matting run SRC SRC` replaced rocket.png with
    its cut-out) and become inputs of the next run; a SOURCE inside DEST is listed as outputs.
    Paths are compared on path-segment boundaries after the backend's canonical form (local:
    symlinks resolved; S3: bucket and prefix), and, where the store has aliases, by what the store
    says (local: device and inode, which see through bind mounts and case-insensitive file systems).
    """
    backend = backend_for(source)
    if backend_for(dest) is not backend:
        return
    spath, dpath = backend.canonical(source), backend.canonical(dest)
    inside = backend.physically_inside
    how = None
    if under(spath, dpath) and under(dpath, spath) or (inside(dpath, spath) and inside(spath, dpath)):
        how = "is the same location as"
    elif under(dpath, spath) or inside(dpath, spath):
        how = "lies inside"
    elif under(spath, dpath) or inside(spath, dpath):
        how = "contains"
    if how:
        raise ValueError(f"DEST {dest} {how} SOURCE {source}{backend.shown_resolved(spath, dpath)}: outputs would "
                         "overwrite inputs or be read as inputs. Choose a DEST outside SOURCE and not containing it, "
                         f"e.g. a sibling folder such as {source.rstrip('/')}-cutouts")


def read_uri(uri: str, s3_endpoint: str | None = None) -> bytes:
    """The bytes of one file named by its URI or local path (a background picture, …)."""
    parent, name = posixpath.split(str(uri).rstrip("/"))
    if not name:
        raise ValueError(f"{uri!r} names no file")
    return open_location(parent or ".", s3_endpoint).read(name)


def write_failure_reason(e: OSError) -> str:
    """The reason for an output that could not be written: a name the file system refuses is
    permanent; a folder where the file should go (or a file where a folder should) is a collision."""
    if e.errno == errno.ENAMETOOLONG:
        return "output_name_too_long"
    if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        return "output_collision"
    return "write_failed"


def fetch_to_cache(uri: str, s3_endpoint: str | None = None) -> str:
    """A remote file (weights) copied once into the local weights cache, keyed by its URI: its local path.

    This layer owns storage; model/ reads local files only. Each node fetches its own copy once.
    """
    from model.atomic import atomic_path
    from model.weights import weights_dir

    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or "://" not in parent:
        raise ValueError(f"{uri!r} names no file: use s3://bucket/path/to/weights.onnx")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = weights_dir() / "s3" / f"{digest}-{name}"
    if target.exists():
        return str(target)
    loc = open_location(parent, s3_endpoint)  # the backend's one set-up, with its retry policy
    with atomic_path(target) as partial:  # a concurrent reader sees no file or the whole one
        loc.download(name, partial)
    return str(target)


def localize_weights(cfg, s3_endpoint: str | None = None):
    """`cfg` (a model.config.RuntimeConfig) with remote weights replaced by their local cached copy."""
    if not cfg.remote_weights:
        return cfg
    return cfg.replace(weights=fetch_to_cache(cfg.weights, s3_endpoint))
