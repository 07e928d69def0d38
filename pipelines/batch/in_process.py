"""The job's stages in this process: threads instead of Ray tasks and actors, for a run on one machine's CPUs.

The same stages as the Ray Data chain (pipelines/batch/stages.py: read_input → decode_input →
Predictor → render_output), so a run's cut-outs and manifest rows are the same either way
(tests/test_in_process.py). What is left out is what a run on one machine does not need: Ray's
start (GCS, raylet, workers: 10–16 s on a 2-core box before the first output, bench/RESULTS.md),
worker processes, and moving every image through an object store.

Layout (pipelines/batch/execution.py: plan_local): one feeder thread groups the planned inputs into
batches and hands their reading and decoding to a pool of worker threads; each inference session
has its own thread, takes the next batch, runs the model and hands the rows' post-processing,
encoding and writing to the same pool; this thread writes the manifest in the order batches
finish. Bounded queues keep a fixed number of batches in flight, so memory does not grow with
the catalog. Reading, decoding, ONNX Runtime, OpenCV and zlib release the GIL, so the threads
use the cores.

A failure that is not an input's own (those become manifest rows in the stages) stops the run:
rows finished so far are in the manifest and a rerun of the same command does the rest, as with Ray.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.batch.config import JobConfig
from pipelines.batch.execution import LocalPlan, available_cpus, plan_local, until_stalled
from pipelines.batch.planning import Plan
from pipelines.batch.stages import Predictor, decode_input, read_input, render_output
from pipelines.manifest import SCHEMA, ManifestWriter
from pipelines.storage import Location, retry_transient

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a blocked thread looks whether the run was stopped
_DONE = object()  # an inference thread's last item on the results queue


def planned_rows(plan: Plan, dest: Location) -> Iterator[dict]:
    """The planned inputs, chunk by chunk (pipelines/batch/planning.py wrote them under DEST)."""
    for path in plan.input_files:
        table = retry_transient(lambda path=path: pq.read_table(path, filesystem=dest.fs), f"reading {path}")
        yield from table.to_pylist()


def as_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows → the numpy batch Ray Data hands an actor: one array per column (object arrays for text and
    bytes, which NumPy's fixed-width types would cut at a trailing NUL)."""
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], np.ndarray):
            batch[key] = np.stack(values)
        else:
            column = np.empty(len(values), object)
            column[:] = values
            batch[key] = column
    return batch


def as_rows(batch: dict[str, np.ndarray]) -> list[dict]:
    n = len(next(iter(batch.values())))
    return [{key: column[i] for key, column in batch.items()} for i in range(n)]


class _Run:
    """One run's threads and queues; `stop` makes every thread give up at its next wait."""

    def __init__(self, cfg: JobConfig, source: Location, dest: Location, plan: Plan, layout: LocalPlan):
        self.cfg, self.source, self.dest, self.plan, self.layout = cfg, source, dest, plan, layout
        self.stop = threading.Event()
        # Batches whose reading and decoding were handed to the pool: at least two per session wait, so a
        # session never waits for decoding once the first batch is in.
        self.batches: queue.Queue = queue.Queue(maxsize=max(2 * layout.sessions, 8))
        # Batches rendering (or an inference thread's _DONE or exception): bounded likewise.
        self.results: queue.Queue = queue.Queue(maxsize=max(2 * layout.sessions, 8))
        self.pool = ThreadPoolExecutor(layout.workers, thread_name_prefix="matting-io")
        spec = cfg.inference.spec
        self.read_kwargs = {"source": source, "max_bytes": cfg.max_bytes, "dest": dest, "naming": plan.naming}
        self.decode_kwargs = {"preprocess": spec.preprocess, "max_pixels": cfg.max_pixels}
        self.render_kwargs = {"dest": dest, "params": cfg.params, "model_name": spec.name,
                              "model_version": cfg.model_version, "background": cfg.background,
                              "upsample": spec.preprocess.upsample}

    def put(self, q: queue.Queue, item) -> bool:
        """Put `item` unless the run stops first (then False)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def prepare(self, row: dict) -> dict:
        return decode_input(read_input(row, **self.read_kwargs), **self.decode_kwargs)

    def feed(self) -> None:
        """Group the planned inputs into batches; their reading and decoding start in the pool now."""
        try:
            group: list[Future] = []
            batch_size = self.cfg.batch_size_for("local")
            for row in planned_rows(self.plan, self.dest):
                group.append(self.pool.submit(self.prepare, row))
                if len(group) == batch_size:
                    if not self.put(self.batches, group):
                        return
                    group = []
            if group and not self.put(self.batches, group):
                return
        except BaseException as e:  # handed to the driver through an inference thread
            self.put(self.batches, e)
            return
        for _ in range(self.layout.sessions):
            self.put(self.batches, None)

    def infer(self, config) -> None:
        """One inference session: load the model once, then batch after batch until the feeder's end."""
        try:
            predictor = Predictor(config, self.cfg.s3_endpoint)
            while not self.stop.is_set():
                try:
                    group = self.batches.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if group is None:
                    break
                if isinstance(group, BaseException):
                    raise group
                out = predictor(as_columns([f.result() for f in group]))
                rendering = [self.pool.submit(render_output, row, **self.render_kwargs) for row in as_rows(out)]
                if not self.put(self.results, rendering):
                    return
        except BaseException as e:  # the driver re-raises it
            self.put(self.results, e)
            return
        self.put(self.results, _DONE)

    def consume(self, writer: ManifestWriter) -> None:
        """Write every batch's manifest rows as the batch finishes; raise what a thread raised, or
        JobStalled when nothing finishes for the stall timeout."""
        running = self.layout.sessions
        cause = "No stage of this process finished an image."
        for item in until_stalled(self.results, self.cfg.stall_timeout_s, self.status, cause):
            if item is _DONE:
                running -= 1
                if not running:
                    return
                continue
            if isinstance(item, BaseException):
                raise item
            rows = [f.result() for f in item]
            writer.add(pa.Table.from_pylist(rows, schema=SCHEMA))

    def status(self) -> str:
        return (f"in this process: {self.batches.qsize()} batches queued for inference, "
                f"{self.results.qsize()} batches being rendered")


def execute(cfg: JobConfig, source: Location, dest: Location, plan: Plan, writer: ManifestWriter) -> None:
    """Every planned input through the stages in this process, each result row into `writer`."""
    layout = plan_local(cfg, cpus=available_cpus(), inputs=plan.candidates)
    config = cfg.inference.replace(threads=layout.threads, device="cpu")
    log.info("in this process: %d inference sessions × %d threads, %d I/O and post-processing threads",
             layout.sessions, layout.threads, layout.workers)
    run = _Run(cfg, source, dest, plan, layout)
    threads = [threading.Thread(target=run.feed, name="matting-feed", daemon=True)]
    threads += [threading.Thread(target=run.infer, args=(config,), name=f"matting-infer-{i}", daemon=True)
                for i in range(layout.sessions)]
    for t in threads:
        t.start()
    finished = False
    try:
        run.consume(writer)
        finished = True
    finally:
        run.stop.set()  # on failure: the other threads give up at their next wait
        for t in threads:  # a failed run does not wait long for a thread stuck in a read
            t.join(timeout=None if finished else 60)
        run.pool.shutdown(wait=finished, cancel_futures=True)
