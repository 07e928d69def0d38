"""The previous state the planner consults: columnar lookups, exact under hash collisions, no cluster."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.batch import state
from pipelines.batch.planning import batched
from pipelines.batch.state import STATE_COLUMNS, PreviousState


def state_table(keys: list[str]) -> pa.Table:
    rows = [{c: f"{c}-of-{k}" for c in STATE_COLUMNS} | {"source_key": k, "size_bytes": i}
            for i, k in enumerate(keys)]
    return pa.Table.from_pylist(rows)


def test_lookup_returns_each_keys_row_in_order_and_the_unseen_rest():
    keys = [f"photos/{i:04d}.jpg" for i in range(250)]
    prev = PreviousState(state_table(keys))
    asked = ["photos/0007.jpg", "new/a.jpg", "photos/0249.jpg", "photos/0000.jpg"]
    rows = prev.lookup(asked)
    assert [r and r["source_key"] for r in rows] == ["photos/0007.jpg", None, "photos/0249.jpg", "photos/0000.jpg"]
    assert rows[0]["size_bytes"] == 7 and rows[0]["output_key"] == "output_key-of-photos/0007.jpg"
    unseen = prev.unseen().column("source_key").to_pylist()
    assert len(unseen) == 247 and not {"photos/0007.jpg", "photos/0249.jpg", "photos/0000.jpg"} & set(unseen)


def test_lookup_is_exact_when_every_key_shares_one_hash(monkeypatch):
    monkeypatch.setattr(state, "key_hashes", lambda ks: np.full(len(ks), 42, dtype=np.uint64))
    keys = ["a", "b", "c", "d"]
    prev = PreviousState(state_table(keys))
    assert [r and r["source_key"] for r in prev.lookup(["c", "x", "a"])] == ["c", None, "a"]
    assert sorted(prev.unseen().column("source_key").to_pylist()) == ["b", "d"]


def test_empty_state_answers_none_and_has_nothing_unseen():
    prev = PreviousState.empty()
    assert prev.lookup(["a", "b"]) == [None, None] and prev.lookup([]) == []
    assert len(prev) == 0 and prev.unseen().num_rows == 0


def test_key_hashes_are_stable_across_processes():
    # blake2b, not Python's per-process salted hash(): a fixed value guards against a silent switch.
    hashes = state.key_hashes(["photos/a.jpg", "photos/b.jpg"])
    assert hashes.dtype == np.uint64 and hashes[0] == 85448847510889372 and hashes[0] != hashes[1]


def test_batched_covers_every_item_once():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]] and list(batched([], 3)) == []


def test_consolidated_reads_only_the_state_columns_and_fills_what_old_parts_lack(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.manifest import SCHEMA, read_run
    from pipelines.batch.state import consolidated
    from pipelines.storage import open_location

    for run in ("r1", "r2"):
        (tmp_path / "_manifests" / run).mkdir(parents=True)
    first = pa.Table.from_pylist([{"source_key": "a", "status": "ok", "output_key": "a.png", "size_bytes": 3}], SCHEMA)
    pq.write_table(first, tmp_path / "_manifests/r1/part-00000.parquet")
    # A part from an older version, without most columns: the later row for "a" still wins.
    older = pa.table({"source_key": ["a", "b"], "status": ["error", "ok"], "size_bytes": pa.array([4, 5], pa.int64())})
    pq.write_table(older, tmp_path / "_manifests/r2/part-00000.parquet")
    dest = open_location(str(tmp_path))

    part = read_run(dest, "r2", ["source_key", "sha256", "size_bytes"])
    assert part.column_names == ["source_key", "sha256", "size_bytes"] and part.column("sha256").null_count == 2
    view = consolidated(dest, STATE_COLUMNS)
    assert view.column_names == STATE_COLUMNS
    assert [(r["source_key"], r["status"], r["size_bytes"], r["output_key"]) for r in view.to_pylist()] == [
        ("a", "error", 4, None), ("b", "ok", 5, None)]
    assert read_run(dest, "no-such-run", ["source_key"]).num_rows == 0


def test_consolidated_over_many_runs_matches_last_row_wins(tmp_path):
    import random

    import pyarrow.parquet as pq

    from pipelines.manifest import SCHEMA
    from pipelines.batch.state import consolidated
    from pipelines.storage import open_location

    rng = random.Random(7)
    expected: dict[str, dict] = {}
    for run in range(12):  # a full first run, then nights of changes, errors and prunes: folds happen between
        keys = [f"k{i:03d}" for i in range(200)] if run == 0 else rng.sample([f"k{i:03d}" for i in range(260)], 40)
        rows = [{"source_key": k, "status": rng.choice(["ok", "ok", "error", "pruned"]) if run else "ok",
                 "size_bytes": run} for k in keys]
        (tmp_path / "_manifests" / f"run-{run:02d}").mkdir(parents=True)
        for part in range(2):
            chunk = rows[part::2]
            path = tmp_path / f"_manifests/run-{run:02d}/part-{part:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(chunk, SCHEMA), path)
            expected.update({r["source_key"]: r for r in chunk})
    view = consolidated(open_location(str(tmp_path)), STATE_COLUMNS)
    got = {r["source_key"]: (r["status"], r["size_bytes"]) for r in view.to_pylist()}
    assert got == {k: (r["status"], r["size_bytes"]) for k, r in expected.items() if r["status"] != "pruned"}
    assert view.num_rows == len(got)  # one row per key
