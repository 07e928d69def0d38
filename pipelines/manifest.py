"""The run manifest: one Parquet row per input under DEST/_manifests/<run-id>/.

The driver appends rows as results stream in and writes a part file every `flush_rows` rows,
each atomically, so a killed run leaves complete parts behind, never a torn file.
"""

from __future__ import annotations

import io
import posixpath
import time
import typing
import uuid
from collections import Counter
from dataclasses import dataclass, fields
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from pipelines.storage import MANIFEST_DIR, Location

@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """One input's row in the run manifest: the Parquet schema (SCHEMA) is generated from these fields,
    in this order, with these types; render_output (the job's last stage) builds one per input.

    Every field is required: a row missing one, or carrying one the manifest does not know, fails
    where it is built (TypeError), not in the writer's cast.
    """

    source_key: str
    output_key: str
    # ok | error | skipped (by rule: hidden files) | pruned (the input is gone and its output was removed)
    status: str
    error: str
    error_reason: str  # a name of postproc/reasons.py, or ""
    size_bytes: int
    input_etag: str  # S3 ETag or local mtime: the identity --incremental compares
    sha256: str
    width: int
    height: int
    model: str
    model_version: str
    params_hash: str
    params_json: str  # effective post-processing values (preset + overrides), sorted JSON
    bbox_left: int
    bbox_top: int
    bbox_width: int
    bbox_height: int
    t_read: float
    t_decode: float
    t_infer: float
    t_postprocess: float
    t_encode: float
    t_write: float
    inference_node: str
    worker_node: str
    worker_pid: int
    device: str
    precision: str  # what inference ran in: fp32, fp16 or int8 (RuntimeConfig.precision resolved)
    reused: bool  # the input's bytes were unchanged: its existing output was kept
    # How unsure the model was: the share of its probabilities (at the model's input size) strictly between
    # 0.05 and 0.95. Null where nothing was inferred (errors, reused outputs) and in manifests written
    # before the column existed. The contact sheet (`matting report --html`) shows the highest first.
    uncertain_fraction: float | None

    def as_dict(self) -> dict:
        """The row as Ray Data's map stages return it (a dict, in SCHEMA's order)."""
        return {name: getattr(self, name) for name in SCHEMA.names}


# Python type → Arrow type of a manifest column; `X | None` is the same type (every column is nullable).
_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(hint) -> pa.DataType:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if base not in _ARROW_TYPES:
        raise TypeError(f"manifest column type {hint!r} has no Arrow type; known: {list(_ARROW_TYPES)}")
    return _ARROW_TYPES[base]


ROW_TYPES: dict[str, type] = typing.get_type_hints(ManifestRow)
SCHEMA = pa.schema([(f.name, _arrow_type(ROW_TYPES[f.name])) for f in fields(ManifestRow)])


class InFlightRow(typing.TypedDict, total=False):
    """The row as it travels through the batch job's stages (pipelines/batch/stages.py, pipelines/batch/gpu_path.py),
    before render_output turns it into a ManifestRow. Each key, by the stage that adds it:"""

    # read_input (stage 1)
    source_key: str
    input_etag: str
    error: str  # set from the stage that failed onwards; later stages pass the row through
    error_reason: str  # postproc/reasons.py
    reused_output_key: str  # same bytes as the previous run's: its output is kept, nothing recomputed
    sha256: str
    output_key: str  # decided here, from the run's OutputNaming
    data: bytes  # the compressed input; b"" once refused, reused or rendered on the GPU
    size_bytes: int
    t_read: float
    # decode_input / gpu_path.decode_or_defer (stage 2)
    model_input: np.ndarray  # (h, w, 3) uint8 at the model's input size; dropped by the predictor
    width: int
    height: int
    t_decode: float
    gpu_decode: bool  # GPU path only: the actor decodes these bytes (nvJPEG); dropped by it
    # Predictor / gpu_path.GpuPredictor (stage 3)
    prob: np.ndarray  # (h, w) float16 probabilities at the model's input size
    t_infer: float
    inference_node: str
    device: str
    precision: str  # reaches ManifestRow.precision
    # GpuPredictor only: post-processed on the device, only encoding and writing are left
    rendered: bool
    picture: np.ndarray  # the composed picture to encode
    bbox: np.ndarray  # (left, top, width, height); width 0: no subject
    uncertain: float
    t_postprocess: float


STAGE_COLUMNS = ["t_read", "t_decode", "t_infer", "t_postprocess", "t_encode", "t_write"]


def new_run_id(name: str | None = None) -> str:
    """Time first, so run folders sort in the order the runs started."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if name and not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"run name {name!r} may only hold letters, digits, '-', '_' and '.'")
    return f"{stamp}-{name or uuid.uuid4().hex[:6]}"


class ManifestWriter:
    def __init__(self, dest: Location, run_id: str, flush_rows: int = 1000, flush_seconds: float = 10.0):
        self.dest = dest
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        # A resumed run appends after the parts its killed predecessor left.
        self._parts = len(_part_files(dest, run_id))
        self.rows = 0
        self.inferred = 0  # rows that went through the model
        self.status = Counter()
        self.reasons = Counter()

    @property
    def prefix(self) -> str:
        return posixpath.join(MANIFEST_DIR, self.run_id)

    def add(self, batch: pa.Table) -> None:
        table = batch.select(SCHEMA.names).cast(SCHEMA)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        self.status.update(table.column("status").to_pylist())
        self.reasons.update(r for r in table.column("error_reason").to_pylist() if r)
        self.inferred += sum(1 for s, r in zip(table.column("status").to_pylist(), table.column("reused").to_pylist())
                             if s == "ok" and not r)
        if self._pending_rows >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(self._pending), buf)
        self.dest.write_atomic(posixpath.join(self.prefix, f"part-{self._parts:05d}.parquet"), buf.getvalue())
        self._parts += 1
        self._pending, self._pending_rows = [], 0
        self._last_flush = time.monotonic()


def list_runs(dest: Location) -> list[str]:
    base = dest.path(MANIFEST_DIR)
    infos = dest.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


def _part_files(dest: Location, run_id: str) -> list[str]:
    base = dest.path(posixpath.join(MANIFEST_DIR, run_id))
    return sorted(i.path for i in dest.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                  if i.type == pafs.FileType.File and posixpath.basename(i.path).startswith("part-"))


def read_run(dest: Location, run_id: str, columns: list[str] | None = None) -> pa.Table:
    """Every row one run wrote, in the order written; only `columns` of them are read, if given
    (those a part written by an older version lacks come back as nulls)."""
    tables = []
    for path in _part_files(dest, run_id):
        with dest.fs.open_input_file(path) as f:
            part = pq.ParquetFile(f)
            have = part.schema_arrow.names
            t = part.read(columns=[c for c in columns if c in have] if columns else None)
        tables.append(conform(t, columns) if columns else t)
    if tables:
        return pa.concat_tables(tables, promote_options="default")
    empty = SCHEMA.empty_table()
    return empty.select(columns) if columns else empty


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """`table` with exactly `columns` (default: the manifest's), typed as SCHEMA types them; a column
    it lacks (a part from an older version, a partial view) comes back as nulls."""
    out = []
    for name in columns or SCHEMA.names:
        kind = SCHEMA.field(name).type if name in SCHEMA.names else pa.string()
        out.append(table.column(name).cast(kind) if name in table.column_names else pa.nulls(table.num_rows, kind))
    return pa.table(out, names=list(columns or SCHEMA.names))


def read_manifest(dest: Location, run_id: str | None = None) -> pa.Table:
    """One run's manifest (the latest when `run_id` is None)."""
    runs = list_runs(dest)
    if not runs:
        raise FileNotFoundError(f"no manifests under {dest.uri_of(MANIFEST_DIR)}")
    run_id = run_id or runs[-1]
    if run_id not in runs:
        raise FileNotFoundError(f"no run {run_id!r} under {dest.uri_of(MANIFEST_DIR)}; runs: {', '.join(runs)}")
    return read_run(dest, run_id)


def summarize(table: pa.Table, run_id: str = "") -> str:
    rows = table.to_pylist()
    status = Counter(r["status"] for r in rows)
    reasons = Counter(r["error_reason"] for r in rows if r["status"] == "error")
    lines = [f"run {run_id}: {len(rows) - status.get('pruned', 0)} inputs, {status.get('ok', 0)} ok, "
             f"{status.get('error', 0)} errors" + (f", {status['skipped']} skipped" if status.get("skipped") else "")
             + (f", {status['pruned']} pruned" if status.get("pruned") else "")]
    ok = [r for r in rows if r["status"] == "ok" and not r.get("reused")]
    if ok:
        means = {c: sum(r[c] for r in ok) / len(ok) for c in STAGE_COLUMNS}
        lines.append("mean seconds per image: " + ", ".join(f"{c[2:]} {v:.4f}" for c, v in means.items()))
        lines.append(f"model: {', '.join(sorted({r['model_version'] for r in ok}))}; "
                     f"devices: {', '.join(sorted({r['device'] for r in ok}))}")
    if reasons:
        lines.append("errors by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
        for r in [r for r in rows if r["status"] == "error"][:20]:
            lines.append(f"  {r['source_key']}: {r['error']}")
    skipped = Counter(r["error_reason"] for r in rows if r["status"] == "skipped")
    if skipped:
        lines.append("skipped by reason: " + ", ".join(f"{k} {v}" for k, v in skipped.most_common()))
    return "\n".join(lines)
