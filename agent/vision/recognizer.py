"""Still images in, named faces out: detect (MTCNN) -> align (dlib 5 points) -> embed -> classify.

The video pipeline uses the same pieces one by one (it embeds only the tracks the tracker schedules);
this module holds them together and serves `face-agent identify`, enrollment and evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.config import Config
from agent.vision.align import Aligner
from agent.vision.backends import create_backend
from agent.vision.backends.tensorrt import options_from_config
from agent.vision.classifier import Classifier, Prediction
from agent.vision.embed import Embedder, create_embedder
from agent.vision.mtcnn import MTCNN, Detection

log = logging.getLogger(__name__)


@dataclass
class FaceResult:
    detection: Detection
    landmarks5: np.ndarray  # dlib's 5 points (x, y) used for alignment
    prediction: Prediction | None  # None: not recognised (no classifier, or face too small)

    def to_dict(self) -> dict:
        d = self.detection.to_dict()
        d["dlib_landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks5]
        if self.prediction is not None:
            d.update(self.prediction.to_dict())
        return d


def build_detector(cfg: Config, on_degraded: Callable[[str], None] | None = None) -> MTCNN:
    """The MTCNN cascade on the backend chosen by `[detector] backend` (TensorRT engines sized for the
    configured [source] frames; `on_degraded(reason)` is called if the GPU path falls back to the CPU)."""
    backend = create_backend(cfg.detector.backend, **options_from_config(cfg), on_degraded=on_degraded)
    return MTCNN.from_config(cfg.detector, backend)


class FaceAnalyzer:
    """Detector, aligner and embedder built once from the config; the classifier can be swapped."""

    def __init__(self, cfg: Config, classifier: Classifier | None = None,
                 detector: MTCNN | None = None, embedder: Embedder | None = None):
        self.cfg = cfg
        self.detector = detector or build_detector(cfg)
        self.aligner = Aligner()
        self.embedder = embedder or create_embedder(cfg.embedding, cfg.path("engines"), cfg.base_dir,
                                                    inference_timeout=cfg.detector.inference_timeout)
        self.classifier = classifier

    @property
    def gpu_fallback(self) -> bool:
        """True while inference meant for the GPU runs on the CPU (the TensorRT watchdog fell back)."""
        runners = (self.detector.backend, getattr(self.embedder, "runner", None))  # dlib's embedder has none
        return any(bool(getattr(r, "degraded", False)) for r in runners)  # only guarded runners degrade

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detector.detect(rgb)

    def embed(self, rgb: np.ndarray, detections: list[Detection]) -> tuple[np.ndarray, np.ndarray]:
        """(chips (N,150,150,3), embeddings (N,128)) for the given detections, in one batch."""
        boxes = [d.box for d in detections]
        chips = self.aligner.chips(rgb, boxes)
        if len(chips) == 0:
            return chips, np.zeros((0, 128), dtype=np.float32)
        return chips, self.embedder.embed(chips)

    def identify(self, rgb: np.ndarray) -> list[FaceResult]:
        """Every face found in the image with its name (or unknown)."""
        detections = self.detect(rgb)
        if not detections:
            return []
        boxes = [d.box for d in detections]
        landmarks = self.aligner.landmarks(rgb, boxes)
        _, embeddings = self.embed(rgb, detections)
        predictions: list[Prediction | None] = (
            list(self.classifier.predict(embeddings)) if self.classifier is not None else [None] * len(boxes))
        return [FaceResult(d, lm, p) for d, lm, p in zip(detections, landmarks, predictions)]
