"""The run loop: capture -> detect -> track -> recognize -> vote -> event -> store -> publish.

`Service(cfg, ...).run()` loads everything (event log check, models, classifier, broker connection in
the background), tells systemd READY, then processes frames until the sources end or SIGTERM/SIGINT.
Several cameras ([[sources]]) share the models and are processed together, one frame of each per round
(agent.cameras: `CameraFeed`, `FrameScheduler`; agent.vision.pipeline.process_frames batches them).
Every event is written to SQLite before the publisher thread sends it; on shutdown the live tracks end
(`track_ended` events), the outbox is flushed for `[mqtt] shutdown_timeout` seconds and what is left
stays in the log for the next start. Remote enrollment (when a key file is configured) retrains in the
background and the new classifier is swapped in between frames.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent import __version__, health, systemd
from agent.cameras import CameraFeed, FrameScheduler
from agent.config import Camera, Config, camera_slug
from agent.dbcheck import check_database
from agent.events import IDENTIFIED, UNKNOWN_FACE, Event, EventFactory, new_event_id
from agent.files import StorageError, folder_problem, storage_hint
from agent.frame_events import frame_events, track_ended
from agent.frame_output import (
    AnnotatedWriter,
    FramesWriter,
    check_frames_out,
    check_show,
    frame_record,
    live_frame_name,
)
from agent.gallery import Gallery
from agent.logsafe import RateLimitedLog
from agent.memory import limit_heap_growth
from agent.naming import reidentify
from agent.people import PersonIds
from agent.periodic import Periodic
from agent.run_report import Stats, StatusLine, event_summary, log_progress
from agent.sightings import Sightings
from agent.sources import Frame, Source, open_source
from agent.store import DB_NAME, EventStore, StoreError, TrackIds
from agent.sync.publisher import Publisher
from agent.vision.classifier import Classifier
from agent.vision.pipeline import FrameResult, Pipeline, process_frames
from agent.vision.tracker import Tracker

log = logging.getLogger(__name__)

READ_TIMEOUT = 1.0  # seconds the loop waits for a frame before checking timers and signals
PROGRESS_LOG_PERIOD = 60.0  # seconds between INFO lines with fps and health when there is no status line


class Service:
    def __init__(self, cfg: Config, source_uri: str | None = None, every_frame: bool | None = None,
                 show: str | None = None, status_line: bool = False, max_frames: int = 0,
                 analyzer: Any = None, frames_out: str | None = None):
        limit_heap_growth(cfg.service.mmap_threshold_kb)
        if source_uri is not None:  # `run --source`: the one camera of [source], whatever [[sources]] says
            cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, uri=source_uri), sources=[])
        self.cfg = cfg
        self._several = len(cfg.cameras()) > 1  # more than one camera: names and files say which one
        self._analyzer = analyzer  # a FaceAnalyzer to reuse (tests); built from cfg when None
        self.every_frame = every_frame
        self.show_path = show
        self.frames_out_path = frames_out
        self.status_line: StatusLine | None = None
        self.max_frames = max_frames
        self.stats = Stats()
        if status_line:
            self.status_line = StatusLine(self.stats)
        self.progress_period = PROGRESS_LOG_PERIOD
        self.person_ids = PersonIds(cfg.path("storage"))  # name -> the person's stable id (agent.people)
        # agent-wide events (model_updated; reidentified), camera null
        self.factory = EventFactory.agent_wide(cfg, self.person_ids)
        self._stop = threading.Event()
        self.store: EventStore | None = None
        self.publisher: Publisher | None = None
        self.feeds: list[CameraFeed] = []  # one per camera, in the config's order
        self.scheduler: FrameScheduler | None = None
        self._watchdog: systemd.Watchdog | None = None
        self.gallery: Gallery | None = None
        self.intake: Any = None
        self.sightings: Sightings | None = None  # the faces kept of each track ([sightings] privacy)
        self.retention: Periodic | None = None  # the stores' retention, every [store] retention_interval
        self.monitor: health.HealthMonitor | None = None
        self._writers: dict[str, AnnotatedWriter] = {}  # --show, per camera
        self._frames_out: FramesWriter | None = None
        self._connected_at = 0.0
        self._live: dict[str, AnnotatedWriter] = {}  # [service] live_frame_interval: <storage>/live*.jpg
        self._next_live: dict[str, float] = {}
        self._classifier_stamp: tuple[int, int] | None = None  # svm/classifier.json as last looked at
        self._model_lock = threading.Lock()
        self._store_errors = RateLimitedLog(log, per_period=3)  # a full disk fails every event: not a line each
        self._status_error: str | None = None  # why status.json could not be written last time (health says it)

    # ---- the cameras ---------------------------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline | None:
        """The first camera's pipeline (the classifier and models are the same in all)."""
        return self.feeds[0].pipeline if self.feeds else None

    @property
    def source(self) -> Source | None:
        """The first camera's source."""
        return self.feeds[0].source if self.feeds else None

    def _open_feed(self, camera: Camera, classifier: Classifier | None, ids: Iterator[int]) -> CameraFeed:
        cfg = self.cfg
        source = open_source(camera.source, self.every_frame, cfg.base_dir, cfg.images.max_pixels,
                             cfg.images.max_bytes, cfg.images.memory_mb)
        if self._several:
            source.name = f"{camera.name} ({source.name})"
        tracker = Tracker(camera.tracker, camera.voting, ids)
        pipeline = Pipeline(self.gallery.analyzer, tracker, classifier, camera.detector.min_face_size,
                            camera.detector.min_score)
        return CameraFeed(camera, source, pipeline, EventFactory.from_config(cfg, camera.name, self.person_ids))

    # ---- lifecycle ----------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Ask the loop to finish (signal handlers, other threads)."""
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.wake()  # the loop is usually waiting for a frame

    def load(self) -> None:
        """Everything the loop needs; raises on a configuration or model that cannot work."""
        cfg = self.cfg
        storage = cfg.path("storage")
        self._check_paths(storage)
        storage.mkdir(parents=True, exist_ok=True)
        moved = check_database(storage / DB_NAME)
        if moved is not None:
            log.error("the event log was corrupt and was moved to %s; a new one is started", moved)
        self.store = EventStore(cfg)
        self.publisher = Publisher(cfg, self.store, self.stats_message)
        if self.publisher.client is not None:
            self.publisher.client.add_connect_listener(self._on_connect)
        self._restore_last_person()
        self.gallery = Gallery(cfg, analyzer=self._analyzer, train_in_subprocess=True)
        classifier, _, retrained = self.gallery.ensure_trained(progress=sys.stderr.isatty())
        if retrained:
            self._model_event(classifier)
        ids = TrackIds(self.store)  # track ids unique across the cameras, runs and restarts (events, sightings)
        self.feeds = [self._open_feed(camera, classifier, ids) for camera in cfg.cameras()]
        self.scheduler = FrameScheduler(self.feeds)
        if cfg.sightings.privacy != "off":
            try:
                self.sightings = Sightings(cfg, run=new_event_id(), model=classifier.summary.fingerprint)
            except StorageError as exc:  # a full or read-only disk: the video loop runs without them
                log.error("faces are not kept this run: %s", exc)
            self._reidentify(classifier)  # also after a retrain by a command (enroll, name) while it was off
        # the intake subscribes before the client connects: requests the broker queued while the agent
        # was offline arrive right after the connect and must find their callback in place
        self._start_intake()
        self.publisher.start()
        self._start_retention()
        if self.frames_out_path:
            self._frames_out = FramesWriter(self.frames_out_path)
        for feed in self.feeds:
            if self.show_path:  # several cameras: one video each, <stem>-<camera><suffix>
                path = Path(self.show_path)
                if self._several:
                    path = path.with_name(f"{path.stem}-{camera_slug(feed.name)}{path.suffix}")
                self._writers[feed.name] = AnnotatedWriter(path, feed.source.fps)
            if cfg.service.live_frame_interval > 0:
                self._live[feed.name] = AnnotatedWriter(
                    storage / live_frame_name(feed.name if self._several else None), None)
        self._classifier_stamp = self._classifier_file_stamp()
        self.monitor = health.HealthMonitor.from_config(
            cfg, camera_ok=self._cameras_ok,
            broker_connected_since=self._broker_since,
            outbox_backlog=lambda: self.store.count("pending") if self.store else None,
            storage_problem=self._storage_problem,
            gpu_fallback=lambda: self.pipeline.analyzer.gpu_fallback if self.pipeline else None)

    def _check_paths(self, storage: Path) -> None:
        """Every path the run writes, checked before anything is loaded: a bad one is one clear error now,
        not a traceback or a silent nothing later (OutputError, StorageError)."""
        problem = folder_problem(storage)
        if problem:
            raise StorageError(f"[paths] storage: {storage} {problem}")
        if self.frames_out_path:
            check_frames_out(self.frames_out_path)
        if self.show_path:
            check_show(self.show_path)

    def _restore_last_person(self) -> None:
        """Home Assistant's "Last person" starts from the last recognition logged (a rename while the agent
        was stopped reaches it on the first connect)."""
        ha = self.publisher.homeassistant if self.publisher is not None else None
        if ha is None or self.store is None:
            return
        try:
            last = [r for kind in (IDENTIFIED, UNKNOWN_FACE) for r in self.store.query(type=kind, limit=1)]
            if last:
                ha.restore(max(last, key=lambda r: r.seq).event())
        except (StoreError, sqlite3.Error, ValueError) as exc:
            log.warning("cannot read the last recognition: %s", exc)

    def _start_retention(self) -> None:
        """The event log's retention and the sightings' bounds, on one timer thread (now, then every
        `[store] retention_interval` seconds): what is old goes even while nobody is seen."""
        jobs = [self.store.enforce_retention]
        if self.sightings is not None:
            jobs.append(self.sightings.store.enforce_bounds)
        self.retention = Periodic("retention", self.cfg.store.retention_interval, jobs)
        self.retention.start()

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
        """From the enrollment thread, right after a retrain in this process: it saved the classifier, which
        is taken from the file now (not at the next health check), like one another process saved."""
        self._reload_classifier(now=True)

    def _reload_classifier(self, now: bool = False) -> None:
        """The one way a new classifier reaches the cameras, whoever trained it: svm/classifier.json is the
        truth. Looked at every health check (another process retrained: `face-agent web`, `enroll`, `name`)
        and `now` after a retrain here (the enrollment thread: loading and swapping cost the video loop
        nothing); read when it changed (or `now`), swapped in between frames with a model_updated event unless
        the cameras use that training already (`_same_model`). Under a lock, so two triggers at once (a retrain
        here and another process's) end with the newest file in use; the video loop does not wait for it (a
        swap in progress: it looks again at the next health check)."""
        if not self._model_lock.acquire(blocking=now):
            return
        try:
            stamp = self._classifier_file_stamp()
            if stamp is None or (stamp == self._classifier_stamp and not now) or self.gallery is None:
                return
            self._classifier_stamp = stamp
            classifier = self.gallery.load_classifier()
            if classifier is None or self.pipeline is None or _same_model(self.pipeline.classifier, classifier):
                return
            log.info("a new classifier (%d people): swapping it in", len(classifier.people))
            self._swap(classifier)
        finally:
            self._model_lock.release()

    def _swap(self, classifier: Classifier) -> None:
        self.person_ids.clear()  # a rename comes with a retrain: names may belong to other people now
        if self.publisher is not None and self.publisher.homeassistant is not None:
            self.publisher.homeassistant.names_changed()
        for feed in self.feeds:
            feed.pipeline.set_classifier(classifier)
        self._model_event(classifier)
        self._reidentify(classifier)

    def _reidentify(self, classifier: Classifier) -> None:
        """After a retrain: recent unknown tracks the new model names become `reidentified` events."""
        if self.sightings is None:
            return
        self.sightings.model = classifier.summary.fingerprint
        try:
            events = reidentify(self.sightings.store, classifier, self.factory, self.cfg.sightings.reidentify_hours,
                                event_log=self.store)
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

    def _model_event(self, classifier: Classifier) -> None:
        model = classifier.summary
        self._emit(self.factory.model_updated(model.people, model.counts, model.training_seconds, model.cv_score))

    def _on_connect(self, _session_present: bool) -> None:
        self._connected_at = time.time()

    def _broker_since(self) -> float | None:
        client = self.publisher.client if self.publisher else None
        if client is None:
            return None
        return self._connected_at if client.connected else 0.0

    # ---- events -------------------------------------------------------------------------------------
    def _emit(self, event: Event, feed: CameraFeed | None = None) -> None:
        assert self.store is not None
        try:
            self.store.add(event)
        except StoreError as exc:  # e.g. a full disk: what is stored stays; the event still goes out
            sent = self.publisher is not None and self.publisher.publish_unstored(event)
            self.stats.not_stored += 1
            self._store_errors.log(logging.ERROR, "event %s %s not stored in the event log%s: %s", event.type,
                                   event.event_id, " (published from memory)" if sent else ", not published "
                                   "(MQTT is off): lost", exc)
        self.stats.event(event)
        if feed is not None:
            feed.stats.event(event)
        log.info("event %s%s", event_summary(event), f" ({feed.name})" if feed and self._several else "")

    def events_for(self, feed: CameraFeed, result: FrameResult, frame: Frame) -> list[Event]:
        """The events of one processed frame of a camera (agent.frame_events), placed in its source."""
        sightings = self.sightings
        return frame_events(feed.factory, result, frame.image, feed.position,
                            sightings.unknown_id if sightings is not None else None,
                            sightings.unknown_id_of if sightings is not None else None)

    def _end_tracks(self, feed: CameraFeed) -> None:
        """End every live track of a camera (source lost or ended, shutdown): their track_ended events, at
        its last frame."""
        if self.store is None:
            return
        for track in feed.pipeline.finish():
            self._emit(track_ended(feed.factory, track, feed.size, feed.position,
                                   self.sightings.unknown_id_of if self.sightings is not None else None), feed)
            if self.sightings is not None:
                self.sightings.ended(track, feed.name)

    def _output(self, feed: CameraFeed, frame: Frame, result: FrameResult) -> None:
        """--frames-out, --show and the live frame: the same record, written and drawn."""
        writer = self._writers.get(feed.name)
        live = self._live.get(feed.name)
        live_due = live is not None and time.monotonic() >= self._next_live.get(feed.name, 0.0)
        if self._frames_out is None and writer is None and not live_due:
            return
        time_value = frame.media_time if frame.media_time is not None else frame.timestamp
        record = frame_record(frame.index, time_value, result.update.tracks, feed.camera.tracker.show_coasting,
                              camera=feed.name)
        if self._frames_out is not None:
            try:
                self._frames_out.write(record)
            except OSError as exc:  # e.g. the disk filled: said once, the run goes on
                log.error("--frames-out: cannot write %s: %s; no more frame records this run",
                          self.frames_out_path, exc.strerror or exc)
                self._frames_out = None
        if writer is not None:
            try:
                writer.write(frame.image, record)
            except OSError as exc:
                log.error("--show: %s; nothing more is drawn this run", exc.strerror or exc)
                writer.close()
                del self._writers[feed.name]
        if live_due:
            self._next_live[feed.name] = time.monotonic() + self.cfg.service.live_frame_interval
            try:
                live.write(frame.image, record)
            except OSError as exc:
                log.warning("cannot write the live frame of %s: %s", feed.name, exc)

    # ---- the loop -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start capturing on every camera (after load()). With several cameras a local camera that is not
        plugged in does not stop the others: it is reopened in the background like a stream that is down."""
        for feed in self.feeds:
            feed.source.start(missing_device_fatal=not self._several)

    def step(self, timeout: float = READ_TIMEOUT) -> bool:
        """One round of the loop: a frame of every camera that has one, processed together, plus the cameras
        that were lost or ended. False once every stream is over."""
        assert self.scheduler is not None
        batch = self.scheduler.next_frames(timeout)
        if batch:
            self.process(batch)
        for feed in self.feeds:
            if feed.source.ended:
                if not feed.finished:
                    feed.finished = True
                    if self._several:
                        log.info("%s ended after %d frames", feed.name, feed.stats.frames)
                    self._end_tracks(feed)
            elif feed.source.lost and not feed.down:
                self._source_lost(feed)
        if not batch and self._watchdog is not None and any(feed.down for feed in self.feeds):
            self._watchdog.alive()  # waiting for a reconnect on purpose, not hung
        return not self.scheduler.ended

    def process(self, batch: list[tuple[CameraFeed, Frame]]) -> None:
        """Detect, track, recognize and vote on one frame of each camera in `batch`; log the events."""
        results = process_frames([(feed.pipeline, frame.image, frame.timestamp) for feed, frame in batch])
        for (feed, frame), result in zip(batch, results):
            feed.took(frame, result.size)
            if self.sightings is not None:
                self.sightings.observe(result, frame.image)
            for event in self.events_for(feed, result, frame):
                self._emit(event, feed)
            if self.sightings is not None:
                for track in result.update.ended:
                    self.sightings.ended(track, feed.name)
            self.stats.frame(result)
            feed.stats.frame(result)
            if self._watchdog is not None:
                self._watchdog.frame_done()
            self._output(feed, frame, result)

    def run(self) -> int:
        try:
            # model loading may build TensorRT engines (detector, then embedder: minutes each on a Jetson):
            # systemd's start timeout is extended every 20 s until READY, within systemd.STARTUP_BUDGET
            with systemd.extending_start():
                self.load()
                self.start()
            self._watchdog = systemd.Watchdog()
            names = ", ".join(feed.source.name for feed in self.feeds)
            systemd.ready(f"watching {names}")
            log.info("face-agent %s running: %s, %d people enrolled", __version__, names,
                     len(self.pipeline.classifier.people) if self.pipeline and self.pipeline.classifier else 0)
            next_status = 0.0
            next_progress = time.monotonic() + self.progress_period
            while not self._stop.is_set():
                if not self.step():
                    log.info("source ended after %d frames", self.stats.frames)
                    break
                if self.max_frames and self.stats.frames >= self.max_frames:
                    break
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.cfg.service.status_interval
                    self._reload_classifier()
                    self._write_status()
                if self.status_line is not None:
                    self.status_line.draw(self._tracks())
                elif now >= next_progress:
                    next_progress = now + self.progress_period
                    log_progress(self.stats, self._tracks(), self.monitor.last or {} if self.monitor else {},
                                 {feed.name: feed.stats_message() for feed in self.feeds})
        finally:
            self.shutdown()
        return 0

    def _source_lost(self, feed: CameraFeed) -> None:
        """A camera is down: end its open tracks now (nobody is seen there any more); its frame rate is 0,
        and the agent's too when no camera is left."""
        feed.down = True
        feed.stats.source_lost()
        if all(f.down or f.finished for f in self.feeds):
            self.stats.source_lost()
        self._end_tracks(feed)

    def shutdown(self) -> None:
        systemd.stopping("flushing events")
        if self.status_line is not None:
            self.status_line.close()
        for feed in self.feeds:
            feed.source.stop()
        for feed in self.feeds:
            self._end_tracks(feed)
        if self.retention is not None:  # before the stores close
            self.retention.stop()
        if self.sightings is not None:
            self.sightings.close()
        self._write_status(state="stopped")
        if self.publisher is not None:
            left = self.publisher.stop()
            if left:
                log.warning("%d events not yet published; they are kept and sent at the next start (those older "
                            "than [mqtt] max_event_age by then are kept as expired, not sent late)", left)
        if self.intake is not None:  # after the client: the broker keeps queueing requests for us
            self.intake.stop()
        if self.store is not None:
            self.store.close()
        for writer in self._writers.values():
            writer.close()
        if self._frames_out is not None:
            self._frames_out.close()
        if self.gallery is not None:
            self.gallery.close()

    # ---- reporting ----------------------------------------------------------------------------------
    def _tracks(self) -> int:
        return sum(len(feed.pipeline.tracker.tracks) for feed in self.feeds)

    def _cameras_ok(self) -> bool | dict[str, bool] | None:
        """Health reading: frames are arriving (one camera), or per camera name (several)."""
        if not self.feeds:
            return None
        if not self._several:
            return self.feeds[0].source.connected
        return {feed.name: feed.source.connected or feed.source.ended for feed in self.feeds}

    def stats_message(self) -> dict:
        """The periodic stats payload (publisher thread): the agent's totals (fps: frames of all cameras per
        second), `source` of the first camera, and each camera's own figures under `cameras`."""
        tracks = self._tracks()
        health_state = self.monitor.last["state"] if self.monitor and self.monitor.last else None
        return {"fps": round(self.stats.fps, 2), "frames": self.stats.frames, "faces": self.stats.faces,
                "events": self.stats.events, "events_not_stored": self.stats.not_stored,
                "tracks": tracks, "latency_ms": self.stats.latency_ms(),
                "health": health_state, "source": self.source.stats() if self.source else {},
                "cameras": {feed.name: feed.stats_message() for feed in self.feeds},
                "backend": self._backend()}

    def _backend(self) -> str | None:
        """The detector's inference backend (and the embedder's when it is another)."""
        if self.pipeline is None:
            return None
        analyzer = self.pipeline.analyzer
        names = [getattr(analyzer.detector.backend, "name", None), getattr(analyzer.embedder, "name", None)]
        return " + ".join(dict.fromkeys(str(n) for n in names if n)) or None

    def _storage_problem(self) -> str | None:
        """Health reading: the event log's disk is full (store.space_problem), or status.json cannot be
        written (`face-agent status` would see it go stale)."""
        problems = [p for p in (self.store.space_problem() if self.store else None, self._status_error) if p]
        return "; ".join(problems) or None

    def _write_status(self, state: str | None = None) -> None:
        if self.monitor is None:
            return
        report = {"state": state, "reasons": []} if state else self.monitor.check()
        if self.publisher is not None:
            self.publisher.publish_health(report)
        path = health.status_path(self.cfg)
        try:
            health.write_status(path, {
                "interval": self.cfg.service.status_interval, "agent_id": self.cfg.agent.id,
                "version": __version__, "started_at": self.stats.started, "health": report,
                "stats": self.stats_message()})
        except OSError as exc:  # said once when it starts failing, once when it works again
            if self._status_error is None:
                log.error("cannot write the status file %s: %s (%s); health reports it", path, exc.strerror or exc,
                          storage_hint(path.parent))
            self._status_error = f"status: cannot write {path.name}: {exc.strerror or exc}"
        else:
            if self._status_error is not None:
                log.warning("the status file %s is written again", path)
            self._status_error = None
        systemd.status(f"{report['state']}: {self.stats.fps:.1f} fps, {self.stats.events} events")


def _same_model(a: Classifier | None, b: Classifier | None) -> bool:
    """The same training (data fingerprint, time, duration): a classifier file read back, not a new model."""
    if a is None or b is None:
        return False
    sa, sb = a.summary, b.summary
    return (sa.fingerprint, sa.trained_at, sa.training_seconds) == (sb.fingerprint, sb.trained_at, sb.training_seconds)


def install_signal_handlers(service: Service) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, service.stop)
