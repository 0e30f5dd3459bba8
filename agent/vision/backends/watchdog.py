"""No silent hang: a backend wrapper that times every inference call and falls back to the CPU.

`GuardedRunner(primary_factory, fallback_factory, timeout, on_degraded, request_restart)` implements the
runner protocol itself (agent/vision/backends/__init__.py), for any runner: MTCNN's and the ResNet's
TensorRT runners are both put behind it by `tensorrt.create_tensorrt_runner`. Every call to the primary
(TensorRT) runner runs in a worker thread and is waited for at most `timeout` seconds ([detector]
inference_timeout for MTCNN). A call that stalls or raises is logged with its context (network, batch
shape, elapsed time), answered at once by the fallback (ONNX Runtime on the CPU), and then, by what went
wrong:

- the CUDA context is lost (`DeviceLostError`, or an error text naming a sticky CUDA error such as an
  illegal memory access or an unspecified launch failure: the CUDA documentation says the process "must
  be terminated and relaunched"), or a call stalled (timeout): no rebuild - it would reuse the same
  primary context, where a hung kernel hangs the rebuild's warm-up too while the abandoned engine's GPU
  memory is still held (twice the memory on a 4 GB board). The wrapper switches to the fallback for good
  and asks for a restart (`request_restart`, see below): a fresh process gets a fresh context;
- another error, the first time: the primary backend is rebuilt ONCE, in a
  background thread, off the inference lock (bounded by `build_timeout`); calls meanwhile go to the
  fallback (`rebuilding` and `degraded` are True). When the rebuild succeeds, the GPU serves again and
  `degraded` is False; when it fails or times out, the wrapper falls back for good;
- an error of the rebuilt backend: the fallback for good.

"For good" means: `degraded` stays True, `degraded_reason` says why, `on_degraded(reason)` is called once,
and `request_restart(reason)` is called once (the default for the service, `ask_systemd_for_restart`,
sends `WATCHDOG=trigger`: systemd then acts as if the watchdog had expired and `Restart=on-failure`
restarts the agent with a fresh CUDA context) - unless the primary failed within `restart_min_uptime`
seconds of its start: a GPU that breaks again right after every start would only burn the unit's start
limit (StartLimitBurst=5 in 10 minutes) and end with no agent at all, so then the agent stays on the CPU
and says so. A primary that cannot start at all degrades at once, without a restart request.

Detections keep coming out in every case, and a caller never waits longer than `timeout` plus one CPU
run (plus loading the fallback the first time): never for a rebuild, even when the GPU never answers.

A truly hung GPU call cannot be killed from Python: the worker thread stuck in it is abandoned (it is a
daemon thread, so it does not keep the process alive at exit) together with the backend object it holds
(not closed: freeing GPU memory under a running kernel could hang as well). If the driver is wedged
badly enough to take the whole process down with it, the systemd watchdog of the service is the last
line of defence: it restarts the agent.

Creating the primary at start (which may build TensorRT engines: minutes) also runs in a worker, bounded
by `build_timeout`; past it the agent starts degraded on the CPU while the abandoned build may still
finish and store its engine for the next start.

Caller errors (unknown network, malformed batch) are checked up front (`check`, by default MTCNN's
`check_batch`) and raised as RunnerError without touching the primary backend: they say nothing about
the GPU's health.
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

from agent.systemd import BUILD_TIMEOUT
from agent.vision.backends import RunnerError, check_batch

log = logging.getLogger(__name__)

_ids = itertools.count(1)

# CUDA errors after which "the process is left in an inconsistent state and any further CUDA work will
# return the same error. To continue using CUDA, the process must be terminated and relaunched" (CUDA
# runtime API, cudaError): the texts cudaGetErrorString/cuGetErrorString give and the enum names, as they
# appear in pycuda's exceptions ("cuStreamSynchronize failed: an illegal memory access was encountered")
# and in TensorRT's log ("... Cuda Runtime (an illegal memory access was encountered)"). Matched
# case-insensitively as substrings.
STICKY_CUDA_ERRORS = (
    "an illegal memory access was encountered", "illegal_address", "cudaerrorillegaladdress",  # 700
    "the launch timed out and was terminated", "launch_timeout", "cudaerrorlaunchtimeout",  # 702
    "device-side assert triggered", "cuda_error_assert", "cudaerrorassert",  # 710
    "hardware stack error", "hardware_stack_error", "cudaerrorhardwarestackerror",  # 714
    "an illegal instruction was encountered", "illegal_instruction", "cudaerrorillegalinstruction",  # 715
    "misaligned address", "misaligned_address", "cudaerrormisalignedaddress",  # 716
    "invalid_address_space", "cudaerrorinvalidaddressspace",  # 717
    "invalid program counter", "invalid_pc", "cudaerrorinvalidpc",  # 718
    "unspecified launch failure", "launch_failed", "cudaerrorlaunchfailure",  # 719
)


class InferenceTimeoutError(RunnerError):
    """The primary backend did not answer within the timeout."""


class DeviceLostError(RunnerError):
    """The GPU backend's CUDA context is unusable until the process ends (a sticky CUDA error)."""


def sticky_cuda_error(text: str) -> str:
    """The sticky CUDA error named in `text` ("" if none): see STICKY_CUDA_ERRORS."""
    low = text.lower()
    return next((marker for marker in STICKY_CUDA_ERRORS if marker in low), "")


def device_lost(exc: BaseException) -> bool:
    """True when `exc` (or an exception it was raised from) says the CUDA context is gone."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DeviceLostError) or sticky_cuda_error(f"{type(exc).__name__}: {exc}"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def ask_systemd_for_restart(reason: str) -> bool:
    """Ask systemd to restart the service now: `WATCHDOG=trigger` ("the service detected an internal error
    that should be handled by the configured watchdog options", sd_notify(3)); with the unit's
    Restart=on-failure a watchdog result is restarted. False outside systemd (no $NOTIFY_SOCKET)."""
    from agent import systemd

    systemd.status(f"GPU unusable, restarting: {reason}"[:400])
    return systemd.notify("WATCHDOG=trigger")


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


class GuardedRunner:
    """The primary backend behind a watchdog, one background rebuild, then the fallback (see module doc).

    primary_factory / fallback_factory: () -> backend; the primary is created at once (in a worker, within
    `build_timeout`), the fallback only when needed. timeout: seconds one primary call may take.
    on_degraded: called once with the reason when the wrapper falls back for good.
    request_restart: called once with the reason when it falls back for good at run time (not when the
    primary never started) and the primary had run for at least `restart_min_uptime` seconds; returns
    whether the request was delivered (see `ask_systemd_for_restart`).
    check: (model, batch) -> the batch as float32, or RunnerError for a caller error (default: MTCNN's).
    """

    def __init__(self, primary_factory: Callable[[], Any], fallback_factory: Callable[[], Any],
                 timeout: float, on_degraded: Callable[[str], None] | None = None,
                 build_timeout: float = BUILD_TIMEOUT, request_restart: Callable[[str], bool] | None = None,
                 restart_min_uptime: float = 600.0,
                 check: Callable[[str, Any], np.ndarray] = check_batch):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.build_timeout = float(build_timeout)
        self.restart_min_uptime = float(restart_min_uptime)
        self._primary_factory = primary_factory
        self._fallback_factory = fallback_factory
        self._on_degraded = on_degraded
        self._request_restart = request_restart
        self._check = check
        self._lock = threading.RLock()
        self._primary: Any = None
        self._worker: _Worker | None = None
        self._fallback: Any = None
        self._rebuild_thread: threading.Thread | None = None
        self._closed = False
        self._started_at: float | None = None  # monotonic time the first primary came up
        self.rebuilds = 0  # rebuilds started (at most one)
        self.failures: list[str] = []  # one line per failed or stalled primary call / build
        self.degraded = False  # calls go to the fallback now (while rebuilding, or for good)
        self.rebuilding = False  # a rebuild runs in the background
        self.final = False  # on the fallback for good
        self.degraded_reason = ""
        self.restart_requested = ""  # the reason given to request_restart, once asked
        try:
            self._primary, self._worker = self._start_primary()
            self._started_at = time.monotonic()
        except Exception as exc:
            self._give_up(f"primary backend could not start: {exc}", at_run_time=False)

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
                "rebuilds": self.rebuilds, "rebuilding": self.rebuilding, "failures": len(self.failures),
                "restart_requested": self.restart_requested}

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait until a running background rebuild has finished; True if none is running any more."""
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)
        return not self.rebuilding

    # -- protocol -----------------------------------------------------------------------------------
    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        batch = self._check(net, batch)
        with self._lock:
            if not self.degraded:
                start = time.monotonic()
                try:
                    return self._call_primary(net, batch)
                except Exception as exc:
                    self._primary_failed(net, batch, exc, time.monotonic() - start)
            return self._fallback_backend().run(net, batch)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_primary(close=True)
            if self._fallback is not None:
                self._fallback.close()
                self._fallback = None

    def __repr__(self) -> str:
        return f"GuardedRunner(active={self.name!r}, degraded={self.degraded}, timeout={self.timeout})"

    # -- internals ----------------------------------------------------------------------------------
    def _start_primary(self) -> tuple[Any, _Worker]:
        worker = _Worker("primary")
        try:
            return worker.call(self._primary_factory, (), self.build_timeout), worker
        except BaseException:
            worker.stop()  # when the factory hangs the thread stays stuck in it: abandoned
            raise

    def _call_primary(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._primary is None or self._worker is None:
            raise RunnerError("primary backend is not running")
        return self._worker.call(self._primary.run, (net, batch), self.timeout)

    def _primary_failed(self, net: str, batch: np.ndarray, exc: BaseException, elapsed: float) -> None:
        """Log the failure, drop the primary and decide: rebuild in the background, or give up (lock held)."""
        stalled = isinstance(exc, InferenceTimeoutError)
        lost = not stalled and device_lost(exc)
        what = "stalled" if stalled else ("lost its CUDA context" if lost else "failed")
        line = (f"{getattr(self._primary, 'name', 'primary')} {net} {what} on batch {tuple(batch.shape)} "
                f"after {elapsed:.2f} s{' (rebuilt backend)' if self.rebuilds else ''}: "
                f"{type(exc).__name__}: {exc}")
        self.failures.append(line)
        log.error("inference %s", line)
        # a stalled worker is stuck inside the GPU call: abandon it with its backend (see module doc); a
        # lost context is not touched again either (freeing memory there only returns the same error)
        self._drop_primary(close=not (stalled or lost))
        if lost:
            self._give_up(line + " (no rebuild: the CUDA context stays unusable until the process restarts)")
        elif stalled:
            self._give_up(line + " (no rebuild: a hung GPU call would hang the rebuild on the same CUDA "
                                 "context; a fresh process gets a fresh one)")
        elif self.rebuilds == 0:
            self._start_rebuild(line)
        else:
            self._give_up(line)

    def _start_rebuild(self, reason: str) -> None:
        self.rebuilds += 1
        self.degraded = self.rebuilding = True
        self.degraded_reason = f"on the CPU while the GPU backend is rebuilt after: {reason}"
        log.warning("rebuilding the primary inference backend once, in the background (up to %.0f s); "
                    "the CPU answers meanwhile", self.build_timeout)
        self._rebuild_thread = threading.Thread(target=self._rebuild, name="inference-rebuild", daemon=True)
        self._rebuild_thread.start()

    def _rebuild(self) -> None:
        """The background rebuild: never holds the lock while the factory runs."""
        start = time.monotonic()
        try:
            primary, worker = self._start_primary()
        except Exception as exc:
            with self._lock:
                self.rebuilding = False
                if not self._closed:
                    self.failures.append(f"rebuild failed after {time.monotonic() - start:.1f} s: {exc}")
                    self._give_up(self.failures[-1])
            return
        with self._lock:
            self.rebuilding = False
            if self._closed or self.final:
                try:
                    worker.call(primary.close, (), self.timeout)
                except Exception as exc:
                    log.warning("closing the rebuilt backend failed: %s", exc)
                worker.stop()
                return
            self._primary, self._worker = primary, worker
            self.degraded = False
            self.degraded_reason = ""
        log.warning("primary backend %s rebuilt in %.1f s; inference is back on it", self.name,
                    time.monotonic() - start)

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

    def _fallback_backend(self) -> Any:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
        return self._fallback

    def _give_up(self, reason: str, at_run_time: bool = True) -> None:
        """Switch to the fallback for good (lock held, or in __init__)."""
        if self.final:
            return
        self._drop_primary(close=False)
        self._fallback_backend()
        self.degraded = self.final = True
        self.degraded_reason = reason
        log.error("inference degraded: now on the %s backend for good (%s)", self.name, reason)
        if self._on_degraded is not None:
            try:
                self._on_degraded(reason)
            except Exception:
                log.exception("on_degraded callback failed")
        if at_run_time:
            self._ask_for_restart(reason)

    def _ask_for_restart(self, reason: str) -> None:
        if self._request_restart is None:
            return
        uptime = time.monotonic() - self._started_at if self._started_at is not None else 0.0
        if uptime < self.restart_min_uptime:
            log.error("not asking for a restart: the GPU backend failed %.0f s after its start (< %.0f s); a "
                      "restart loop would exhaust the service's start limit. Staying on the CPU: restart the "
                      "agent by hand once the GPU is fixed", uptime, self.restart_min_uptime)
            return
        self.restart_requested = reason
        try:
            delivered = self._request_restart(reason)
        except Exception:
            log.exception("asking for a restart failed")
            return
        if delivered:
            log.error("asked the service manager for a restart so the GPU comes back (WATCHDOG=trigger)")
        else:
            log.error("the GPU needs a process restart to be used again, and no service manager is there to "
                      "ask: restart the agent (staying on the CPU until then)")
