"""Local folders (and anything mounted as one): plain paths, no scheme.

A local input is opened only once it is known to be a regular file inside SOURCE (classify_local),
so a FIFO, a device or a link out of SOURCE gets a manifest row instead of a hang or a leak; writes
go through model.atomic, the one atomic local write.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Iterator

from pyarrow import fs as pafs

from model.atomic import name_max, write_bytes_atomic
from pipelines.storage.base import MANIFEST_DIR, InputRefused, ListedInput, Location, hidden, too_large


@dataclass(frozen=True)
class LocalLocation(Location):
    scheme = ""

    @classmethod
    def open(cls, uri: str, create: bool = False, **options) -> LocalLocation:
        path = os.path.abspath(os.path.expanduser(uri))
        if create:
            os.makedirs(path, exist_ok=True)
        elif not os.path.isdir(path):
            raise FileNotFoundError(f"source folder {path} does not exist")
        return cls(path, pafs.LocalFileSystem(), path, tuple(sorted(options.items())))

    @classmethod
    def canonical(cls, uri: str) -> str:
        return os.path.realpath(os.path.abspath(os.path.expanduser(uri)))  # symlinks resolved

    @classmethod
    def physically_inside(cls, path: str, folder: str) -> bool:
        return _same_or_inside(path, folder)

    @classmethod
    def shown_resolved(cls, spath: str, dpath: str) -> str:
        return f" (resolved: {dpath} and {spath})"

    def local_path(self, key: str) -> str:
        return self.path(key)

    def read_input(self, key: str, listed_size: int | None, max_bytes: int) -> bytes:
        try:
            return _read_local(self.root, key, max_bytes)
        except InputRefused:
            raise
        except (OSError, ValueError) as e:  # gone since listing, permissions
            raise InputRefused("read_failed", f"could not read input: {e}") from None

    def write_atomic(self, key: str, data: bytes) -> None:
        write_bytes_atomic(self.path(key), data)

    def key_problem(self, key: str) -> str:
        limit = name_max(self.root)
        return "output_name_too_long" if any(len(os.fsencode(p)) > limit for p in key.split("/")) else ""

    def list_inputs(self) -> Iterator[ListedInput]:
        return _iter_local(self.root)


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
            raise InputRefused("too_large", too_large(st.st_size, max_bytes), st.st_size)
        return f.read()


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
        if hidden(key):
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
