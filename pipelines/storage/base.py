"""The one storage interface: a Location is a folder or prefix of some store, and every backend is
one subclass of it in its own module (local.py, s3.py), chosen by URI scheme (pipelines.storage.BACKENDS).

A Location is a pyarrow filesystem (`fs`) plus the `root` inside it, so Ray Data and Parquet read
and write through it as they are; the methods below are what the job asks of a store beyond that.
The defaults here suit an object store reached through a pyarrow filesystem (an fsspec one wrapped
in `pafs.PyFileSystem(pafs.FSSpecHandler(...))` too): a backend overrides only where its store differs.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, TypeVar

from pyarrow import fs as pafs

T = TypeVar("T")

# Our own run folder (pipelines.manifest): the one entry of SOURCE's top level a run never lists.
MANIFEST_DIR = "_manifests"


class InputRefused(Exception):
    """An input that gets a manifest row with `reason` (postproc/reasons.py) instead of an output."""

    def __init__(self, reason: str, message: str, size: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.size = size  # the input's size, where known (too_large)


@dataclass(frozen=True)
class ListedInput:
    key: str  # relative to the source location
    size: int
    etag: str  # S3 ETag, or the local file's mtime in ns: changes whenever the content is rewritten
    reason: str = ""  # set when the listing already knows the input is not to be read (postproc/reasons.py)
    message: str = ""


def too_large(size: int, max_bytes: int) -> str:
    return f"input is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB"


def hidden(key: str) -> bool:
    """A path component starting with "." (`.DS_Store`, `._x.jpg`, `.git/...`, `..dots.jpg`): not a
    catalog input. '.' and '..' themselves are not hidden files: such keys get `unsafe_key` rows."""
    return any(part.startswith(".") and part not in (".", "..") for part in key.split("/"))


def listed(key: str, size: int, etag: str) -> ListedInput | None:
    """The row a listing gives one object of a store with flat keys: None for folder markers ("a/")
    and our own top-level `_manifests/`; a hidden name carries its reason."""
    if not key or key.endswith("/") or key.startswith(MANIFEST_DIR + "/"):
        return None
    if hidden(key):
        return ListedInput(key, size, etag, "hidden", "a hidden file (a name starting with '.'), skipped")
    return ListedInput(key, size, etag)


def under(path: str, folder: str) -> bool:
    """`path` is `folder` or inside it, compared on path-segment boundaries (`a/b` is not under `a/bc`)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class Location:
    """A folder or prefix of one store: `fs` plus the `root` path inside it; `uri` as the user gave it.

    `options` are what it was opened with (e.g. s3_endpoint), so that a file named beside it (an
    input manifest, a background picture) is opened the same way.
    """

    uri: str
    fs: pafs.FileSystem
    root: str
    options: tuple[tuple[str, object], ...] = ()

    scheme: ClassVar[str] = ""  # "s3" for s3://…; "" for plain local paths

    def __post_init__(self) -> None:
        if type(self) is Location:  # its defaults would treat a local folder as an object store
            raise TypeError("Location is the interface: open_location(uri) picks the backend for the URI's scheme")

    # -- opening (class-level: used before a Location exists) ---------------------------------------

    @classmethod
    def open(cls, uri: str, create: bool = False, **options) -> Location:
        """The Location `uri` names. `create`: make the folder where the store has folders.
        Backends take the options they know (s3_endpoint, …) and ignore the others."""
        raise NotImplementedError

    @classmethod
    def canonical(cls, uri: str) -> str:
        """`uri` as a path compared on segment boundaries by check_disjoint."""
        return "/".join(p for p in uri.partition("://")[2].split("/") if p)

    @classmethod
    def physically_inside(cls, path: str, folder: str) -> bool:
        """Whether the store itself says `path` is `folder` or inside it, beyond what the paths say
        (local folders: by device and inode). Object stores have no aliases: False."""
        return False

    @classmethod
    def shown_resolved(cls, spath: str, dpath: str) -> str:
        """What check_disjoint's message adds about the compared paths (local: the resolved paths)."""
        return ""

    # -- one key ---------------------------------------------------------------------------------------

    @property
    def s3_endpoint(self) -> str | None:
        return dict(self.options).get("s3_endpoint")

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key) if self.root else key

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def local_path(self, key: str) -> str | None:
        """The local file of `key`, for stores that have one (a link in an HTML page); else None."""
        return None

    def retrying(self, op: Callable[[], T], what: str) -> T:
        """Run one operation made of several requests under the store's retry policy (none here)."""
        return op()

    def read(self, key: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(key)) as f:
                return f.read()

        return self.retrying(read, f"reading {self.uri_of(key)}")

    def read_input(self, key: str, listed_size: int | None, max_bytes: int) -> bytes:
        """The bytes of one input, or InputRefused saying why not (too large, not a regular file, ...)."""
        try:
            size = listed_size
            if size is None or size < 0:  # from an input manifest: ask the store before reading
                size = self.fs.get_file_info(self.path(key)).size or 0
            if size > max_bytes:
                raise InputRefused("too_large", too_large(size, max_bytes), size)
            return self.read(key)
        except InputRefused:
            raise
        except (OSError, ValueError) as e:  # gone since listing, permissions, a store error after retries
            raise InputRefused("read_failed", f"could not read input: {e}") from None

    def write_atomic(self, key: str, data: bytes) -> None:
        """`data` at `key`, seen whole or not at all. The default suits object stores, where an object
        becomes visible only when its upload completes; a store without that must override it."""
        path = self.path(key)

        def upload() -> None:
            with self.fs.open_output_stream(path) as f:
                f.write(data)

        self.retrying(upload, f"writing {self.uri_of(key)}")

    def download(self, key: str, target: str | os.PathLike) -> None:
        """Copy `key` into the local file `target` (which the caller makes atomic), streamed."""

        def copy() -> None:
            with self.fs.open_input_stream(self.path(key)) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)

        self.retrying(copy, f"fetching {self.uri_of(key)}")

    def key_problem(self, key: str) -> str:
        """Why `key` cannot be written here ("" if it can), e.g. a name longer than the store allows."""
        return ""

    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def delete(self, key: str) -> None:
        path = self.path(key)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def list_inputs(self) -> Iterator[ListedInput]:
        """Every entry under the location, keys relative to it; those not to be read carry a reason.

        This default asks pyarrow for the whole recursive listing at once; a backend for stores of
        millions of objects overrides it to stream page by page (s3.py does).
        """
        base = self.root.rstrip("/")
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        for info in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
            key = info.path[len(base) + 1:] if base else info.path
            item = listed(key, int(info.size or 0), f"mtime:{info.mtime_ns}")
            if item is not None:
                yield item
