"""How the running agent reports itself to a person: frame-loop figures (`Stats`), the terminal status line,
and one INFO line a minute for the journal when there is no terminal. The machine-readable reports (the
status file, MQTT stats and health) are built from the same `Stats` by the service and the publisher."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

FPS_WINDOW = 60  # frames over which fps and stage latencies are averaged
FPS_STALE_AFTER = 2.0  # seconds without a frame (at least 3 frame intervals) after which the frame rate is 0
STATUS_LINE_PERIOD = 0.25  # seconds between redraws of the terminal status line


def event_summary(event: Any) -> str:
    """`identified track 3 Alice 0.91`: the parts an event has, no blanks or None for the ones it lacks."""
    parts = [event.type, f"track {event.track_id}" if event.track_id is not None else "", event.name or "",
             f"{event.confidence:.2f}" if event.confidence is not None else ""]
    return " ".join(p for p in parts if p)


class Stats:
    """Moving averages of the frame loop for the stats topic, the status file and the status line."""

    def __init__(self) -> None:
        self.started = time.time()
        self.frames = 0
        self.faces = 0
        self.events = 0
        self.not_stored = 0  # events the log could not store (full disk); counted in `events` too
        self.last_event = ""
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._stages: deque[dict[str, float]] = deque(maxlen=FPS_WINDOW)

    def source_lost(self) -> None:
        """No frames while the source is down: the frame rate is 0, not the last one measured."""
        self._times.clear()

    def frame(self, result: Any) -> None:
        """Count one processed frame (agent.vision.pipeline.FrameResult)."""
        self.frames += 1
        self.faces += sum(1 for t in result.update.tracks if t.missed == 0)
        self._times.append(time.monotonic())
        self._stages.append(result.timings)

    def event(self, event: Any) -> None:
        """Count one logged event."""
        self.events += 1
        self.last_event = f"{event.type} {event.name or ''}".strip()

    @property
    def fps(self) -> float:
        """Frames per second over the last FPS_WINDOW frames; 0 when frames stopped coming (a stalled source
        counts as lost only after its [source] timeout, but shows no frame rate from the start)."""
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        interval = span / (len(self._times) - 1)
        if time.monotonic() - self._times[-1] > max(FPS_STALE_AFTER, 3 * interval):
            return 0.0
        return 1.0 / interval if interval > 0 else 0.0

    def latency_ms(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for timings in self._stages:
            for k, v in timings.items():
                totals[k] = totals.get(k, 0.0) + v
        n = max(1, len(self._stages))
        return {k: round(v / n, 2) for k, v in totals.items()}


class _ClearLine(logging.Formatter):
    """Erase the status line before a log line, so the two never mix on the terminal."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return "\r\x1b[K" + self.inner.format(record)


class StatusLine:
    """One line on the terminal, redrawn at most every STATUS_LINE_PERIOD seconds; log lines erase it first."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._printed = 0.0
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is sys.stderr and not isinstance(handler.formatter, _ClearLine):
                handler.setFormatter(_ClearLine(handler.formatter))

    def draw(self, tracks: int) -> None:
        now = time.monotonic()
        if now - self._printed < STATUS_LINE_PERIOD:
            return
        self._printed = now
        s = self.stats
        line = (f"\r{s.fps:5.1f} fps | frames {s.frames} | tracks {tracks} | "
                f"events {s.events} | last: {s.last_event or '-'}")
        print(line[:120].ljust(80), end="", file=sys.stderr, flush=True)

    @staticmethod
    def close() -> None:
        print(file=sys.stderr)


def log_progress(stats: Stats, tracks: int, health: dict, cameras: dict[str, dict]) -> None:
    """The journal's view of the status line (no terminal): one INFO line with fps, health and the sources
    (`cameras`: each camera's stats message, agent.cameras.CameraFeed.stats_message)."""
    state = health.get("state", "unknown")
    reasons = "; ".join(health.get("reasons", []))
    parts = []
    for name, camera in cameras.items():
        source = camera.get("source", {})
        text = "connected" if source.get("connected") else f"down ({source.get('last_error') or 'not open'})"
        if source.get("reconnects"):
            text += f", {source['reconnects']} reconnects"
        if len(cameras) > 1:
            text = f"{name} {camera.get('fps', 0.0):.1f} fps {text}, {source.get('dropped', 0)} dropped"
        parts.append(text)
    log.info("%.1f fps, %d frames, %d tracks, %d events, health %s%s, %s %s",
             stats.fps, stats.frames, tracks, stats.events, state, f" ({reasons})" if reasons else "",
             "source" if len(cameras) <= 1 else "cameras", "; ".join(parts))
