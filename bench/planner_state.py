"""Driver memory of `--incremental`/`--prune` planning: the previous state as a dict vs columnar.

The planner of a nightly run consults each input's current manifest row. Until 2026-11-27 it held
them as a dict of row dicts (`{key: row}` from `Table.to_pylist()`); now it keeps the Arrow table
and a sorted 64-bit key hash (pipelines/batch/state.py: PreviousState). Both are measured here side by
side, each in a fresh process, on the same synthetic consolidated view: N rows of the state
columns with catalog-like keys, ETags, SHA-256s, one model version and one parameters hash.

Reported per layout: the bytes it holds once built (Python objects and numpy arrays counted by
tracemalloc, Arrow buffers by Arrow's pool; the view itself dropped where the layout does not keep
it), the peak while building (Python peak + Arrow peak: an upper bound, the two need not
coincide), build seconds, and seconds to look up every key in batches of 10,000 as the planner
does (without tracemalloc running).

    python bench/planner_state.py                      # 100k and 1M inputs
    python bench/planner_state.py --sizes 20000        # a quick look
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def synthetic_view(n: int):
    import hashlib

    import pyarrow as pa

    keys = [f"catalog/shard-{i % 997:04d}/sku-{i:09d}.jpg" for i in range(n)]
    digest = [hashlib.sha256(k.encode()).hexdigest() for k in keys]
    return pa.table({
        "source_key": keys,
        "output_key": [k[:-4] + ".png" for k in keys],
        "status": ["ok"] * n,
        "error_reason": pa.nulls(n, pa.string()),
        "size_bytes": pa.array(range(100_000, 100_000 + n), pa.int64()),
        "input_etag": [d[:32] for d in digest],
        "sha256": digest,
        "model_version": ["u2netp-rembg-0.1.3"] * n,
        "params_hash": ["5f1c0a9e2b7d4c31"] * n,
    })


def child(layout: str, n: int) -> dict:
    """Runs in its own process: build one layout, then look every key up.

    Memory is counted exactly rather than read from RSS: Python objects and numpy arrays through
    tracemalloc (started after the listing's keys exist), Arrow buffers through its memory pool.
    """
    sys.path.insert(0, str(ROOT))
    import pyarrow as pa

    from pipelines.batch.planning import LOOKUP_BATCH, batched
    from pipelines.batch.state import PreviousState

    pool = pa.default_memory_pool()
    arrow_base = pool.bytes_allocated()
    view = synthetic_view(n)  # what consolidated() returns
    keys = view.column("source_key").to_pylist()  # stands in for the listing, outside both layouts
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    if layout == "dict":
        state = {r["source_key"]: r for r in view.to_pylist()}  # the planner before PreviousState

        def lookup(batch):
            return [state.get(k) for k in batch]
    else:
        state = PreviousState(view)
        lookup = state.lookup
    build_s = time.perf_counter() - t0
    del view  # the planner keeps only its layout
    gc.collect()
    python_held, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow_held = pool.bytes_allocated() - arrow_base
    arrow_peak = pool.max_memory() - arrow_base
    t0 = time.perf_counter()
    found = sum(r is not None for batch in batched(keys, LOOKUP_BATCH) for r in lookup(batch))
    lookup_s = time.perf_counter() - t0
    assert found == n, (found, n)
    held = python_held + arrow_held
    return {"layout": layout, "inputs": n, "held_mb": round(held / 2**20, 1),
            "python_mb": round(python_held / 2**20, 1), "arrow_mb": round(arrow_held / 2**20, 1),
            "peak_mb": round((python_peak + arrow_peak) / 2**20, 1), "bytes_per_input": round(held / n),
            "build_s": round(build_s, 2), "lookup_s": round(lookup_s, 2)}


def write_runs(root: Path, n: int, runs: int, changed: float) -> None:
    """DEST/_manifests as `runs` nights leave it: a full first run, then `changed` of the catalog a night."""
    import random

    import pyarrow.parquet as pq

    from pipelines.manifest import conform

    view = synthetic_view(n)
    rng = random.Random(0)
    for run in range(runs):
        t = view if run == 0 else view.take(sorted(rng.sample(range(n), int(n * changed))))
        (root / "_manifests" / f"run-{run:03d}").mkdir(parents=True)
        pq.write_table(conform(t), root / "_manifests" / f"run-{run:03d}" / "part-00000.parquet")


def child_consolidate(layout: str, root: str) -> dict:
    """Runs in its own process: the consolidated view over every run, all at once or folded."""
    sys.path.insert(0, str(ROOT))
    import pyarrow as pa

    from pipelines.batch import state
    from pipelines.manifest import list_runs, read_run
    from pipelines.storage import open_location

    pool = pa.default_memory_pool()
    dest = open_location(root)
    base = pool.bytes_allocated()
    t0 = time.perf_counter()
    if layout == "all-at-once":  # consolidated() before folding: every run read, then deduplicated
        tables = [read_run(dest, r, state.STATE_COLUMNS) for r in list_runs(dest)]
        view = state._last_per_key(tables)
        del tables
    else:
        view = state.consolidated(dest, state.STATE_COLUMNS)
    seconds = time.perf_counter() - t0
    return {"layout": layout, "rows": view.num_rows, "peak_mb": round((pool.max_memory() - base) / 2**20, 1),
            "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated input counts")
    ap.add_argument("--runs", type=int, default=31, help="nightly runs for the consolidation figure (0: skip)")
    ap.add_argument("--changed", type=float, default=0.05, help="share of the catalog each later night redoes")
    ap.add_argument("--runs-inputs", type=int, default=200_000, help="catalog size for the consolidation figure")
    ap.add_argument("--child", nargs=2, metavar=("LAYOUT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--child-consolidate", nargs=2, metavar=("LAYOUT", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    if args.child_consolidate:
        print(json.dumps(child_consolidate(*args.child_consolidate)))
        return

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for layout in ("dict", "columnar"):
            out = subprocess.run([sys.executable, __file__, "--child", layout, str(n)], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| inputs | layout | held MB (Python + Arrow) | bytes/input | build peak MB | build s | lookup s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['inputs']:,} | {r['layout']} | {r['held_mb']:,.1f} ({r['python_mb']:,.1f} + {r['arrow_mb']:,.1f}) "
              f"| {r['bytes_per_input']:,} | {r['peak_mb']:,.0f} | {r['build_s']:.2f} | {r['lookup_s']:.2f} |")
    for n in sorted({r["inputs"] for r in results}):
        d, c = (next(r for r in results if r["inputs"] == n and r["layout"] == lay) for lay in ("dict", "columnar"))
        print(f"{n:,} inputs: columnar holds {d['held_mb'] / max(c['held_mb'], 0.1):.1f}× less than the dict")
    if args.runs:
        sys.path.insert(0, str(ROOT))
        with tempfile.TemporaryDirectory() as tmp:
            write_runs(Path(tmp), args.runs_inputs, args.runs, args.changed)
            print(f"\nconsolidated view: {args.runs_inputs:,} inputs, {args.runs} runs "
                  f"(a full one, then {args.changed:.0%} of the catalog a night); Arrow peak")
            for layout in ("all-at-once", "folded"):
                out = subprocess.run([sys.executable, __file__, "--child-consolidate", layout, tmp], check=True,
                                     capture_output=True, text=True).stdout
                print(json.dumps(json.loads(out.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
