"""Frame in, recognitions out: detect, track, embed only the faces the tracker asks for, vote.

The full detector (P-Net pyramid + R-Net + O-Net) runs every `[tracker] detect_every` frames; on the
frames between, only the live tracks' predicted boxes go through R-Net and O-Net (`MTCNN.refine`), which
costs a few milliseconds instead of tens, so faces are still found on every frame while new faces wait
at most `detect_every - 1` frames.

One `Pipeline.process(rgb, timestamp)` per frame returns a `FrameResult`: the detections, the tracker's
update (tracks started/ended, all live tracks) and the identity changes the votes produced. Every embedding
is first checked against its track's own face (`Tracker.verify`): a different person splits the track
before the vote, so a name never passes from one person to another. A shot cut (`Tracker.check_scene`)
ends every track and makes the frame a full-detection frame. Turning
those into events is the service's job. The classifier can be replaced between frames
(`set_classifier`) by another thread: the reference is swapped atomically and a frame always uses one
classifier from start to end.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from agent.vision.classifier import Classifier, Prediction
from agent.vision.mtcnn import Detection
from agent.vision.recognizer import QUALITY_REASONS, FaceAnalyzer
from agent.vision.tracker import IdentityChange, Track, Tracker, TrackerUpdate

log = logging.getLogger(__name__)


@dataclass
class Recognition:
    track: Track
    detection: Detection
    prediction: Prediction
    embedding: np.ndarray | None = None  # the face's 128-d embedding (kept by agent.sightings)
    chip: np.ndarray | None = None  # its aligned 150x150 RGB chip


@dataclass
class FrameResult:
    timestamp: float
    size: tuple[int, int]  # (width, height)
    detections: list[Detection]
    update: TrackerUpdate
    recognitions: list[Recognition] = field(default_factory=list)
    changes: list[IdentityChange] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage


class Pipeline:
    def __init__(self, analyzer: FaceAnalyzer, tracker: Tracker, classifier: Classifier | None = None):
        self.analyzer = analyzer
        self.tracker = tracker
        self._classifier = classifier
        self._lock = threading.Lock()
        self.frames = 0
        self.faces = 0  # faces seen (confirmed tracks with a detection) summed over frames
        self.embedded = 0  # faces embedded

    @property
    def classifier(self) -> Classifier | None:
        return self._classifier

    def set_classifier(self, classifier: Classifier | None) -> None:
        """Swap in a newly trained classifier; takes effect at the next frame."""
        with self._lock:
            self._classifier = classifier
        log.info("classifier swapped in: %d people", len(classifier.people) if classifier else 0)

    def process(self, rgb: np.ndarray, timestamp: float | None = None) -> FrameResult:
        timestamp = time.time() if timestamp is None else timestamp
        with self._lock:
            classifier = self._classifier
        t0 = time.perf_counter()
        detector = self.analyzer.detector
        cut = self.tracker.check_scene(rgb)  # a shot cut ends every track: look for faces everywhere
        full = cut or self.tracker.frame % max(1, self.tracker.cfg.detect_every) == 0
        # every face down to the O-Net threshold; only those above min_score may start a track
        if full:
            detections = detector.detect(rgb, min_score=0.0)
        else:  # between full detections: only where the tracks are expected
            predicted = self.tracker.predicted_boxes()
            detections = detector.refine(rgb, predicted, min_score=0.0) if len(predicted) else []
        t1 = time.perf_counter()
        update = self.tracker.update(detections, rgb, timestamp, start_min_score=detector.min_score)
        t2 = time.perf_counter()
        result = FrameResult(timestamp, (rgb.shape[1], rgb.shape[0]), detections, update)
        if update.to_embed and classifier is not None:
            requests = update.to_embed
            chips, embeddings = self.analyzer.embed(rgb, [r.detection for r in requests])
            t3 = time.perf_counter()
            predictions = self.analyzer.predict(rgb, [r.detection for r in requests], embeddings, classifier)
            for request, chip, embedding, prediction in zip(requests, chips, embeddings, predictions):
                usable = prediction.reason not in QUALITY_REASONS  # too small, blurry, turned away: no vote, no check
                track = self.tracker.verify(request.track.id, embedding, prediction.name) if usable else request.track
                if track is None:  # (verify: the same face, or a new track when it is somebody else's)
                    continue
                result.recognitions.append(Recognition(track, request.detection, prediction, embedding, chip))
                change = self.tracker.add_prediction(track.id, prediction.name, prediction.confidence,
                                                     request.quality, vote=usable)
                if change is not None:
                    result.changes.append(change)
            t4 = time.perf_counter()
            self.embedded += len(requests)
            result.timings.update(embed=(t3 - t2) * 1000, classify=(t4 - t3) * 1000)
        result.timings.update(detect=(t1 - t0) * 1000, track=(t2 - t1) * 1000,
                              total=(time.perf_counter() - t0) * 1000)
        self.frames += 1
        self.faces += sum(1 for t in update.tracks if t.missed == 0)  # tracked faces seen on this frame
        return result

    def finish(self) -> list[Track]:
        """End every live track (end of stream or shutdown)."""
        return self.tracker.finish()
