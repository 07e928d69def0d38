"""The one atomic local-file write: a temporary file beside the target, renamed over it.

A reader sees the old file or the whole new one, never half of it; a write that fails removes its
temporary file. Every layer that writes local files uses it: model/ (weights, exports), pipelines/
(outputs, manifests, bundles, the teacher cache). It lives in model/ because model/ is the lowest
layer that writes files, and every other layer may import model/ while model/ may import none of
them; postproc/ stays pure numpy, without I/O.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

NAME_MAX_DEFAULT = 255  # bytes per file name on ext4, XFS, btrfs, tmpfs and overlayfs
_SUFFIX = ".partial"
_TOKEN_HEX = 12  # 48 random bits: concurrent writers of one target never share a temporary file


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, the file system holding `folder` accepts (eCryptfs: 143)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):  # the folder does not exist yet, or the platform cannot say
        return NAME_MAX_DEFAULT


def temp_name(name: str, limit: int = NAME_MAX_DEFAULT) -> str:
    """`.<name>.<hex>.partial`, with `name` cut short so the whole stays within `limit` bytes.

    The target's name is kept (as much of it as fits) so a stray temporary file says what it was
    for; it is cut at a UTF-8 character boundary. A 250-byte target name thus still gets a legal
    temporary name (the job once added 42 bytes to it and every write failed with ENAMETOOLONG).
    """
    room = max(limit - len(f"..{'0' * _TOKEN_HEX}{_SUFFIX}"), 0)
    head = os.fsencode(name)[:room].decode("utf-8", "ignore")
    return f".{head}.{uuid.uuid4().hex[:_TOKEN_HEX]}{_SUFFIX}"


@contextmanager
def atomic_path(target: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; when the block succeeds, rename it over `target`.

    The folder is created if needed. If the block (or the rename) fails, the temporary file is
    removed and the error propagates: nothing half-written is left behind. `mode` sets the
    permissions before the rename (umask-independent), e.g. 0o644 for weights other users read.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temp_name(target.name, name_max(target.parent)))
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        # After a successful rename the temporary name no longer exists; after a failure it may.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def write_bytes_atomic(target: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """`data` at `target`, atomically (see atomic_path)."""
    with atomic_path(target, mode) as tmp:
        with open(tmp, "xb") as f:  # "x": never write into a file someone else created under this name
            f.write(data)
