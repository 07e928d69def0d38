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

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.manifest import MANIFEST_DIR, list_runs, read_run
from pipelines.storage import ListedInput, Location

# Errors that a retry cannot fix: the same bytes fail the same way. Read/write failures can.
PERMANENT_REASONS = frozenset({"empty", "corrupt", "unsupported_format", "too_many_pixels", "too_large",
                               "unsafe_key"})
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
    """One current row per input across all runs (the last one wins); pruned inputs dropped."""
    tables = []
    for run_id in list_runs(dest):
        t = read_run(dest, run_id)
        if t.num_rows:
            tables.append(t.select([c for c in (columns or t.column_names) if c in t.column_names]))
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in (columns or ["source_key"])})
    t = pa.concat_tables(tables, promote_options="default")
    t = t.append_column("_row", pa.array(range(t.num_rows), pa.int64()))
    last = t.group_by("source_key").aggregate([("_row", "max")]).column("_row_max")
    t = t.take(pc.take(last, pc.sort_indices(last))).drop_columns(["_row"])  # in the order written
    return t.filter(pc.not_equal(t.column("status"), "pruned"))


def current_rows(dest: Location) -> dict[str, dict]:
    """source key → its current row (for the incremental filter and for pruning)."""
    view = consolidated(dest, STATE_COLUMNS)
    return {r["source_key"]: r for r in view.to_pylist()}


def is_done(row: dict | None, item: ListedInput, model_version: str, params_hash: str) -> bool:
    if row is None or row["model_version"] != model_version or row["params_hash"] != params_hash:
        return False
    if row["status"] == "ok":
        return row["input_etag"] == item.etag and row["size_bytes"] == item.size
    if row["status"] == "error":
        return row["error_reason"] in PERMANENT_REASONS and row["input_etag"] == item.etag
    return False
