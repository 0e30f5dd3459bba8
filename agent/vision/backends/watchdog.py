"""No silent hang: a backend wrapper that times every inference call and falls back to the CPU.

`GuardedBackend(primary_factory, fallback_factory, timeout, on_degraded)` implements the backend protocol
itself. Every call to the primary (TensorRT) backend runs in a worker thread and is waited for at most
`timeout` seconds ([detector] inference_timeout). A call that stalls or raises is logged with its context
(network, batch shape, elapsed time), then:

1. the primary backend is rebuilt once (a fresh object from `primary_factory`: engines reloaded, new CUDA
   stream and buffers) and the same call is retried on it;
2. if the rebuild fails, or the rebuilt backend stalls or fails too (now or on any later call), the
   wrapper switches for good to the fallback (ONNX Runtime on the CPU) backend, runs the call there and
   reports a degraded status: `degraded` becomes True, `degraded_reason` says why, and `on_degraded(reason)`
   is called once (the service publishes it in its status message).

Detections keep coming out in every case; a caller never waits longer than about twice the timeout plus
the rebuild and fallback load times, even when the GPU never answers.

A truly hung GPU call cannot be killed from Python: the worker thread stuck in it is abandoned (it is a
daemon thread, so it does not keep the process alive at exit) together with the backend object it holds
(not closed: freeing GPU memory under a running kernel could hang as well). If the driver is wedged
badly enough to take the whole process down with it, the systemd watchdog of the service (issue 7) is
the last line of defence: it restarts the agent.

Creating the primary (which may build TensorRT engines: minutes) also runs in a worker, bounded by
`build_timeout`; past it the agent starts degraded on the CPU while the abandoned build may still finish
and store its engine for the next start.

Caller errors (unknown network, malformed batch) are checked up front and raised as BackendError without
touching the primary backend: they say nothing about the GPU's health.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.vision.backends import BackendError, check_batch

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class InferenceTimeoutError(BackendError):
    """The primary backend did not answer within the timeout."""


class _Worker:
    """One daemon thread running jobs one at a time; abandoned (never joined) when a job hangs."""

    def __init__(self, label: str):
        self._jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"inference-{label}-{next(_ids)}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, done, box = job
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # handed to the waiting caller
                box["error"] = exc
            done.set()

    def call(self, fn: Callable, args: tuple, timeout: float | None) -> Any:
        done = threading.Event()
        box: dict[str, Any] = {}
        self._jobs.put((fn, args, done, box))
        if not done.wait(timeout):
            raise InferenceTimeoutError(f"no answer within {timeout:.1f} s")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def stop(self) -> None:
        self._jobs.put(None)


class GuardedBackend:
    """The primary backend behind a watchdog, one rebuild, then the fallback backend (see module doc).

    primary_factory / fallback_factory: () -> backend; the primary is created at once (in a worker, within
    `build_timeout`), the fallback only when needed. timeout: seconds one primary call may take.
    on_degraded: called once with the reason when the wrapper falls back for good.
    """

    def __init__(self, primary_factory: Callable[[], Any], fallback_factory: Callable[[], Any],
                 timeout: float, on_degraded: Callable[[str], None] | None = None,
                 build_timeout: float = 900.0):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.build_timeout = float(build_timeout)
        self._primary_factory = primary_factory
        self._fallback_factory = fallback_factory
        self._on_degraded = on_degraded
        self._lock = threading.RLock()
        self._primary: Any = None
        self._worker: _Worker | None = None
        self._fallback: Any = None
        self.rebuilds = 0  # times the primary was rebuilt (at most once)
        self.failures: list[str] = []  # one line per failed or stalled primary call / build
        self.degraded = False
        self.degraded_reason = ""
        try:
            self._start_primary()
        except Exception as exc:
            self._degrade(f"primary backend could not start: {exc}")

    # -- status -------------------------------------------------------------------------------------
    @property
    def active(self) -> Any:
        """The backend answering calls now."""
        return self._fallback if self.degraded else self._primary

    @property
    def name(self) -> str:
        return str(getattr(self.active, "name", "none"))

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "degraded": self.degraded, "reason": self.degraded_reason,
                "rebuilds": self.rebuilds, "failures": len(self.failures)}

    # -- protocol -----------------------------------------------------------------------------------
    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        batch = check_batch(net, batch)
        with self._lock:
            if self.degraded:
                return self._fallback.run(net, batch)
            start = time.monotonic()
            try:
                return self._call_primary(net, batch)
            except Exception as exc:
                self._note_failure(net, batch, exc, time.monotonic() - start)
            if self.rebuilds == 0:
                try:
                    self._rebuild()
                    start = time.monotonic()
                    return self._call_primary(net, batch)
                except Exception as exc:
                    self._note_failure(net, batch, exc, time.monotonic() - start, after_rebuild=True)
            self._degrade(self.failures[-1])
            return self._fallback.run(net, batch)

    def close(self) -> None:
        with self._lock:
            self._drop_primary(close=True)
            if self._fallback is not None:
                self._fallback.close()
                self._fallback = None

    def __repr__(self) -> str:
        return f"GuardedBackend(active={self.name!r}, degraded={self.degraded}, timeout={self.timeout})"

    # -- internals ----------------------------------------------------------------------------------
    def _start_primary(self) -> None:
        worker = _Worker("primary")
        try:
            self._primary = worker.call(self._primary_factory, (), self.build_timeout)
        except BaseException:
            worker.stop()  # when the factory hangs the thread stays stuck in it: abandoned
            raise
        self._worker = worker

    def _call_primary(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._primary is None or self._worker is None:
            raise BackendError("primary backend is not running")
        return self._worker.call(self._primary.run, (net, batch), self.timeout)

    def _note_failure(self, net: str, batch: np.ndarray, exc: BaseException, elapsed: float,
                      after_rebuild: bool = False) -> None:
        stalled = isinstance(exc, InferenceTimeoutError)
        what = "stalled" if stalled else "failed"
        line = (f"{getattr(self._primary, 'name', 'primary')} {net} {what} on batch {tuple(batch.shape)} "
                f"after {elapsed:.2f} s{' (rebuilt backend)' if after_rebuild else ''}: "
                f"{type(exc).__name__}: {exc}")
        self.failures.append(line)
        log.error("inference %s", line)
        # a stalled worker is stuck inside the GPU call: abandon it with its backend (see module doc)
        self._drop_primary(close=not stalled)

    def _drop_primary(self, close: bool) -> None:
        primary, worker = self._primary, self._worker
        self._primary, self._worker = None, None
        if worker is not None:
            if close and primary is not None:
                try:
                    worker.call(primary.close, (), self.timeout)
                except Exception as exc:
                    log.warning("closing the %s backend failed: %s", getattr(primary, "name", "primary"), exc)
            worker.stop()

    def _rebuild(self) -> None:
        self.rebuilds += 1
        start = time.monotonic()
        log.warning("rebuilding the primary inference backend (once)")
        try:
            self._start_primary()
        except Exception as exc:
            raise BackendError(f"rebuild failed after {time.monotonic() - start:.1f} s: {exc}") from exc
        log.warning("primary backend %s rebuilt in %.1f s", self.name, time.monotonic() - start)

    def _degrade(self, reason: str) -> None:
        if self.degraded:
            return
        self._drop_primary(close=False)
        self._fallback = self._fallback_factory()
        self.degraded = True
        self.degraded_reason = reason
        log.error("inference degraded: now on the %s backend (%s)", self.name, reason)
        if self._on_degraded is not None:
            try:
                self._on_degraded(reason)
            except Exception:
                log.exception("on_degraded callback failed")
