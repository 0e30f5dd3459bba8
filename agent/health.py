"""Health of the running agent, and the status file `face-agent status` reads.

`HealthMonitor.check()` is called by the service every `[service] status_interval` seconds. It looks at
the camera, the broker connection, the outbox backlog (events not yet published) and its growth, free
disk on the storage folder and the GPU fallback flag, and returns {"state": "ok"|"degraded",
"reasons": [...], "checks": {...}}. A state change is logged once, not on every tick.

The service writes `<storage>/status.json` with `write_status()` after each check; the file format:

    {
      "format": 1,                     # STATUS_FORMAT
      "written_at": 1718000000.0,      # unix time of this write
      "interval": 10.0,                # seconds between writes; older than STALE_INTERVALS * interval = stale
      "pid": 1234, "hostname": "jetson-1",
      "agent_id": "agent-1", "version": "0.1.0",
      "started_at": 1717990000.0,      # unix time the service started
      "health": {"state": "ok", "reasons": [], "checks": {...}},
      "stats": {"frames": 1200, "fps": 14.8, "events": 31, ...}   # free-form numbers from the service
    }

The file is replaced atomically (temporary file + fsync + rename), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.files import atomic_write, free_bytes, storage_state

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
STATUS_FORMAT = 1
STALE_INTERVALS = 3.0  # a status file older than this many intervals (and at least 30 s) is stale
MIN_STALE_SECONDS = 30.0

Value = Any  # a value, or a zero-argument callable returning it
NOT_CHECKED: Any = type("NotChecked", (), {"__repr__": lambda self: "NOT_CHECKED"})()  # reading not given


def _get(value: Value) -> Any:
    return value() if callable(value) else value


class HealthMonitor:
    """Turns a few readings into "ok" or "degraded" with human-readable reasons.

    Each reading may be a value or a zero-argument callable (called on every check); readings not given
    are not checked (camera/backlog/gpu readings that return None are skipped too).
      camera_ok:               bool, frames are arriving; or {camera name: bool} with several cameras
      broker_connected_since:  unix time of the current broker connection, None/0 while disconnected
      outbox_backlog:          int, events stored but not yet published
      gpu_fallback:            bool, inference fell back from the GPU to the CPU
      storage_problem:         str or None, why the agent cannot write its storage (e.g. "disk full: ...")
    Thresholds: `min_free_disk_mb` (free space on `storage`), `max_backlog`, `backlog_growth_checks`
    (consecutive checks with a growing backlog while connected), `broker_grace` (seconds a broker may be
    away before it counts). `from_config(cfg, ...)` takes them from the [service] section.
    """

    def __init__(self, storage: str | os.PathLike, *, min_free_disk_mb: float = 100,
                 max_backlog: int = 1000, backlog_growth_checks: int = 6, broker_grace: float = 30.0,
                 mqtt_enabled: bool = True, camera_ok: Value = NOT_CHECKED,
                 broker_connected_since: Value = NOT_CHECKED, outbox_backlog: Value = NOT_CHECKED,
                 gpu_fallback: Value = NOT_CHECKED, storage_problem: Value = NOT_CHECKED,
                 clock: Callable[[], float] = time.time) -> None:
        self.storage = Path(storage)
        self.min_free_disk_mb = min_free_disk_mb
        self.max_backlog = max_backlog
        self.backlog_growth_checks = backlog_growth_checks
        self.broker_grace = broker_grace
        self.mqtt_enabled = mqtt_enabled
        self.readings = {"camera_ok": camera_ok, "broker_connected_since": broker_connected_since,
                         "outbox_backlog": outbox_backlog, "gpu_fallback": gpu_fallback,
                         "storage_problem": storage_problem}
        self._clock = clock
        self._disconnected_at: float | None = None
        self._last_backlog: int | None = None
        self._growing = 0
        self._last_key: tuple | None = None
        self.last: dict | None = None

    @classmethod
    def from_config(cls, cfg: Config, **readings: Value) -> HealthMonitor:
        s = cfg.service
        return cls(cfg.path("storage"), min_free_disk_mb=s.min_free_disk_mb, max_backlog=s.max_backlog,
                   backlog_growth_checks=s.backlog_growth_checks, broker_grace=s.broker_grace,
                   mqtt_enabled=cfg.mqtt.enabled, **readings)

    def check(self, **overrides: Value) -> dict:
        """One health check; keyword arguments override the readings given to the constructor."""
        unknown = set(overrides) - set(self.readings)
        if unknown:
            raise TypeError(f"unknown reading(s): {', '.join(sorted(unknown))}")
        values = {k: _get(overrides.get(k, v)) for k, v in self.readings.items()}
        now = self._clock()
        reasons: dict[str, str] = {}
        checks: dict[str, Any] = {}

        cameras = values["camera_ok"]
        if isinstance(cameras, dict):  # several cameras: degraded when any is down, and which one says why
            checks["camera_ok"] = all(cameras.values())
            checks["cameras_ok"] = {name: bool(ok) for name, ok in cameras.items()}
            down = [name for name, ok in cameras.items() if not ok]
            if down:
                reasons["camera"] = "camera: no frames from " + ", ".join(down)
        elif cameras is not NOT_CHECKED and cameras is not None:
            checks["camera_ok"] = bool(cameras)
            if not cameras:
                reasons["camera"] = "camera: no frames from the source"

        since = values["broker_connected_since"]
        connected = since is NOT_CHECKED or bool(since)  # unknown broker: any growth counts
        if self.mqtt_enabled and since is not NOT_CHECKED:
            checks["broker_connected_since"] = since or None
            if since:
                self._disconnected_at = None
            else:
                if self._disconnected_at is None:
                    self._disconnected_at = now
                away = now - self._disconnected_at
                checks["broker_disconnected_for"] = round(away, 1)
                if away >= self.broker_grace:
                    reasons["broker"] = f"broker: disconnected for {away:.0f} s"

        backlog = values["outbox_backlog"]
        if self.mqtt_enabled and backlog is not NOT_CHECKED and backlog is not None:
            backlog = int(backlog)
            checks["outbox_backlog"] = backlog
            if self._last_backlog is not None and backlog > self._last_backlog and connected:
                self._growing += 1
            elif self._last_backlog is None or backlog <= self._last_backlog:
                self._growing = 0
            self._last_backlog = backlog
            checks["backlog_growing_checks"] = self._growing
            if backlog > self.max_backlog:
                reasons["backlog"] = f"backlog: {backlog} events not yet published (max {self.max_backlog})"
            elif self._growing >= self.backlog_growth_checks:
                reasons["backlog_growth"] = (f"backlog: grew for {self._growing} checks while connected "
                                             f"(now {backlog}); publishing does not keep up")

        free_mb = free_disk_mb(self.storage)
        checks["free_disk_mb"] = None if free_mb is None else round(free_mb, 1)
        if free_mb is None:
            reasons["disk"] = f"disk: cannot read free space of {self.storage}"
        elif storage_state(self.storage) == "full":
            reasons["disk"] = f"disk full: {free_mb:.1f} MB free on {self.storage}"
        elif free_mb < self.min_free_disk_mb:
            reasons["disk"] = (f"disk: {free_mb:.0f} MB free on {self.storage} "
                               f"(min {self.min_free_disk_mb:.0f} MB)")
        problem = values["storage_problem"]
        if problem is not NOT_CHECKED and problem:
            checks["storage_problem"] = str(problem)
            reasons["storage"] = str(problem)

        if values["gpu_fallback"] is not NOT_CHECKED and values["gpu_fallback"] is not None:
            checks["gpu_fallback"] = bool(values["gpu_fallback"])
            if values["gpu_fallback"]:
                reasons["gpu"] = "gpu: inference fell back to the CPU"

        result = {"state": "degraded" if reasons else "ok", "reasons": list(reasons.values()),
                  "codes": sorted(reasons), "checks": checks, "checked_at": now}
        self._log_change(result)
        self.last = result
        return result

    def _log_change(self, result: dict) -> None:
        key = (result["state"], tuple(result["codes"]))
        if key == self._last_key:
            return
        first = self._last_key is None
        self._last_key = key
        if result["state"] == "degraded":
            log.warning("health degraded: %s", "; ".join(result["reasons"]))
        elif not first:
            log.info("health ok again")


def summary(health: dict) -> str:
    """One line for `systemctl status` (systemd.status) and logs."""
    if health.get("state") == "ok":
        return "ok"
    return "degraded: " + "; ".join(health.get("reasons", []))


def free_disk_mb(path: str | os.PathLike) -> float | None:
    """Free space (MB) on the file system holding `path` (or its nearest existing parent)."""
    free = free_bytes(path)
    return None if free is None else free / 1_000_000


def status_path(cfg: Config) -> Path:
    """Where the service writes its status: <paths.storage>/status.json."""
    return cfg.path("storage") / STATUS_FILE


def write_status(path: str | os.PathLike, data: dict) -> None:
    """Replace the status file atomically; adds format, written_at, pid and hostname when missing."""
    path = Path(path)
    record = {"format": STATUS_FORMAT, "written_at": time.time(), "pid": os.getpid(),
              "hostname": socket.gethostname()}
    record.update(data)
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, text.encode("utf-8"), mode=0o644)  # `face-agent status` may run as another user


def read_status(path: str | os.PathLike) -> dict | None:
    """The last status written, or None when the file is missing or not a status file.
    PermissionError propagates: "cannot read" is not "not running"."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except PermissionError:
        raise
    except (OSError, ValueError) as exc:
        log.warning("cannot read status file %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("written_at"), (int, float)):
        log.warning("%s is not a face-agent status file", path)
        return None
    return data


def status_age(data: dict, now: float | None = None) -> float:
    """Seconds since the status was written."""
    return (time.time() if now is None else now) - float(data["written_at"])


def is_stale(data: dict, now: float | None = None, interval: float | None = None) -> bool:
    """True when the writer stopped: older than STALE_INTERVALS intervals (at least MIN_STALE_SECONDS),
    or its process is gone (same host only)."""
    interval = float(data.get("interval") or interval or 10.0)
    if status_age(data, now) > max(STALE_INTERVALS * interval, MIN_STALE_SECONDS):
        return True
    return not _process_alive(data)


def _process_alive(data: dict) -> bool:
    pid = data.get("pid")
    if not isinstance(pid, int) or pid <= 0 or data.get("hostname") != socket.gethostname():
        return True  # cannot tell: trust the age
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user (the service user)
    return True
