"""CPU seconds of a bench process and every process under it (raylet, GCS, Ray workers), from /proc.

Ray reaps its workers without adding their time to the raylet's, so live processes are sampled every
`every` s: one that exits loses at most its last interval. Processes whose command line names a
`MapBatches(` operator served as inference actors; their time is reported apart, and their count
confirms the pool had the size asked for.
"""

from __future__ import annotations

import os
import threading

ACTOR_MARK = "MapBatches("


class TreeCPU:
    def __init__(self, every: float = 0.5):
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.actors: set[int] = set()
        self.every = every
        self._sample()
        self.first = dict(self.last)
        self.old_actors = set(self.actors)  # a previous job's actors, still exiting
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        ticks, kids = {}, {}
        for d in filter(str.isdigit, os.listdir("/proc")):
            try:
                f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            ticks[int(d)] = int(f[11]) + int(f[12])  # utime + stime
            kids.setdefault(int(f[1]), []).append(int(d))
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in ticks:
                self.last[pid] = ticks[pid]
                self.first.setdefault(pid, 0)  # born during the run: all its time counts
            todo += kids.get(pid, [])
            if pid not in self.actors:
                try:
                    if ACTOR_MARK in open(f"/proc/{pid}/cmdline").read():
                        self.actors.add(pid)
                except OSError:
                    pass

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def stop(self) -> tuple[float, float]:
        """(seconds in inference actors, seconds in every other process of the tree)."""
        self._stop.set()
        self._thread.join()
        self._sample()
        hz = os.sysconf("SC_CLK_TCK")
        actor = sum(self.last[p] - self.first.get(p, 0) for p in self.last if p in self.actors) / hz
        total = sum(self.last[p] - self.first.get(p, 0) for p in self.last) / hz
        return actor, total - actor

    @property
    def actors_used(self) -> int:
        return len(self.actors - self.old_actors)
