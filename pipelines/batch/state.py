"""What DEST already holds: the consolidated view over every run's manifest, and what to skip.

Each run writes `_manifests/<run-id>/_job.json` when it starts and `_SUCCESS` when it ends. The
consolidated view is every run's rows in run order, the last row per source key winning; keys
whose last row says `pruned` are gone. From it:
- `--incremental` skips an input whose current row is done with the same identity (ETag or mtime,
  plus size), model version and parameters hash;
- rerunning a command whose last run did not finish resumes that run and skips what it did.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.manifest import MANIFEST_DIR, list_runs, read_run
from pipelines.storage import ListedInput, Location, key_hashes
# Rows that a retry cannot change: the same input fails (or is skipped) the same way. From the one
# reasons table; read and write failures, for instance, are not permanent.
from postproc.reasons import PERMANENT_REASONS

HASH_SLICE = 100_000
DICTIONARY_COLUMNS = frozenset({"status", "error_reason", "model_version", "params_hash"})
STATE_COLUMNS = ["source_key", "output_key", "status", "error_reason", "size_bytes", "input_etag", "sha256",
                 "model_version", "params_hash"]


@dataclass(frozen=True)
class JobFingerprint:
    """What makes two runs the same job, for resuming."""

    source: str
    model_version: str
    params_hash: str
    incremental: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def job_file(run_id: str) -> str:
    return posixpath.join(MANIFEST_DIR, run_id, "_job.json")


def success_file(run_id: str) -> str:
    return posixpath.join(MANIFEST_DIR, run_id, "_SUCCESS")


def unfinished_run(dest: Location, fingerprint: JobFingerprint) -> str | None:
    """The latest run of the same job, if it did not finish (killed driver, stalled cluster)."""
    runs = list_runs(dest)
    if not runs:
        return None
    last = runs[-1]
    if dest.exists(success_file(last)) or not dest.exists(job_file(last)):
        return None
    try:
        started = json.loads(dest.read(job_file(last)))
    except (OSError, ValueError):
        return None
    return last if started == json.loads(fingerprint.to_json()) else None


def consolidated(dest: Location, columns: list[str] | None = None) -> pa.Table:
    """One current row per input across all runs (the last one wins); pruned inputs dropped.

    Runs are folded in as they are read, deduplicating whenever the rows read since the last fold
    outnumber the view: the peak stays within about twice the catalog however many nightly runs
    DEST holds, and the work stays linear in the rows read.
    """
    view: pa.Table | None = None
    pending: list[pa.Table] = []
    pending_rows = 0
    for run_id in list_runs(dest):
        t = read_run(dest, run_id, columns)
        if t.num_rows:
            pending.append(t)
            pending_rows += t.num_rows
        if pending_rows > (view.num_rows if view is not None else 0):
            view = _last_per_key([view, *pending] if view is not None else pending)
            pending, pending_rows = [], 0
    if pending:
        view = _last_per_key([view, *pending] if view is not None else pending)
    if view is None:
        return pa.table({c: pa.array([], pa.string()) for c in (columns or ["source_key"])})
    return view.filter(pc.not_equal(view.column("status"), "pruned"))


def _last_per_key(tables: list[pa.Table]) -> pa.Table:
    """The last row of each source key, in the order the rows were written."""
    t = pa.concat_tables(tables, promote_options="default")
    t = t.append_column("_row", pa.array(np.arange(t.num_rows, dtype=np.int64)))
    last = t.group_by("source_key").aggregate([("_row", "max")]).column("_row_max")
    return t.take(pc.take(last, pc.sort_indices(last))).drop_columns(["_row"])


class PreviousState:
    """Each input's current row, kept columnar and looked up a chunk of keys at a time.

    Nightly runs on a catalog of millions need this in the driver. A dict of row dicts cost 880
    bytes per input; this costs 225 (bench/planner_state.py): its Arrow row (repetitive columns
    dictionary-encoded), 16 bytes of sorted key hash and order, and one byte saying whether this
    run's listing still has it (for --prune). Lookups take ~7 µs a key against the dict's ~1.
    """

    def __init__(self, table: pa.Table):
        table = table.combine_chunks() if table.num_rows else table
        for name in DICTIONARY_COLUMNS & set(table.column_names):  # a few distinct values each
            table = table.set_column(table.column_names.index(name), name, pc.dictionary_encode(table.column(name)))
        self.table = table
        keys = self.table.column("source_key")
        # Hashed a slice at a time, so the catalog's keys never all exist as Python strings at once.
        hashes = np.concatenate([key_hashes(keys.slice(i, HASH_SLICE).to_pylist())
                                 for i in range(0, len(keys), HASH_SLICE)] or [np.empty(0, np.uint64)])
        self._order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[self._order]
        self.seen = np.zeros(self.table.num_rows, dtype=bool)
        self.planned = np.zeros(self.table.num_rows, dtype=bool)
        self.last_found = np.empty(0, np.int64)

    @classmethod
    def load(cls, dest: Location) -> PreviousState:
        return cls(consolidated(dest, STATE_COLUMNS))

    @classmethod
    def empty(cls) -> PreviousState:
        return cls(pa.table({c: pa.array([], pa.string()) for c in STATE_COLUMNS}))

    def __len__(self) -> int:
        return self.table.num_rows

    def lookup(self, keys: list[str]) -> list[dict | None]:
        """The current row of each key (None if it has none), marking those rows as seen."""
        if not len(self) or not keys:
            self.last_found = np.full(len(keys), -1, np.int64)
            return [None] * len(keys)
        wanted = key_hashes(keys)
        start = np.searchsorted(self._hashes, wanted, side="left")
        stop = np.searchsorted(self._hashes, wanted, side="right")
        stored = self.table.column("source_key")
        # The first candidate of each key, verified in one vectorised comparison of the strings.
        has = stop > start
        first = self._order[np.minimum(start, len(self) - 1)]
        same = pc.equal(stored.take(pa.array(first)), pa.array(keys, pa.string()))
        found = np.where(has & pc.fill_null(same, False).to_numpy(zero_copy_only=False), first, -1)
        for i in np.flatnonzero((stop - start > 1) & (found < 0)).tolist():  # keys sharing a 64-bit hash
            for pos in range(int(start[i]) + 1, int(stop[i])):
                if stored[int(self._order[pos])].as_py() == keys[i]:
                    found[i] = self._order[pos]
                    break
        hit = found >= 0
        self.seen[found[hit]] = True
        self.last_found = found
        rows = iter(_decoded(self.table.take(pa.array(found[hit]))).to_pylist())
        return [next(rows) if h else None for h in hit.tolist()]

    def mark_planned(self, positions: list[int]) -> None:
        """Rows (indices from `last_found`) whose input this run processes again, writing a new output."""
        self.planned[[p for p in positions if p >= 0]] = True

    def taken_outputs(self, pruned_unseen: bool) -> np.ndarray:
        """Hashes of the output keys whose current owner this run leaves alone: skipped, or gone from
        the listing and not pruned. No other input of this run may write them."""
        if not len(self):
            return np.empty(0, np.uint64)
        keep = ~self.planned & (self.seen if pruned_unseen else True)
        t = _decoded(self.table.filter(pa.array(keep)).select(["status", "output_key"]))
        t = t.filter(pc.and_(pc.equal(t.column("status"), "ok"), pc.invert(pc.equal(t.column("output_key"), ""))))
        keys = t.column("output_key")
        return np.concatenate([key_hashes(keys.slice(i, HASH_SLICE).to_pylist())
                               for i in range(0, len(keys), HASH_SLICE)] or [np.empty(0, np.uint64)])

    def source_keys(self) -> Iterator[list[str]]:
        """Every input this state knows, a slice at a time."""
        keys = self.table.column("source_key")
        for i in range(0, len(keys), HASH_SLICE):
            yield keys.slice(i, HASH_SLICE).to_pylist()

    def unseen(self) -> pa.Table:
        """Rows whose keys no lookup asked for: inputs gone from this run's listing."""
        return _decoded(self.table.filter(pa.array(~self.seen)) if len(self) else self.table)


def _decoded(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings: to_pylist() on dictionary arrays is ~6× slower."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table




def is_done(row: dict | None, item: ListedInput, model_version: str, params_hash: str) -> bool:
    if row is None or row["model_version"] != model_version or row["params_hash"] != params_hash:
        return False
    if row["status"] == "ok":
        return row["input_etag"] == item.etag and row["size_bytes"] == item.size
    if row["status"] in ("error", "skipped"):
        return row["error_reason"] in PERMANENT_REASONS and row["input_etag"] == item.etag
    return False
