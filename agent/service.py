"""The run loop: capture -> detect -> track -> recognize -> vote -> event -> store -> publish.

`Service(cfg, ...).run()` loads everything (event log check, models, classifier, broker connection in
the background), tells systemd READY, then processes frames until the source ends or SIGTERM/SIGINT.
Every event is written to SQLite before the publisher thread sends it; on shutdown the live tracks end
(`track_ended` events), the outbox is flushed for `[mqtt] shutdown_timeout` seconds and what is left
stays in the log for the next start. Remote enrollment (when a key file is configured) retrains in the
background and the new classifier is swapped in between frames.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

from agent import __version__, health, systemd
from agent.config import Config
from agent.dbcheck import check_database
from agent.events import Event, EventFactory, FramePosition, new_event_id
from agent.files import StorageError
from agent.frame_events import frame_events, track_ended
from agent.frame_output import LIVE_FRAME, AnnotatedWriter, FramesWriter, frame_record
from agent.gallery import Gallery
from agent.memory import limit_heap_growth
from agent.naming import reidentify
from agent.run_report import Stats, StatusLine, event_summary, log_progress
from agent.sightings import Sightings
from agent.sources import Frame, Source, open_source
from agent.store import DB_NAME, EventStore, StoreError
from agent.sync.publisher import Publisher
from agent.vision.classifier import Classifier
from agent.vision.pipeline import FrameResult, Pipeline
from agent.vision.tracker import Tracker

log = logging.getLogger(__name__)

READ_TIMEOUT = 1.0  # seconds the loop waits for a frame before checking timers and signals
PROGRESS_LOG_PERIOD = 60.0  # seconds between INFO lines with fps and health when there is no status line


class Service:
    def __init__(self, cfg: Config, source_uri: str | None = None, every_frame: bool | None = None,
                 show: str | None = None, status_line: bool = False, max_frames: int = 0,
                 analyzer: Any = None, frames_out: str | None = None):
        limit_heap_growth(cfg.service.mmap_threshold_kb)
        self.cfg = cfg
        self._analyzer = analyzer  # a FaceAnalyzer to reuse (tests); built from cfg when None
        self.source_uri = source_uri
        self.every_frame = every_frame
        self.show_path = show
        self.frames_out_path = frames_out
        self.status_line: StatusLine | None = None
        self.max_frames = max_frames
        self.stats = Stats()
        if status_line:
            self.status_line = StatusLine(self.stats)
        self.progress_period = PROGRESS_LOG_PERIOD
        self.factory = EventFactory.from_config(cfg)
        self._stop = threading.Event()
        self.store: EventStore | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.source: Source | None = None
        self.gallery: Gallery | None = None
        self.intake: Any = None
        self.sightings: Sightings | None = None  # the faces kept of each track ([sightings] privacy)
        self.monitor: health.HealthMonitor | None = None
        self._writer: AnnotatedWriter | None = None
        self._frames_out: FramesWriter | None = None
        self._position: FramePosition | None = None  # where the last processed frame is in the source
        self._connected_at = 0.0
        self._live: AnnotatedWriter | None = None  # [service] live_frame_interval: <storage>/live.jpg
        self._next_live = 0.0
        self._classifier_stamp: tuple[int, int] | None = None  # svm/classifier.json as last loaded
        self._model_lock = threading.Lock()
        self._loaded_from_file: tuple[int, int] | None = None  # stamp of the file the last reload swapped in

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
        if cfg.sightings.privacy != "off":
            try:
                self.sightings = Sightings(cfg, run=new_event_id(), model=classifier.meta.get("fingerprint", ""))
            except StorageError as exc:  # a full or read-only disk: the video loop runs without them
                log.error("faces are not kept this run: %s", exc)
            self._reidentify(classifier)  # also after a retrain by a command (enroll, name) while it was off
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
        if cfg.service.live_frame_interval > 0:
            self._live = AnnotatedWriter(storage / LIVE_FRAME, None)
        self._classifier_stamp = self._classifier_file_stamp()
        self.monitor = health.HealthMonitor.from_config(
            cfg, camera_ok=lambda: self.source.connected if self.source else None,
            broker_connected_since=self._broker_since,
            outbox_backlog=lambda: self.store.count("pending") if self.store else None,
            gpu_fallback=lambda: self.pipeline.analyzer.gpu_fallback if self.pipeline else None)

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
        """From the enrollment thread: swap the classifier in and log a model_updated event (unless the health
        check already read it from the file the enrollment saved just before calling back)."""
        with self._model_lock:
            stamp = self._classifier_file_stamp()
            if stamp is not None and stamp == self._loaded_from_file:
                return
            self._classifier_stamp = stamp
            self._swap(classifier)

    def _swap(self, classifier: Classifier) -> None:
        if self.pipeline is not None:
            self.pipeline.set_classifier(classifier)
        self._model_event(classifier)
        self._reidentify(classifier)

    def _reidentify(self, classifier: Classifier) -> None:
        """After a retrain: recent unknown tracks the new model names become `reidentified` events."""
        if self.sightings is None:
            return
        self.sightings.model = classifier.meta.get("fingerprint", "")
        try:
            events = reidentify(self.sightings.store, classifier, self.factory, self.cfg.sightings.reidentify_hours)
        except (StorageError, OSError, sqlite3.Error) as exc:
            log.error("cannot re-check the unknown sightings: %s", exc)
            return
        for event in events:
            self._emit(event)

    def _classifier_file_stamp(self) -> tuple[int, int] | None:
        from agent.vision.classifier import META_NAME

        try:
            st = (self.cfg.path("svm") / META_NAME).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload_classifier_if_changed(self) -> None:
        """Another process (`face-agent web`, `enroll`) retrained through the gallery: swap its classifier in."""
        with self._model_lock:
            stamp = self._classifier_file_stamp()
            if stamp is None or stamp == self._classifier_stamp or self.gallery is None or self.pipeline is None:
                return
            self._classifier_stamp = stamp
            classifier = self.gallery.load_classifier()
            if classifier is None or _same_model(self.pipeline.classifier, classifier):
                return
            log.info("the classifier on disk changed (%d people): swapping it in", len(classifier.people))
            self._loaded_from_file = stamp
            self._swap(classifier)

    def _model_event(self, classifier: Classifier) -> None:
        meta = classifier.meta
        cv = (meta.get("cross_validation") or {}).get("balanced_accuracy")
        self._emit(self.factory.model_updated(classifier.people, meta.get("counts", {}),
                                              meta.get("training_seconds", 0.0), cv))

    def _on_connect(self, _session_present: bool) -> None:
        self._connected_at = time.time()

    def _broker_since(self) -> float | None:
        client = self.publisher.client if self.publisher else None
        if client is None:
            return None
        return self._connected_at if client.connected else 0.0

    # ---- events -------------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        assert self.store is not None
        try:
            self.store.add(event)
        except StoreError as exc:  # e.g. a full disk: what is stored stays; keep watching, say it loudly
            log.error("event %s %s not logged: %s", event.type, event.event_id, exc)
            return
        self.stats.event(event)
        log.info("event %s", event_summary(event))

    def events_for(self, result: FrameResult, frame: Frame) -> list[Event]:
        """The events of one processed frame (agent.frame_events), placed in the source."""
        return frame_events(self.factory, result, frame.image, FramePosition(frame.index, frame.media_time),
                            self.sightings.unknown_id if self.sightings is not None else None)

    def _end_tracks(self, size: tuple[int, int]) -> None:
        """End every live track (source lost, shutdown): their track_ended events, at the last frame."""
        if self.pipeline is not None and self.store is not None:
            for track in self.pipeline.finish():
                self._emit(track_ended(self.factory, track, size, self._position))
                if self.sightings is not None:
                    self.sightings.ended(track)

    def _output(self, frame: Frame, result: FrameResult) -> None:
        """--frames-out, --show and the live frame: the same record, written and drawn."""
        live = self._live is not None and time.monotonic() >= self._next_live
        if self._frames_out is None and self._writer is None and not live:
            return
        time_value = frame.media_time if frame.media_time is not None else frame.timestamp
        record = frame_record(frame.index, time_value, result.update.tracks, self.cfg.tracker.show_coasting)
        if self._frames_out is not None:
            self._frames_out.write(record)
        if self._writer is not None:
            self._writer.write(frame.image, record)
        if live:
            self._next_live = time.monotonic() + self.cfg.service.live_frame_interval
            try:
                self._live.write(frame.image, record)
            except OSError as exc:
                log.warning("cannot write the live frame: %s", exc)

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
                    if self.sightings is not None:
                        self.sightings.observe(result, frame.image)
                    for event in self.events_for(result, frame):
                        self._emit(event)
                    if self.sightings is not None:
                        for track in result.update.ended:
                            self.sightings.ended(track)
                    self.stats.frame(result)
                    watchdog.frame_done()
                    self._output(frame, result)
                    if self.max_frames and self.stats.frames >= self.max_frames:
                        break
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.cfg.service.status_interval
                    self._reload_classifier_if_changed()
                    self._write_status()
                if self.status_line is not None:
                    self.status_line.draw(self._tracks())
                elif now >= next_progress:
                    next_progress = now + self.progress_period
                    log_progress(self.stats, self._tracks(), self.monitor.last or {} if self.monitor else {},
                                 self.source.stats() if self.source else {})
        finally:
            self.shutdown(size)
        return 0

    def _source_lost(self, size: tuple[int, int]) -> None:
        """The source is down: end the open tracks now (nobody is seen any more) and report 0 fps."""
        self.stats.source_lost()
        self._end_tracks(size)

    def shutdown(self, size: tuple[int, int] = (0, 0)) -> None:
        systemd.stopping("flushing events")
        if self.status_line is not None:
            self.status_line.close()
        if self.source is not None:
            self.source.stop()
        self._end_tracks(size)
        if self.sightings is not None:
            self.sightings.close()
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
    def _tracks(self) -> int:
        return len(self.pipeline.tracker.tracks) if self.pipeline else 0

    def stats_message(self) -> dict:
        """The periodic stats payload (publisher thread)."""
        tracks = self._tracks()
        health_state = self.monitor.last["state"] if self.monitor and self.monitor.last else None
        return {"fps": round(self.stats.fps, 2), "frames": self.stats.frames, "faces": self.stats.faces,
                "events": self.stats.events, "tracks": tracks, "latency_ms": self.stats.latency_ms(),
                "health": health_state, "source": self.source.stats() if self.source else {},
                "backend": self._backend()}

    def _backend(self) -> str | None:
        """The detector's inference backend (and the embedder's when it is another)."""
        if self.pipeline is None:
            return None
        analyzer = self.pipeline.analyzer
        names = [getattr(analyzer.detector.backend, "name", None), getattr(analyzer.embedder, "name", None)]
        return " + ".join(dict.fromkeys(str(n) for n in names if n)) or None

    def _write_status(self, state: str | None = None) -> None:
        if self.monitor is None:
            return
        try:
            report = {"state": state, "reasons": []} if state else self.monitor.check()
            if self.publisher is not None:
                self.publisher.publish_health(report)
            health.write_status(health.status_path(self.cfg), {
                "interval": self.cfg.service.status_interval, "agent_id": self.cfg.agent.id,
                "version": __version__, "started_at": self.stats.started, "health": report,
                "stats": self.stats_message()})
            systemd.status(f"{report['state']}: {self.stats.fps:.1f} fps, {self.stats.events} events")
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)


def _same_model(a: Classifier | None, b: Classifier | None) -> bool:
    """The same training (data fingerprint and time): a classifier file read back, not a new model."""
    keys = ("fingerprint", "trained_at")
    return a is not None and b is not None and all(a.meta.get(k) == b.meta.get(k) for k in keys)


def install_signal_handlers(service: Service) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, service.stop)
