"""Frame in, recognitions out: detect, track, embed only the faces the tracker asks for, vote.

The full detector (P-Net pyramid + R-Net + O-Net) runs every `[tracker] detect_every` frames; on the
frames between, only the live tracks' predicted boxes go through R-Net and O-Net (`MTCNN.refine`), which
costs a few milliseconds instead of tens, so faces are still found on every frame while new faces wait
at most `detect_every - 1` frames.

One `Pipeline.process(rgb, timestamp)` per frame returns a `FrameResult`: the detections, the tracker's
update (tracks started/ended, all live tracks) and the identity changes the votes produced. Every embedding
is first checked against its track's own face (`Tracker.verify`): a different person splits the track
before the vote, so a name never passes from one person to another. A shot cut (`Tracker.check_scene`)
ends every track and makes the frame a full-detection frame. On a camera where nobody is tracked, the full
detection is skipped while nothing in the picture moves (`agent.vision.motion.MotionGate`). Turning
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
from agent.vision.motion import MotionGate
from agent.vision.mtcnn import Detection, DetectRequest
from agent.vision.recognizer import CUT_OFF, QUALITY_REASONS, FaceAnalyzer
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
    """One camera's frames through the shared models: its own tracker and votes, the analyzer (detector,
    aligner, embedder) shared with the other cameras' pipelines. `min_face_size` and `min_score` are the
    camera's detector settings (None: the detector's own)."""

    def __init__(self, analyzer: FaceAnalyzer, tracker: Tracker, classifier: Classifier | None = None,
                 min_face_size: int | None = None, min_score: float | None = None):
        self.analyzer = analyzer
        self.tracker = tracker
        self._classifier = classifier
        self._lock = threading.Lock()
        self.min_face_size = min_face_size
        self.min_score = analyzer.detector.min_score if min_score is None else min_score
        self.motion = MotionGate(tracker.cfg.motion_threshold, tracker.cfg.motion_recheck_every)
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
        log.debug("classifier swapped in: %d people", len(classifier.people) if classifier else 0)

    def process(self, rgb: np.ndarray, timestamp: float | None = None) -> FrameResult:
        return process_frames([(self, rgb, timestamp)])[0]

    def finish(self) -> list[Track]:
        """End every live track (end of stream or shutdown)."""
        return self.tracker.finish()

    # ---- the phases of process_frames, per camera ------------------------------------------------------
    def _detect_request(self, rgb: np.ndarray) -> DetectRequest | None:
        """What to detect on this frame: everything after a shot cut and every detect_every frames while
        faces are tracked; the tracks' predicted boxes in between. With nobody tracked: everything on the
        first frame that moved once detect_every frames have passed since the last full detection
        (agent.vision.motion), else nothing."""
        cut = self.tracker.check_scene(rgb)  # a shot cut ends every track: look for faces everywhere
        frame, every = self.tracker.frame, max(1, self.tracker.cfg.detect_every)
        if cut or (self.tracker.following and frame % every == 0):
            self.motion.detected(rgb, frame)
        elif not self.tracker.following:  # nobody here: look once it is due, if something moved
            if self.motion.since_detection(frame) < every or self.motion.still(rgb, frame):
                return None
        else:
            predicted = self.tracker.predicted_boxes()
            return DetectRequest(rgb, boxes=predicted, min_score=0.0) if len(predicted) else None
        # every face down to the O-Net threshold; only those above min_score may start a track
        return DetectRequest(rgb, min_score=0.0, min_face_size=self.pyramid_floor)

    @property
    def pyramid_floor(self) -> int | None:
        """The smallest face (px) a full detection looks for: the camera's detector setting, raised to the
        smallest face the tracker may embed unless `[tracker] track_small_faces` (a smaller face can be neither
        named nor verified, and the pyramid's finest scales are most of the detector's work)."""
        t = self.tracker.cfg
        if t.track_small_faces:
            return self.min_face_size
        floor = self.min_face_size or self.analyzer.detector.min_face_size
        return max(floor, min(t.min_face_size, t.verify_min_face_size))

    def _vote(self, result: FrameResult, rgb: np.ndarray, chips: np.ndarray, embeddings: np.ndarray,
              in_frame: np.ndarray, classifier: Classifier) -> None:
        """Check each embedding against its track's own face, then let it vote."""
        requests = result.update.to_embed
        for request, embedding in zip(requests, embeddings):
            if request.verify_only:  # too small to vote: it may only show the face is still the track's person
                self.tracker.reverify(request.track.id, embedding)
        voting = [k for k, request in enumerate(requests) if not request.verify_only]
        predictions = self.analyzer.predict(rgb, [requests[k].detection for k in voting], embeddings[voting],
                                            in_frame[voting], classifier) if voting else []
        for k, prediction in zip(voting, predictions):
            request, chip, embedding = requests[k], chips[k], embeddings[k]
            usable = prediction.reason not in QUALITY_REASONS  # too small, blurry, turned away: no vote, no check
            track = self.tracker.verify(request.track.id, embedding, prediction.name) if usable else request.track
            if track is None:  # (verify: the same face, or a new track when it is somebody else's)
                continue
            result.recognitions.append(Recognition(track, request.detection, prediction, embedding, chip))
            change = self.tracker.add_prediction(track.id, prediction.name, prediction.confidence,
                                                 request.quality, vote=usable, attempt=prediction.reason != CUT_OFF,
                                                 small=request.size < classifier.rule.small_face_size)
            if change is not None:
                result.changes.append(change)
        self.embedded += len(requests)


def process_frames(frames: list[tuple[Pipeline, np.ndarray, float | None]]) -> list[FrameResult]:
    """One frame of each camera (its pipeline, RGB image, timestamp) through detect -> track -> embed ->
    vote. The pipelines share one analyzer: R-Net/O-Net candidates of all the frames go through one batch
    per stage and every face to embed through one embedder batch; tracking and votes stay per camera.
    A frame always uses one classifier from start to end (a swap takes effect at the next call)."""
    if not frames:
        return []
    analyzer = frames[0][0].analyzer
    if any(pipeline.analyzer is not analyzer for pipeline, _, _ in frames):
        raise ValueError("process_frames: the pipelines must share one analyzer")
    now = time.time()
    classifiers = []
    for pipeline, _, _ in frames:
        with pipeline._lock:
            classifiers.append(pipeline._classifier)
    t0 = time.perf_counter()
    requests = [pipeline._detect_request(rgb) for pipeline, rgb, _ in frames]
    asked = [r for r in requests if r is not None]
    found = iter(analyzer.detector.detect_many(asked) if asked else [])
    detections = [next(found) if r is not None else [] for r in requests]
    t1 = time.perf_counter()
    results = []
    for (pipeline, rgb, timestamp), found_here in zip(frames, detections):
        timestamp = now if timestamp is None else timestamp
        update = pipeline.tracker.update(found_here, rgb, timestamp, start_min_score=pipeline.min_score)
        results.append(FrameResult(timestamp, (rgb.shape[1], rgb.shape[0]), found_here, update))
    t2 = time.perf_counter()
    wanted = [k for k, (result, classifier) in enumerate(zip(results, classifiers))
              if result.update.to_embed and classifier is not None]
    embedded = analyzer.embed_many([(frames[k][1], [r.detection for r in results[k].update.to_embed])
                                    for k in wanted]) if wanted else []
    t3 = time.perf_counter()
    for k, (chips, embeddings, in_frame) in zip(wanted, embedded):
        pipeline, rgb, _ = frames[k]
        pipeline._vote(results[k], rgb, chips, embeddings, in_frame, classifiers[k])
    t4 = time.perf_counter()
    for (pipeline, _, _), result in zip(frames, results):
        if wanted:
            result.timings.update(embed=(t3 - t2) * 1000, classify=(t4 - t3) * 1000)
        result.timings.update(detect=(t1 - t0) * 1000, track=(t2 - t1) * 1000, total=(t4 - t0) * 1000)
        pipeline.frames += 1
        pipeline.faces += sum(1 for t in result.update.tracks if t.missed == 0)  # tracked faces seen on it
    return results
