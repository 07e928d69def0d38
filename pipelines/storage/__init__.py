"""Sources and sinks: local folders and S3 prefixes behind one pyarrow filesystem interface.

Every write is atomic: a local file is written beside its target and renamed over it
(model.atomic); an S3 object only becomes visible when its upload completes. A reader never sees
half a file.

Also what a run may read and write: SOURCE and DEST must not overlap (check_disjoint); every
entry of SOURCE is listed with the reason it will not be read, if any (list_inputs); a local input
is opened only once it is known to be a regular file inside SOURCE (read_input); and each input's
output key is decided so that no two inputs share one (OutputNaming).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import random
import shutil
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from pyarrow import fs as pafs

from model.atomic import atomic_path, name_max, write_bytes_atomic

log = logging.getLogger(__name__)
T = TypeVar("T")

# What Arrow's S3 errors say when a retry may succeed (the same list Ray Data retries its own writes on).
TRANSIENT_S3_ERRORS = ("AWS Error SLOW_DOWN", "AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION",
                       "AWS Error SERVICE_UNAVAILABLE", "HTTP status 503", "HTTP status 500")


def retry_transient(op: Callable[[], T], what: str, attempts: int = 5, base_delay_s: float = 0.2) -> T:
    """Run `op`, retrying transient S3 errors with jittered exponential backoff.

    The SDK already retries each request; this covers operations made of several requests, such as
    a multipart upload, which fail as a whole when one of their requests runs out of SDK retries
    (seen with a store answering every third request with 503 SlowDown).
    """
    for attempt in range(1, attempts):
        try:
            return op()
        except OSError as e:
            if not any(s in str(e) for s in TRANSIENT_S3_ERRORS):
                raise
            delay = base_delay_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.warning("%s: transient S3 error (attempt %d of %d), retrying in %.1f s: %s", what, attempt,
                        attempts, delay, str(e).splitlines()[0][:200])
            time.sleep(delay)
    return op()  # the last attempt: whatever it raises goes to the caller


def s3_filesystem(endpoint: str | None = None) -> pafs.S3FileSystem:
    """S3 through the standard AWS environment variables, optionally at an S3-compatible endpoint."""
    kwargs: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                    # Transient 5xx and throttling: retry with backoff instead of failing the row.
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=6)}
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if not sep:
            raise ValueError(f"--s3-endpoint must be a URL such as http://127.0.0.1:9000, got {endpoint!r}")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class Location:
    """A folder or an S3 prefix: `fs` plus the `root` path inside it."""

    uri: str
    fs: pafs.FileSystem
    root: str
    s3_endpoint: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key) if self.root else key

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def read(self, key: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(key)) as f:
                return f.read()

        return retry_transient(read, f"reading {self.uri_of(key)}") if self.is_s3 else read()

    def write_atomic(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if self.is_s3:  # an S3 object becomes visible only when its upload completes

            def upload() -> None:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)

            retry_transient(upload, f"writing {self.uri_of(key)}")
            return
        write_bytes_atomic(path, data)

    def read_input(self, key: str, listed_size: int | None, max_bytes: int) -> bytes:
        """The bytes of one input, or InputRefused saying why not (too large, not a regular file, ...)."""
        try:
            if not self.is_s3:
                return _read_local(self.root, key, max_bytes)
            size = listed_size
            if size is None or size < 0:  # from an input manifest: ask the store before reading
                size = self.fs.get_file_info(self.path(key)).size or 0
            if size > max_bytes:
                raise InputRefused("too_large", _too_large(size, max_bytes), size)
            return self.read(key)
        except InputRefused:
            raise
        except (OSError, ValueError) as e:  # gone since listing, permissions, an S3 error after retries
            raise InputRefused("read_failed", f"could not read input: {e}") from None

    def key_problem(self, key: str) -> str:
        """Why `key` cannot be written here ("" if it can): a name longer than the store allows."""
        if self.is_s3:
            return "" if len(self.path(key).encode()) <= S3_KEY_MAX else "output_name_too_long"
        limit = name_max(self.root)
        return "output_name_too_long" if any(len(os.fsencode(p)) > limit for p in key.split("/")) else ""

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def delete(self, key: str) -> None:
        path = self.path(key)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)


S3_KEY_MAX = 1024  # bytes


def _resolved(uri: str) -> tuple[str, str]:
    """("s3", "bucket/prefix") or ("local", real path with symlinks resolved)."""
    if uri.startswith("s3://"):
        return "s3", "/".join(p for p in uri[len("s3://"):].split("/") if p)
    return "local", os.path.realpath(os.path.abspath(os.path.expanduser(uri)))


def _under(path: str, folder: str) -> bool:
    """`path` is `folder` or inside it, compared on path-segment boundaries (`a/b` is not under `a/bc`)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _same_or_inside(path: str, folder: str) -> bool:
    """`path` (or its nearest existing ancestor) is `folder` or inside it, by device and inode: this
    also sees through bind mounts and case-insensitive file systems, which paths alone do not."""
    try:
        target = os.stat(folder)
    except OSError:
        return False
    current = _existing_ancestor(path)
    while True:
        try:
            st = os.stat(current)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def check_disjoint(source: str, dest: str) -> None:
    """Refuse a DEST that is SOURCE, lies inside it or contains it, before anything is read.

    Outputs written into SOURCE overwrite inputs (`matting run SRC SRC` replaced rocket.png with
    its cut-out) and become inputs of the next run; a SOURCE inside DEST is listed as outputs.
    Local paths are compared after resolving symlinks, and by inode; S3 prefixes by bucket and
    prefix on path-segment boundaries.
    """
    (skind, spath), (dkind, dpath) = _resolved(source), _resolved(dest)
    if skind != dkind:
        return
    how = None
    if _under(spath, dpath) and _under(dpath, spath) or (skind == "local" and _same_or_inside(dpath, spath)
                                                          and _same_or_inside(spath, dpath)):
        how = "is the same location as"
    elif _under(dpath, spath) or (skind == "local" and _same_or_inside(dpath, spath)):
        how = "lies inside"
    elif _under(spath, dpath) or (skind == "local" and _same_or_inside(spath, dpath)):
        how = "contains"
    if how:
        shown = f" (resolved: {dpath} and {spath})" if skind == "local" else ""
        raise ValueError(f"DEST {dest} {how} SOURCE {source}{shown}: outputs would overwrite inputs or be "
                         "read as inputs. Choose a DEST outside SOURCE and not containing it, e.g. a sibling "
                         f"folder such as {source.rstrip('/')}-cutouts")


def open_location(uri: str, s3_endpoint: str | None = None, create: bool = False) -> Location:
    if uri.startswith("s3://"):
        root = uri[len("s3://"):].strip("/")
        if not root:
            raise ValueError(f"{uri!r} names no bucket: use s3://bucket/prefix")
        return Location(uri.rstrip("/"), s3_filesystem(s3_endpoint), root, s3_endpoint)
    if "://" in uri:
        raise ValueError(f"unsupported location {uri!r}: use a local folder or s3://bucket/prefix")
    path = os.path.abspath(os.path.expanduser(uri))
    if create:
        os.makedirs(path, exist_ok=True)
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"source folder {path} does not exist")
    return Location(path, pafs.LocalFileSystem(), path)


# Our own run folder (pipelines.manifest): the one entry of SOURCE's top level a run never lists.
MANIFEST_DIR = "_manifests"


class InputRefused(Exception):
    """An input that gets a manifest row with `reason` (postproc/reasons.py) instead of an output."""

    def __init__(self, reason: str, message: str, size: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.size = size  # the input's size, where known (too_large)


def _too_large(size: int, max_bytes: int) -> str:
    return f"input is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB"


def _hidden(key: str) -> bool:
    """A path component starting with "." (`.DS_Store`, `._x.jpg`, `.git/...`, `..dots.jpg`): not a
    catalog input. '.' and '..' themselves are not hidden files: such keys get `unsafe_key` rows."""
    return any(part.startswith(".") and part not in (".", "..") for part in key.split("/"))


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def classify_local(path: str, root_real: str) -> tuple[str, str, os.stat_result]:
    """(reason, message, stat) for one local entry, without opening it; reason "" means a regular
    file inside SOURCE (a symbolic link to one is followed, and the stat is its target's).

    lstat and realpath never block, whatever the entry is; open() on a FIFO waits for a writer.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "symlink_loop", "a symbolic link that resolves to itself (too many levels of links)", st
            if e.errno == errno.ENOENT:
                return "dangling_symlink", f"a symbolic link to {os.readlink(path)!r}, which does not exist", st
            raise
        if not (real == root_real or real.startswith(root_real.rstrip("/") + "/")):
            return "symlink_outside_source", f"a symbolic link to {real}, outside SOURCE: not followed", st
        target = os.stat(path)
        if stat.S_ISDIR(target.st_mode):
            return "not_a_regular_file", "a symbolic link to a folder: links to folders are not followed", st
        st = target
    if not stat.S_ISREG(st.st_mode):
        return "not_a_regular_file", f"{_kind(st.st_mode)}, not a regular file: never opened", st
    return "", "", st


def _read_local(root: str, key: str, max_bytes: int) -> bytes:
    path = os.path.join(root, key)
    reason, message, _ = classify_local(path, os.path.realpath(root))
    if reason:
        raise InputRefused(reason, message)
    # Belt and braces, should the entry have been replaced since the check: O_NONBLOCK makes open()
    # return at once on a FIFO instead of waiting for a writer, O_NOCTTY keeps a terminal from
    # becoming ours, and fstat on the open file decides.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputRefused("not_a_regular_file", f"{_kind(st.st_mode)}, not a regular file: not read")
        if st.st_size > max_bytes:
            raise InputRefused("too_large", _too_large(st.st_size, max_bytes), st.st_size)
        return f.read()


@dataclass(frozen=True)
class ListedInput:
    key: str  # relative to the source location
    size: int
    etag: str  # S3 ETag, or the local file's mtime in ns: changes whenever the content is rewritten
    reason: str = ""  # set when the listing already knows the input is not to be read (postproc/reasons.py)
    message: str = ""


def _key_of(rel: str) -> tuple[str, bool]:
    """The key for a relative path, and whether its name is valid UTF-8. An undecodable name keeps its
    bytes as `\\xNN` escapes, so its row can be written (Parquet strings are UTF-8); it is never read."""
    try:
        rel.encode("utf-8")
        return rel, True
    except UnicodeEncodeError:  # os.fsdecode turned the invalid bytes into surrogates
        return os.fsencode(rel).decode("utf-8", "backslashreplace"), False


def _local_entry(root: str, root_real: str, path: str) -> ListedInput | None:
    key, decodable = _key_of(os.path.relpath(path, root).replace(os.sep, "/"))
    try:
        if not decodable:
            st = os.lstat(path)
            return ListedInput(key, -1, f"mtime:{st.st_mtime_ns}", "undecodable_name",
                               "the file name is not valid UTF-8 (shown with \\x escapes): rename it to process it")
        if _hidden(key):
            st = os.lstat(path)
            return ListedInput(key, st.st_size, f"mtime:{st.st_mtime_ns}", "hidden",
                               "a hidden file (a name starting with '.'), skipped")
        reason, message, st = classify_local(path, root_real)
    except FileNotFoundError:  # deleted while we listed
        return None
    except OSError as e:  # permissions on a link's target, a failing disk: a row, never the end of the job
        return ListedInput(key, -1, "", "read_failed", f"could not examine the entry: {e}")
    size = st.st_size if not reason else -1
    return ListedInput(key, size, f"mtime:{st.st_mtime_ns}", reason, message)


def _iter_local(root: str) -> Iterator[ListedInput]:
    root_real = os.path.realpath(root)
    unreadable: list[OSError] = []

    def folders_that_failed() -> Iterator[ListedInput]:
        while unreadable:
            e = unreadable.pop(0)
            folder = e.filename if isinstance(e.filename, str) else root
            if os.path.abspath(folder) == os.path.abspath(root):
                raise PermissionError(f"cannot list SOURCE {root}: {e.strerror}")
            key, _ = _key_of(os.path.relpath(folder, root).replace(os.sep, "/") + "/")
            yield ListedInput(key, -1, "", "unreadable_folder", f"could not list the folder: {e.strerror}")

    # os.walk streams folder by folder; sorting inside each folder keeps runs reproducible. A folder
    # that cannot be listed reaches onerror (it was silently skipped before) and gets a row.
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
        yield from folders_that_failed()
        if os.path.abspath(dirpath) == os.path.abspath(root) and MANIFEST_DIR in dirnames:
            dirnames.remove(MANIFEST_DIR)  # ours, should SOURCE be an earlier run's DEST
        # os.walk puts links to folders among the folders and does not follow them: each gets a row.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for name in sorted(filenames + links):
            entry = _local_entry(root, root_real, os.path.join(dirpath, name))
            if entry is not None:
                yield entry
    yield from folders_that_failed()


def boto3_client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint,
                        config=Config(retries={"max_attempts": 8, "mode": "standard"}))


def _iter_s3(loc: Location) -> Iterator[ListedInput]:
    bucket, _, prefix = loc.root.partition("/")
    prefix = prefix + "/" if prefix else ""
    pages = boto3_client(loc.s3_endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:  # 1,000 keys a page: the driver never holds the whole listing
        for obj in page.get("Contents", []):
            key = obj["Key"][len(prefix):]
            # Folder markers ("a/") are not inputs; _manifests/ at the top is ours.
            if not key or key.endswith("/") or key.startswith(MANIFEST_DIR + "/"):
                continue
            item = ListedInput(key, int(obj["Size"]), obj["ETag"].strip('"'))
            if _hidden(key):
                item = ListedInput(key, item.size, item.etag, "hidden", "a hidden file (a name starting with '.'), "
                                                                        "skipped")
            yield item


def list_inputs(loc: Location) -> Iterator[ListedInput]:
    """Every entry under the location, streamed, keys relative to it; those not to be read carry a reason.

    Only SOURCE's top-level `_manifests/` is left out (ours). Names starting with `_` are inputs
    like any other: cameras name photos `_DSC0001.JPG`.
    """
    return _iter_s3(loc) if loc.is_s3 else _iter_local(loc.root)


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
    from model.weights import weights_dir

    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or "://" not in parent:
        raise ValueError(f"{uri!r} names no file: use s3://bucket/path/to/weights.onnx")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = weights_dir() / "s3" / f"{digest}-{name}"
    if target.exists():
        return str(target)
    loc = open_location(parent, s3_endpoint)  # the one S3 set-up, with its retry policy

    def copy() -> None:
        with atomic_path(target) as partial:  # a concurrent reader sees no file or the whole one
            with loc.fs.open_input_stream(loc.path(name)) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)

    retry_transient(copy, f"fetching weights {uri}")
    return str(target)


def localize_weights(cfg, s3_endpoint: str | None = None):
    """`cfg` (a model.config.RuntimeConfig) with remote weights replaced by their local cached copy."""
    if not cfg.remote_weights:
        return cfg
    return cfg.replace(weights=fetch_to_cache(cfg.weights, s3_endpoint))
