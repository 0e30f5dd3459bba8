"""One background thread that runs a few jobs every so many seconds (the stores' retention).

    timer = Periodic("retention", cfg.store.retention_interval, [store.enforce_retention, ...])
    timer.start()      # the jobs run now, then every interval
    ...
    timer.stop()       # a pass in progress finishes; no new one starts

A job that raises is logged (with its traceback) and the others still run; the timer keeps going. `run_due`
is the timer's one step: the thread calls it, and tests call it with their own clock (no sleeping).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class Periodic:
    """Runs `jobs` every `interval` seconds of `clock` on one daemon thread named `name`."""

    def __init__(self, name: str, interval: float, jobs: Sequence[Callable[[], object]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.interval = interval
        self.jobs = list(jobs)
        self.clock = clock
        self.passes = 0  # passes run so far
        self._next: float | None = None  # when the next pass is due (None: now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_due(self) -> bool:
        """Run a pass of every job if one is due by `clock`; whether it ran."""
        now = self.clock()
        if self._next is not None and now < self._next:
            return False
        self._next = now + self.interval
        for job in self.jobs:  # a pass runs to its end, even when stop() is called meanwhile
            try:
                job()
            except Exception:
                log.exception("%s: %s failed; it runs again in %.0f s", self.name,
                              getattr(job, "__qualname__", job), self.interval)
        self.passes += 1
        return True

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            assert self._next is not None
            self._stop.wait(max(0.0, self._next - self.clock()))

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (a pass in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - only if SQLite hangs
                log.error("%s: the thread did not stop within %s s", self.name, timeout)
            self._thread = None
