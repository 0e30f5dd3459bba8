"""The systemd notify protocol (sd_notify) in a few lines, without a dependency.

Under a `Type=notify` unit systemd passes $NOTIFY_SOCKET (a unix datagram socket; a leading '@' means an
abstract socket name). The service sends "READY=1" once models are loaded, "STATUS=..." lines for
`systemctl status`, "STOPPING=1" on shutdown and "WATCHDOG=1" pings at least every $WATCHDOG_USEC.
Outside systemd every function is a no-op returning False / None.

The watchdog ping must prove that the video pipeline is moving, so `Watchdog.frame_done()` is called by
the frame loop itself after each processed frame and sends a ping at most every interval/2. There is no
timer thread: if the loop hangs (a stuck camera read, a GPU call that never returns), the pings stop and
systemd kills and restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _address(name: str) -> str | bytes:
    if name.startswith("@"):  # abstract namespace: leading NUL byte instead of '@'
        return b"\0" + name[1:].encode()
    return name


def notify(state: str) -> bool:
    """Send one notification ("READY=1", "STATUS=...", ...); True if systemd got it."""
    name = os.environ.get("NOTIFY_SOCKET", "")
    if not name or not (name.startswith("/") or name.startswith("@")):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), _address(name))
        return True
    except OSError as exc:
        log.debug("sd_notify %r to %s failed: %s", state, name, exc)
        return False


def ready(status: str | None = None) -> bool:
    """Tell systemd that start-up finished (models loaded, camera open); optionally with a status line."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping(status: str | None = None) -> bool:
    """Tell systemd that a clean shutdown began."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> bool:
    """One line shown by `systemctl status face-agent`."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def extend_timeout(seconds: float) -> bool:
    """Ask for more start-up (or shutdown) time, e.g. while a TensorRT engine is being built."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


# Start-up budget. Each GPU runner (detector, embedder: one after the other) may build its TensorRT engines for
# up to BUILD_TIMEOUT seconds (the watchdog's build_timeout) before it gives up and starts on the CPU; the rest
# of a start (config, event log, classifier, cameras) gets STARTUP_SLACK. `extending_start` keeps systemd's
# start timeout moving in EXTEND_STEP steps for at most STARTUP_BUDGET seconds; the unit's TimeoutStartSec
# (deploy/face-agent.service, 35min) is the same budget, so either bound alone lets a slow first build finish.
BUILD_TIMEOUT = 900.0
STARTUP_SLACK = 300.0
STARTUP_BUDGET = 2 * BUILD_TIMEOUT + STARTUP_SLACK
EXTEND_STEP = 60.0  # each EXTEND_TIMEOUT_USEC asks for this much more, sent every EXTEND_STEP / 3


class extending_start:  # noqa: N801 - used as a context manager, like contextlib's
    """`with extending_start():` sends EXTEND_TIMEOUT_USEC=`step` at once and then every step/3 seconds from
    a thread until the block ends or `budget` seconds have passed ("the service must send a new message"
    within each extension, sd_notify(3)): a long engine build is never killed at TimeoutStartSec, and a
    start that hangs past the budget still is. Outside systemd: a no-op."""

    def __init__(self, budget: float = STARTUP_BUDGET, step: float = EXTEND_STEP, every: float | None = None):
        import threading

        self.budget, self.step = float(budget), float(step)
        self.every = float(every) if every is not None else self.step / 3
        self.sent = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="systemd-extend-start", daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.budget
        while not self._done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("start-up still not finished after %.0f s: no more EXTEND_TIMEOUT_USEC, systemd's "
                          "start timeout will stop it", self.budget)
                return
            if extend_timeout(min(self.step, left)):
                self.sent += 1
            self._done.wait(min(self.every, left))

    def __enter__(self) -> extending_start:
        if os.environ.get("NOTIFY_SOCKET"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


def watchdog_ping() -> bool:
    """One keep-alive ping ("WATCHDOG=1")."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects a ping ($WATCHDOG_USEC), or None when no watchdog is armed
    for this process ($WATCHDOG_PID names another process, or the variables are missing/invalid)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring invalid WATCHDOG_USEC=%r", usec)
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """Pings the systemd watchdog from the frame loop, at most every interval/2, only while frames flow.

    Call `frame_done()` after each processed frame. When the loop legitimately waits without frames
    (reconnect backoff of a lost camera), call `alive()` from that same loop between short sleeps
    (each shorter than interval/2): it proves the loop is not hung. Never call either from another
    thread or a timer: that would keep a hung pipeline alive.
    """

    def __init__(self, interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                 send: Callable[[], bool] = watchdog_ping) -> None:
        self.interval = watchdog_interval() if interval is None else interval
        self._clock = clock
        self._send = send
        self._last: float | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return bool(self.interval)

    @property
    def period(self) -> float | None:
        """Seconds between pings (half the watchdog timeout), None when disabled."""
        return self.interval / 2 if self.interval else None

    def frame_done(self) -> bool:
        """A frame went through the pipeline; pings if the last ping is older than interval/2."""
        return self._maybe_ping()

    def alive(self) -> bool:
        """The loop is waiting on purpose (e.g. camera reconnect backoff) but is not hung."""
        return self._maybe_ping()

    def _maybe_ping(self) -> bool:
        if not self.interval:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval / 2:
            return False
        self._last = now
        if self._send():
            self.pings += 1
            return True
        return False
