"""Deciding what a run processes, streamed into Parquet chunks the Ray Data chain reads.

The keys come from a listing of SOURCE or from an input manifest (Parquet or CSV). Either way
they are streamed: the driver holds one chunk at a time, never the whole catalog (the previous
state of an incremental run is the exception: one small row per input, columnar, see
pipelines/batch/state.py: PreviousState).
"""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.manifest import MANIFEST_DIR, SCHEMA, ManifestWriter, conform, read_run
from pipelines.batch.state import PERMANENT_REASONS, PreviousState, is_done
from pipelines.storage import ListedInput, Location, NamingCounter, OutputNaming, list_inputs, open_location

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000
LOOKUP_BATCH = 10_000  # listed keys looked up in the previous state at once
KEY_COLUMNS = ("key", "source_key", "uri", "path")
INPUT_SCHEMA = pa.schema([("key", pa.string()), ("size", pa.int64()), ("etag", pa.string()),
                          ("prev_sha256", pa.string()), ("prev_output_key", pa.string()),
                          # Why the listing already knows the input is not to be read ("" if it is).
                          ("reason", pa.string()), ("message", pa.string())])


@dataclass
class Plan:
    dest: Location
    listed: int = 0
    candidates: int = 0
    skipped: int = 0
    pruned: int = 0
    input_files: list[str] = field(default_factory=list)
    naming: OutputNaming | None = None  # each input's output key (decided over the whole listing)

    def cleanup(self) -> None:
        for path in self.input_files:
            self.dest.fs.delete_file(path)


T = TypeVar("T")


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """itertools.batched, which arrives with Python 3.12."""
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def _entries(path: str, s3_endpoint: str | None) -> Iterator[str]:
    """The key column of a Parquet or CSV file, batch by batch."""
    parent, name = posixpath.split(path)
    loc = open_location(parent or ".", s3_endpoint)
    with loc.fs.open_input_file(loc.path(name)) as f:
        if name.endswith((".csv", ".csv.gz")):
            import pyarrow.csv as pacsv

            reader = pacsv.open_csv(f)
            batches = iter(reader)
            names = reader.schema.names
        else:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            batches = pf.iter_batches(batch_size=10_000)
        column = next((c for c in KEY_COLUMNS if c in names), names[0] if len(names) == 1 else None)
        if column is None:
            raise ValueError(f"input manifest {path} needs a column named one of {KEY_COLUMNS} (or a single column); "
                             f"it has {names}")
        for batch in batches:
            yield from (str(v) for v in batch.column(names.index(column)).to_pylist() if v)


def read_input_manifest(path: str, source: Location) -> Iterator[ListedInput]:
    """Keys relative to SOURCE, or URIs/paths under it. Sizes and ETags are unknown until read."""
    base = source.uri.rstrip("/") + "/"
    for entry in _entries(path, source.s3_endpoint):
        if "://" in entry or entry.startswith("/"):
            if not entry.startswith(base):
                raise ValueError(f"input manifest {path} names {entry!r}, which is not under SOURCE {source.uri}")
            entry = entry[len(base):]
        yield ListedInput(entry, -1, "")


def _done_in_run(dest: Location, run_id: str) -> PreviousState:
    """The inputs an unfinished run already finished (columnar, like the incremental state)."""
    t = read_run(dest, run_id, ["source_key", "status", "error_reason"])
    done = pc.or_(pc.equal(t.column("status"), "ok"),
                  pc.and_(pc.is_in(t.column("status"), pa.array(["error", "skipped"])),
                          pc.is_in(t.column("error_reason"), pa.array(sorted(PERMANENT_REASONS)))))
    return PreviousState(t.filter(pc.fill_null(done, False)).select(["source_key"]))


def plan_inputs(cfg, source: Location, dest: Location, run_id: str, resumed_run: str | None,
                writer: ManifestWriter) -> Plan:
    version, phash = cfg.model_version, cfg.params.params_hash()
    plan = Plan(dest)
    # An input manifest names a part of SOURCE: the earlier runs' inputs count for the naming too.
    previous = (PreviousState.load(dest) if (cfg.incremental or cfg.prune or cfg.input_manifest)
                else PreviousState.empty())
    counter = NamingCounter()
    for keys in previous.source_keys():
        counter.add(keys)
    done_here = _done_in_run(dest, resumed_run) if resumed_run else PreviousState.empty()
    chunk: list[dict] = []

    def flush() -> None:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(chunk, INPUT_SCHEMA), buf)
        key = posixpath.join(MANIFEST_DIR, run_id, "_inputs", f"inputs-{len(plan.input_files):05d}.parquet")
        dest.write_atomic(key, buf.getvalue())
        plan.input_files.append(dest.path(key))
        chunk.clear()

    items = read_input_manifest(cfg.input_manifest, source) if cfg.input_manifest else list_inputs(source)
    for batch in batched(items, LOOKUP_BATCH):
        plan.listed += len(batch)
        keys = [item.key for item in batch]
        counter.add(keys)
        planned: list[int] = []
        prevs = previous.lookup(keys)
        for item, prev, done, at in zip(batch, prevs, done_here.lookup(keys), previous.last_found.tolist()):
            if done is not None or (cfg.incremental and is_done(prev, item, version, phash)):
                plan.skipped += 1
                continue
            planned.append(at)
            # Same model and parameters but a new ETag/mtime (or none known): if the bytes hash the
            # same, the read stage reuses the existing output instead of running the model again.
            reuse = (cfg.incremental and prev is not None and prev["status"] == "ok"
                     and prev["model_version"] == version and prev["params_hash"] == phash)
            chunk.append({"key": item.key, "size": item.size, "etag": item.etag,
                          "prev_sha256": prev["sha256"] if reuse else "",
                          "prev_output_key": prev["output_key"] if reuse else "",
                          "reason": item.reason, "message": item.message})
            plan.candidates += 1
            if len(chunk) >= CHUNK_ROWS:
                flush()
        previous.mark_planned(planned)
    if chunk:
        flush()
    if cfg.prune:
        plan.pruned = _prune(dest, previous.unseen(), writer)
    plan.naming = counter.naming(cfg.params.extension, previous.taken_outputs(pruned_unseen=cfg.prune))
    return plan


def _prune(dest: Location, gone: pa.Table, writer: ManifestWriter) -> int:
    """Remove outputs whose inputs are gone; record a `pruned` row so the consolidated view drops them."""
    for batch in gone.select(["output_key"]).to_batches(max_chunksize=LOOKUP_BATCH):
        for key in batch.column(0).to_pylist():
            if key:
                dest.delete(key)
    if gone.num_rows:
        t = conform(gone)
        t = t.set_column(SCHEMA.get_field_index("status"), "status", pa.array(["pruned"] * gone.num_rows))
        writer.add(t)
        log.warning("pruned %d outputs whose inputs are gone", gone.num_rows)
    return gone.num_rows
