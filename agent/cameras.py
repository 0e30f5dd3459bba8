"""The cameras of a running agent: one `CameraFeed` per camera, and the `FrameScheduler` that hands the loop
one frame of every camera that has one.

A feed holds what is its own: the source (capture thread and reopen loop), the pipeline (tracker and votes;
the models behind it are shared by all feeds), the `camera` name of its events, its stats and where its last
frame was. A camera that drops out is reopened by its own source while the others go on, and one camera's
tracks never see another camera's faces.

Fair under load: the loop takes at most one frame per camera per round, and of a live camera the newest one
(its source keeps only that; the frames it replaced are its `dropped` count in the stats). When the cameras
together offer more frames than the machine can process, every camera is slowed down alike and none starves.
Files and folders read with every frame drop nothing: they wait for their turn.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from agent.config import Camera
from agent.events import EventFactory, FramePosition
from agent.run_report import Stats
from agent.sources import Frame, Source
from agent.vision.pipeline import Pipeline

log = logging.getLogger(__name__)


class CameraFeed:
    """One camera in the running agent."""

    def __init__(self, camera: Camera, source: Source, pipeline: Pipeline, factory: EventFactory) -> None:
        self.camera = camera
        self.name = camera.name
        self.source = source
        self.pipeline = pipeline
        self.factory = factory
        self.stats = Stats()
        self.position: FramePosition | None = None  # where the last processed frame is in the source
        self.size = (0, 0)  # (width, height) of the last processed frame
        self.down = False  # the source is lost and its tracks were ended for this outage
        self.finished = False  # the stream ended and its tracks were ended

    def took(self, frame: Frame, size: tuple[int, int]) -> None:
        """A frame of this camera was processed."""
        self.position = FramePosition(frame.index, frame.media_time)
        self.size = size
        self.down = False

    def stats_message(self) -> dict[str, Any]:
        """This camera's part of the stats payload."""
        return {"fps": round(self.stats.fps, 2), "frames": self.stats.frames, "faces": self.stats.faces,
                "events": self.stats.events, "tracks": len(self.pipeline.tracker.tracks),
                "still_skipped": self.pipeline.motion.skipped,
                "latency_ms": self.stats.latency_ms(), "source": self.source.stats()}


class FrameScheduler:
    """Round after round, one frame of each camera that has one (see the module docstring)."""

    def __init__(self, feeds: list[CameraFeed]) -> None:
        self.feeds = feeds
        self._ready = threading.Event()  # a source delivered a frame or ended, or wake() was called
        self._woken = False
        for feed in feeds:
            feed.source.listener = self._ready

    @property
    def ended(self) -> bool:
        """Every camera's stream is over (files, folders; live sources end only when stopped)."""
        return all(feed.source.ended for feed in self.feeds)

    def next_frames(self, timeout: float) -> list[tuple[CameraFeed, Frame]]:
        """The next frame of every camera that has one, waiting up to `timeout` seconds for the first; [] when
        none came in time, all streams ended, or wake() was called."""
        deadline = time.monotonic() + timeout
        while True:
            self._ready.clear()
            if self._woken:
                self._woken = False
                return []
            batch = []
            for feed in self.feeds:
                frame = feed.source.read(timeout=0)
                if frame is not None:
                    batch.append((feed, frame))
            if batch or self.ended:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._ready.wait(remaining):
                return []

    def wake(self) -> None:
        """Make a waiting next_frames() return now (a shutdown request); safe from a signal handler."""
        self._woken = True
        self._ready.set()
