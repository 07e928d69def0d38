"""Every reason an input gets no output, in one table: its manifest status, whether an incremental
run retries it, the HTTP answer of the online API, and what it means.

postproc.decode raises the decoding reasons, pipelines/ (listing, reading, writing) the others;
pipelines.batch.state.PERMANENT_REASONS and serve.pipeline's status map are derived from this table,
and docs/operations.md lists every row (tests/test_reasons.py checks it does). It lives in
postproc/ because that is the base both pipelines/ and serve/ may import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    name: str
    status: str  # the manifest row's status: "error" (something to fix) or "skipped" (by rule)
    # True: the same input fails the same way, so an --incremental run does not retry it until the
    # input changes. False: a later run may succeed (a store outage, a link fixed elsewhere), or
    # the check costs nothing to repeat.
    permanent: bool
    http: tuple[int, str] | None  # (status, code) the online API answers; None: batch job only
    description: str


_TABLE = (
    # Decoding (postproc.decode): the same bytes always decode the same way.
    Reason("empty", "error", True, (400, "undecodable"), "the file is empty (0 bytes)"),
    Reason("corrupt", "error", True, (400, "undecodable"), "the image data is truncated or corrupt"),
    Reason("unsupported_format", "error", True, (415, "unsupported_type"),
           "not an image in a format we read (JPEG, PNG, WebP, GIF, TIFF, BMP, ...)"),
    Reason("too_many_pixels", "error", True, (413, "too_large"),
           "over `--max-megapixels`, checked from the header before decoding (also decompression bombs)"),
    # Reading (pipelines.batch.stages, pipelines.storage).
    Reason("too_large", "error", True, (413, "too_large"), "over `--max-megabytes`, checked before reading"),
    Reason("unsafe_key", "error", True, None,
           "the key has `.`, `..` or empty path components, which could escape DEST"),
    Reason("read_failed", "error", False, None,
           "the input could not be read (gone since listing, permissions, S3 errors after retries)"),
    # Listing (pipelines.storage): found in SOURCE, never opened.
    Reason("hidden", "skipped", True, None,
           "a file or folder name starting with `.` (`.DS_Store`, `._x.jpg`, `.git/`): not a catalog input"),
    Reason("not_a_regular_file", "error", True, None,
           "a FIFO, socket or device (or a link to one, or a link to a folder): never opened"),
    Reason("symlink_loop", "error", False, None, "a symbolic link that resolves to itself (ELOOP)"),
    Reason("dangling_symlink", "error", False, None, "a symbolic link whose target does not exist"),
    Reason("symlink_outside_source", "error", False, None,
           "a symbolic link to a file outside SOURCE: not followed"),
    Reason("unreadable_folder", "error", False, None,
           "a folder of SOURCE that could not be listed (permissions); its key ends with `/`"),
    Reason("undecodable_name", "error", True, None,
           "the file name is not valid UTF-8; the key shows its bytes escaped as `\\xNN`"),
    # Writing (pipelines.batch.stages, pipelines.storage).
    Reason("output_collision", "error", False, None,
           "the output key is held by another input's current output (from an earlier run), or by a "
           "folder in DEST"),
    Reason("output_name_too_long", "error", True, None,
           "the output's file name is longer than DEST's file system allows (255 bytes on most)"),
    Reason("write_failed", "error", False, None, "the output could not be written (after the S3 client's retries)"),
)

REASONS: dict[str, Reason] = {r.name: r for r in _TABLE}
PERMANENT_REASONS = frozenset(r.name for r in _TABLE if r.permanent)
HTTP_STATUS = {r.name: r.http for r in _TABLE if r.http is not None}


def reason(name: str) -> Reason:
    """The table's row for `name`; an unknown name is a programming error, named with the valid list."""
    try:
        return REASONS[name]
    except KeyError:
        raise ValueError(f"unknown reason {name!r}; add it to postproc/reasons.py. Known: "
                         f"{', '.join(REASONS)}") from None


def markdown_table() -> str:
    """The table as docs/operations.md shows it (tests/test_reasons.py keeps the two identical)."""
    lines = ["| reason | status | `--incremental` | HTTP | meaning |", "|---|---|---|---|---|"]
    for r in _TABLE:
        retry = "not retried" if r.permanent else "retried"
        http = f"{r.http[0]} `{r.http[1]}`" if r.http else "—"
        lines.append(f"| `{r.name}` | {r.status} | {retry} | {http} | {r.description} |")
    return "\n".join(lines)

