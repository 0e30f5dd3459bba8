"""The run loop: capture -> detect -> track -> recognize -> vote -> event -> store -> publish.

`Service(cfg, ...).run()` loads everything (event log check, models, classifier, broker connection in
the background), tells systemd READY, then processes frames until the source ends or SIGTERM/SIGINT.
Every event is written to SQLite before the publisher thread sends it; on shutdown the live tracks end
(`track_ended` events), the outbox is flushed for `[mqtt] shutdown_timeout` seconds and what is left
stays in the log for the next start. Remote enrollment (when a key file is configured) retrains in the
background and the new classifier is swapped in between frames.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

from agent import __version__, health, systemd
from agent.config import Config
from agent.dbcheck import check_database
from agent.events import Event, EventFactory, FramePosition, format_timestamp
from agent.frame_output import AnnotatedWriter, FramesWriter, frame_record
from agent.gallery import Gallery
from agent.memory import limit_heap_growth
from agent.sources import Frame, Source, open_source
from agent.store import DB_NAME, EventStore, StoreError
from agent.sync.publisher import Publisher
from agent.vision.classifier import Classifier
from agent.vision.pipeline import FrameResult, Pipeline
from agent.vision.tracker import Tracker

log = logging.getLogger(__name__)

READ_TIMEOUT = 1.0  # seconds the loop waits for a frame before checking timers and signals
FPS_WINDOW = 60  # frames over which fps and stage latencies are averaged
STATUS_LINE_PERIOD = 0.25  # seconds between redraws of the terminal status line
FPS_STALE_AFTER = 2.0  # seconds without a frame (at least 3 frame intervals) after which the frame rate is 0
PROGRESS_LOG_PERIOD = 60.0  # seconds between INFO lines with fps and health when there is no status line


class _ClearLine(logging.Formatter):
    """Erase the status line before a log line, so the two never mix on the terminal."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return "\r\x1b[K" + self.inner.format(record)


def _clear_status_line_before_logs() -> None:
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is sys.stderr and not isinstance(handler.formatter, _ClearLine):
            handler.setFormatter(_ClearLine(handler.formatter))


def _event_summary(event: Event) -> str:
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
        self.last_event = ""
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._stages: deque[dict[str, float]] = deque(maxlen=FPS_WINDOW)

    def source_lost(self) -> None:
        """No frames while the source is down: the frame rate is 0, not the last one measured."""
        self._times.clear()

    def frame(self, result: FrameResult) -> None:
        self.frames += 1
        self.faces += sum(1 for t in result.update.tracks if t.missed == 0)
        self._times.append(time.monotonic())
        self._stages.append(result.timings)

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


class Service:
    def __init__(self, cfg: Config, source_uri: str | None = None, every_frame: bool | None = None,
                 show: str | None = None, status_line: bool = False, max_frames: int = 0,
                 analyzer: Any = None, frames_out: str | None = None):
        limit_heap_growth()
        self.cfg = cfg
        self._analyzer = analyzer  # a FaceAnalyzer to reuse (tests); built from cfg when None
        self.source_uri = source_uri
        self.every_frame = every_frame
        self.show_path = show
        self.frames_out_path = frames_out
        self.status_line = status_line
        self.max_frames = max_frames
        self.stats = Stats()
        self.progress_period = PROGRESS_LOG_PERIOD
        self.factory = EventFactory.from_config(cfg)
        self._stop = threading.Event()
        self.store: EventStore | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.source: Source | None = None
        self.gallery: Gallery | None = None
        self.intake: Any = None
        self.monitor: health.HealthMonitor | None = None
        self._writer: AnnotatedWriter | None = None
        self._frames_out: FramesWriter | None = None
        self._position: FramePosition | None = None  # where the last processed frame is in the source
        self._connected_at = 0.0
        self._status_printed = 0.0
        if status_line:
            _clear_status_line_before_logs()
        self._health_published: tuple | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Ask the loop to finish (signal handlers, other threads)."""
        self._stop.set()
        if self.source is not None:
            self.source.wake()  # the loop is usually waiting for a frame

    def load(self) -> None:
        """Everything the loop needs; raises on a configuration or model that cannot work."""
        cfg = self.cfg
        storage = cfg.path("storage")
        storage.mkdir(parents=True, exist_ok=True)
        moved = check_database(storage / DB_NAME)
        if moved is not None:
            log.error("the event log was corrupt and was moved to %s; a new one is started", moved)
        self.store = EventStore(cfg)
        self.publisher = Publisher(cfg, self.store, self.stats_message)
        if self.publisher.client is not None:
            self.publisher.client.add_connect_listener(self._on_connect)
        systemd.extend_timeout(900)  # model loading (and a TensorRT engine build) may take a while
        self.gallery = Gallery(cfg, analyzer=self._analyzer, train_in_subprocess=True)
        classifier, _, retrained = self.gallery.ensure_trained(progress=sys.stderr.isatty())
        if retrained:
            self._model_event(classifier)
        tracker = Tracker(cfg.tracker, cfg.voting)
        self.pipeline = Pipeline(self.gallery.analyzer, tracker, classifier)
        # the intake subscribes before the client connects: requests the broker queued while the agent
        # was offline arrive right after the connect and must find their callback in place
        self._start_intake()
        self.publisher.start()
        section = cfg.source
        if self.source_uri is not None:
            section = type(section)(**{**vars(section), "uri": self.source_uri})
        self.source = open_source(section, self.every_frame, cfg.base_dir, cfg.images.max_pixels,
                                  cfg.images.max_bytes)
        if self.frames_out_path:
            self._frames_out = FramesWriter(self.frames_out_path)
        if self.show_path:
            self._writer = AnnotatedWriter(self.show_path, self.source.fps)
        self.monitor = health.HealthMonitor.from_config(
            cfg, camera_ok=lambda: self.source.connected if self.source else None,
            broker_connected_since=self._broker_since,
            outbox_backlog=lambda: self.store.count("pending") if self.store else None,
            gpu_fallback=self._gpu_fallback)

    def _start_intake(self) -> None:
        if not self.cfg.remote_enroll.key_file:
            log.info("remote enrollment is off (no [remote_enroll] key_file)")
            return
        if self.publisher is None or self.publisher.client is None:
            log.warning("remote enrollment needs MQTT ([mqtt] enabled = true); it stays off")
            return
        from agent.sync.enrollment import EnrollmentIntake

        self.intake = EnrollmentIntake(self.cfg, self.gallery, self.publisher.client, self._on_model_updated)
        self.intake.start()

    def _on_model_updated(self, classifier: Classifier, info: dict | None = None) -> None:
        """From the enrollment thread: swap the classifier in and log a model_updated event."""
        if self.pipeline is not None:
            self.pipeline.set_classifier(classifier)
        self._model_event(classifier)

    def _model_event(self, classifier: Classifier) -> None:
        meta = classifier.meta
        cv = (meta.get("cross_validation") or {}).get("balanced_accuracy")
        self._emit(self.factory.model_updated(classifier.people, meta.get("counts", {}),
                                              meta.get("training_seconds", 0.0), cv))

    def _on_connect(self, _session_present: bool) -> None:
        self._connected_at = time.time()
        self._health_published = None  # say it again on the new connection

    def _broker_since(self) -> float | None:
        client = self.publisher.client if self.publisher else None
        if client is None:
            return None
        return self._connected_at if client.connected else 0.0

    def _gpu_fallback(self) -> bool | None:
        backend = getattr(getattr(self.pipeline, "analyzer", None), "detector", None)
        backend = getattr(backend, "backend", None)
        return bool(getattr(backend, "degraded", False)) if backend is not None else None

    # ---- events -------------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        assert self.store is not None
        try:
            self.store.add(event)
        except StoreError as exc:  # e.g. a full disk: what is stored stays; keep watching, say it loudly
            log.error("event %s %s not logged: %s", event.type, event.event_id, exc)
            return
        self.stats.events += 1
        self.stats.last_event = f"{event.type} {event.name or ''}".strip()
        log.info("event %s", _event_summary(event))

    def events_for(self, result: FrameResult, frame: Frame) -> list[Event]:
        """The events of one processed frame, in order: tracks that ended (a cut, a split, gone), tracks that
        started, identity changes; each says where in the source it happened."""
        f, size, rgb = self.factory, result.size, frame.image
        at = FramePosition(frame.index, frame.media_time)
        events = [self._ended(track, size, at) for track in result.update.ended]
        for track in result.update.started:
            events.append(f.track_started(track.id, track.box, size, track.detection.score, image=rgb, at=at))
        for change in result.changes:
            t = change.track
            if change.kind == "unknown":
                events.append(f.unknown_face(t.id, t.attempts, t.box, size, change.confidence, change.votes,
                                             image=rgb, at=at))
            else:
                events.append(f.identified(t.id, change.name, change.confidence, change.votes, t.box, size,
                                           previous_name=change.previous, image=rgb, at=at))
        return events

    def _ended(self, track: Any, size: tuple[int, int], at: FramePosition | None) -> Event:
        return self.factory.track_ended(track.id, track.name, track.duration, track.confidence or None,
                                        track.box, size, votes=track.votes, at=at)

    def _output(self, frame: Frame, result: FrameResult) -> None:
        """--frames-out and --show: the same record, written and drawn."""
        if self._frames_out is None and self._writer is None:
            return
        time_value = frame.media_time if frame.media_time is not None else frame.timestamp
        record = frame_record(frame.index, time_value, result.update.tracks, self.cfg.tracker.show_coasting)
        if self._frames_out is not None:
            self._frames_out.write(record)
        if self._writer is not None:
            self._writer.write(frame.image, record)

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        size = (0, 0)
        try:
            self.load()
            assert self.source is not None and self.pipeline is not None
            self.source.start()
            watchdog = systemd.Watchdog()
            systemd.ready(f"watching {self.source.name}")
            log.info("face-agent %s running: %s, %d people enrolled", __version__, self.source.name,
                     len(self.pipeline.classifier.people) if self.pipeline.classifier else 0)
            next_status = 0.0
            next_progress = time.monotonic() + self.progress_period
            while not self._stop.is_set():
                frame = self.source.read(timeout=READ_TIMEOUT)
                if frame is None:
                    if self.source.ended:
                        log.info("source ended after %d frames", self.stats.frames)
                        break
                    if not self.source.connected:
                        watchdog.alive()  # waiting for a reconnect on purpose, not hung
                        self._source_lost(size)
                else:
                    result = self.pipeline.process(frame.image, frame.timestamp)
                    size = result.size
                    self._position = FramePosition(frame.index, frame.media_time)
                    for event in self.events_for(result, frame):
                        self._emit(event)
                    self.stats.frame(result)
                    watchdog.frame_done()
                    self._output(frame, result)
                    if self.max_frames and self.stats.frames >= self.max_frames:
                        break
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.cfg.service.status_interval
                    self._write_status()
                if self.status_line:
                    self._print_status_line()
                elif now >= next_progress:
                    next_progress = now + self.progress_period
                    self._log_progress()
        finally:
            self.shutdown(size)
        return 0

    def _source_lost(self, size: tuple[int, int]) -> None:
        """The source is down: end the open tracks now (nobody is seen any more) and report 0 fps."""
        self.stats.source_lost()
        if self.pipeline is not None:
            for track in self.pipeline.finish():
                self._emit(self._ended(track, size, self._position))

    def shutdown(self, size: tuple[int, int] = (0, 0)) -> None:
        systemd.stopping("flushing events")
        if self.status_line:
            print(file=sys.stderr)
        if self.source is not None:
            self.source.stop()
        if self.pipeline is not None and self.store is not None:
            for track in self.pipeline.finish():
                self._emit(self._ended(track, size, self._position))
        self._write_status(state="stopped")
        if self.publisher is not None:
            left = self.publisher.stop()
            if left:
                log.warning("%d events not yet published; they are kept and sent at the next start", left)
        if self.intake is not None:  # after the client: the broker keeps queueing requests for us
            self.intake.stop()
        if self.store is not None:
            self.store.close()
        if self._writer is not None:
            self._writer.close()
        if self._frames_out is not None:
            self._frames_out.close()
        if self.gallery is not None:
            self.gallery.close()

    # ---- reporting ----------------------------------------------------------------------------------
    def stats_message(self) -> dict:
        """The periodic stats payload (publisher thread)."""
        tracks = len(self.pipeline.tracker.tracks) if self.pipeline else 0
        health_state = self.monitor.last["state"] if self.monitor and self.monitor.last else None
        return {"fps": round(self.stats.fps, 2), "frames": self.stats.frames, "faces": self.stats.faces,
                "events": self.stats.events, "tracks": tracks, "latency_ms": self.stats.latency_ms(),
                "health": health_state, "source": self.source.stats() if self.source else {}}

    def _write_status(self, state: str | None = None) -> None:
        if self.monitor is None:
            return
        try:
            report = {"state": state, "reasons": []} if state else self.monitor.check()
            self._publish_health(report)
            health.write_status(health.status_path(self.cfg), {
                "interval": self.cfg.service.status_interval, "agent_id": self.cfg.agent.id,
                "version": __version__, "started_at": self.stats.started, "health": report,
                "stats": self.stats_message()})
            systemd.status(f"{report['state']}: {self.stats.fps:.1f} fps, {self.stats.events} events")
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)

    def _publish_health(self, report: dict) -> None:
        """The health state, retained, on <prefix>/<agent id>/health whenever it changes (ok, degraded with
        its reasons, stopped); the status topic beside it stays online/offline for availability."""
        client = self.publisher.client if self.publisher else None
        key = (report["state"], tuple(report.get("reasons", ())))
        if client is None or not client.connected or key == self._health_published:
            return
        payload = json.dumps({"state": report["state"], "reasons": report.get("reasons", []),
                              "timestamp": format_timestamp()})
        info = client.publish(f"{self.cfg.mqtt.topic_prefix.rstrip('/')}/{self.cfg.agent.id}/health", payload,
                              qos=1, retain=True)
        if info.rc == 0:
            self._health_published = key

    def _log_progress(self) -> None:
        """The journal's view of the status line (no terminal): one INFO line a minute."""
        report = self.monitor.last if self.monitor and self.monitor.last else {}
        source = self.source.stats() if self.source else {}
        state = report.get("state", "unknown")
        reasons = "; ".join(report.get("reasons", []))
        log.info("%.1f fps, %d frames, %d tracks, %d events, health %s%s, source %s%s",
                 self.stats.fps, self.stats.frames, len(self.pipeline.tracker.tracks) if self.pipeline else 0,
                 self.stats.events, state, f" ({reasons})" if reasons else "",
                 "connected" if source.get("connected") else f"down ({source.get('last_error') or 'not open'})",
                 f", {source['reconnects']} reconnects" if source.get("reconnects") else "")

    def _print_status_line(self) -> None:
        now = time.monotonic()
        if now - self._status_printed < STATUS_LINE_PERIOD:
            return
        self._status_printed = now
        tracks = len(self.pipeline.tracker.tracks) if self.pipeline else 0
        line = (f"\r{self.stats.fps:5.1f} fps | frames {self.stats.frames} | tracks {tracks} | "
                f"events {self.stats.events} | last: {self.stats.last_event or '-'}")
        print(line[:120].ljust(80), end="", file=sys.stderr, flush=True)


def install_signal_handlers(service: Service) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, service.stop)
