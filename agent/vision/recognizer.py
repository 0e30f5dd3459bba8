"""Still images in, named faces out: detect (MTCNN) -> align (dlib 5 points) -> embed -> classify.

The video pipeline uses the same pieces one by one (it embeds only the tracks the tracker schedules);
this module holds them together and serves `face-agent identify`, enrollment and evaluation.

Quality: a face smaller than `[enrollment] min_face_size`, blurrier than `[recognition] min_sharpness` or
turned further than `[recognition] max_yaw` (from MTCNN's landmarks) is never named: its prediction is
unknown with the reason `too_small`, `blurry` or `pose` (the nearest candidate is still reported), and in
video it does not vote. In video a face cut off by the frame's edge (`[recognition] min_in_frame`) is
`cut_off` too; a photo's face is not (photos are often cropped close to the face). `principal_face` says
which face of a photo is "the" person (eval's queries).

Close-ups: a photo whose face fills most of the picture (a passport photo, a crop) can escape MTCNN, whose
cascade needs some context around a face; when a photo has no face at all, it is searched again with a border
(CLOSE_UP_PADDING of its longer side, the edge pixels repeated), and the faces found are moved back into the
photo. A photo with any face is never searched again, so this adds no box where a face was found.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from agent.config import Config
from agent.vision.align import Aligner
from agent.vision.backends import create_mtcnn_runner
from agent.vision.backends.mtcnn_profile import options_from_config
from agent.vision.classifier import Classifier, Prediction
from agent.vision.embed import Embedder, create_embedder, embed_chips
from agent.vision.mtcnn import MTCNN, Detection
from agent.vision.tracker import face_sharpness

log = logging.getLogger(__name__)

CLOSE_UP_PADDING = (0.25, 0.5)  # borders (share of the longer side) tried in turn on a photo with no face
TOO_SMALL, BLURRY, POSE, CUT_OFF = "too_small", "blurry", "pose", "cut_off"
QUALITY_REASONS = (TOO_SMALL, BLURRY, POSE, CUT_OFF)  # predictions with these reasons are never names nor votes


def yaw_ratio(landmarks: np.ndarray) -> float:
    """|nose x - eyes' midpoint x| / half the eye distance, from MTCNN's 5 landmarks (0 = frontal; 1 = the
    nose below one eye, the head turned ~40 degrees). inf when the eyes coincide."""
    left, right, nose = (np.asarray(landmarks, dtype=np.float64)[k] for k in range(3))
    half = float(np.linalg.norm(right - left)) / 2.0
    return abs(float(nose[0]) - (float(left[0]) + float(right[0])) / 2.0) / half if half > 0 else float("inf")


def judge_quality(side: float, sharpness: float, yaw: float, cfg: Config) -> str:
    """"" when a face of this size (px, shorter side), sharpness and yaw_ratio may be named, else why not."""
    if side < cfg.recognition.min_face_size:
        return TOO_SMALL
    if sharpness < cfg.recognition.min_sharpness:
        return BLURRY
    if yaw > cfg.recognition.max_yaw:
        return POSE
    return ""


def quality_reason(rgb: np.ndarray, detection: Detection, cfg: Config) -> str:
    """"" when the face may be named, else why not: too_small | blurry | pose."""
    return judge_quality(min(detection.width, detection.height), face_sharpness(rgb, detection.box),
                         yaw_ratio(detection.landmarks), cfg)


def face_sides(detections: list[Detection]) -> np.ndarray:
    """Each detection's shorter side in px (the classifier's gate is stricter for small faces)."""
    return np.array([min(d.width, d.height) for d in detections], dtype=np.float64)


def with_quality(predictions: list[Prediction], reasons: list[str]) -> list[Prediction]:
    """Predictions of low-quality faces turned into unknown with the quality reason (candidate kept)."""
    return [p if not r else dataclasses.replace(p, name=None, reason=r) for p, r in zip(predictions, reasons)]


def principal_face(detections: list[Detection], width: int, height: int, dominance: float) -> int | None:
    """Index of the face a photo is "of": the largest one if it is `dominance` times larger than the next,
    else, among the faces at least 1/dominance as large as the largest, the one nearest the image centre."""
    if not detections:
        return None
    areas = np.array([d.area for d in detections])
    comparable = np.flatnonzero(areas * dominance >= areas.max())
    cx, cy = width / 2.0, height / 2.0
    off = [((detections[k].x1 + detections[k].x2) / 2 - cx) ** 2 + ((detections[k].y1 + detections[k].y2) / 2 - cy) ** 2
           for k in comparable]
    return int(comparable[int(np.argmin(off))])


@dataclass
class FaceResult:
    detection: Detection
    landmarks5: np.ndarray  # dlib's 5 points (x, y) used for alignment
    prediction: Prediction | None  # None: no classifier
    # "" or too_small | blurry | pose (| cut_off in video): why the face is not named whatever the classifier says
    quality: str = ""

    def to_dict(self) -> dict:
        d = self.detection.to_dict()
        d["dlib_landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks5]
        if self.prediction is not None:
            d.update(self.prediction.to_dict())
        else:
            d.update(name=None, reason=self.quality or None)
        return d


def build_detector(cfg: Config, on_degraded: Callable[[str], None] | None = None) -> MTCNN:
    """The MTCNN cascade on the backend chosen by `[detector] backend` (TensorRT engines sized for the
    configured [source] frames; `on_degraded(reason)` is called if the GPU path falls back to the CPU)."""
    backend = create_mtcnn_runner(cfg.detector.backend, **options_from_config(cfg), on_degraded=on_degraded)
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
        self.flip = cfg.embedding.flip  # embeddings are the mean of the chip's and its mirror's

    @property
    def gpu_fallback(self) -> bool:
        """True while inference meant for the GPU runs on the CPU (the TensorRT watchdog fell back)."""
        runners = (self.detector.backend, getattr(self.embedder, "runner", None))  # dlib's embedder has none
        return any(bool(getattr(r, "degraded", False)) for r in runners)  # only guarded runners degrade

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The faces of a photo; one with none is searched again with a border (a close-up: module docstring)."""
        found = self.detector.detect(rgb)
        if found:
            return found
        height, width = rgb.shape[:2]
        for share in CLOSE_UP_PADDING:
            pad = int(round(share * max(height, width)))
            padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            found = self.detector.detect(padded)
            if found:
                log.debug("close-up: %d face(s) found with a %d px border", len(found), pad)
                return [dataclasses.replace(d, x1=max(0.0, d.x1 - pad), y1=max(0.0, d.y1 - pad),
                                            x2=min(float(width), d.x2 - pad), y2=min(float(height), d.y2 - pad),
                                            landmarks=np.asarray(d.landmarks) - pad) for d in found]
        return []

    def embed(self, rgb: np.ndarray, detections: list[Detection]) -> tuple[np.ndarray, np.ndarray]:
        """(chips (N,150,150,3), embeddings (N,128)) for the given detections, in one batch (with
        `[embedding] flip`: each the mean of the chip's and its mirror image's)."""
        chips, embeddings, _ = self.embed_many([(rgb, detections)])[0]
        return chips, embeddings

    def embed_many(self, faces: list[tuple[np.ndarray, list[Detection]]]
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`embed` for the detections of several images (one per camera): the chips of all of them go to
        the embedder together, in one batch. Per image: (chips, embeddings, the share of each chip inside
        the image: Aligner.chips_in_frame)."""
        aligned = [self.aligner.chips_in_frame(rgb, [d.box for d in detections]) for rgb, detections in faces]
        counts = [len(chips) for chips, _ in aligned]
        if not sum(counts):
            return [(chips, np.zeros((0, 128), dtype=np.float32), in_frame) for chips, in_frame in aligned]
        embeddings = embed_chips(self.embedder, np.concatenate([c for c, _ in aligned if len(c)]), self.flip)
        ends = np.cumsum(counts)
        return [(chips, embeddings[end - n:end], in_frame) for (chips, in_frame), n, end in zip(aligned, counts, ends)]

    def quality(self, rgb: np.ndarray, detections: list[Detection]) -> list[str]:
        """quality_reason of each detection ("" = good enough to be named)."""
        return [quality_reason(rgb, d, self.cfg) for d in detections]

    def predict(self, rgb: np.ndarray, detections: list[Detection], embeddings: np.ndarray, in_frame: np.ndarray,
                classifier: Classifier) -> list[Prediction]:
        """The classifier's predictions for embedded video detections, low-quality faces made unknown, and
        faces cut off by the frame's edge too (`cut_off`: less than `[recognition] min_in_frame` of the
        chip inside the frame, `in_frame` as embed_many gives it; a person walking in at the side would
        otherwise vote "unknown")."""
        reasons = self.quality(rgb, detections)
        reasons = [reason or (CUT_OFF if share < self.cfg.recognition.min_in_frame else "")
                   for reason, share in zip(reasons, in_frame)]
        return with_quality(classifier.predict(embeddings, face_sides(detections)), reasons)

    def identify(self, rgb: np.ndarray) -> list[FaceResult]:
        """Every face found in the image with its name (or unknown, with the reason)."""
        detections = self.detect(rgb)
        if not detections:
            return []
        boxes = [d.box for d in detections]
        landmarks = self.aligner.landmarks(rgb, boxes)
        _, embeddings = self.embed(rgb, detections)
        reasons = self.quality(rgb, detections)
        predictions: list[Prediction | None] = (
            with_quality(self.classifier.predict(embeddings, face_sides(detections)), reasons)
            if self.classifier is not None
            else [None] * len(boxes))
        return [FaceResult(d, lm, p, r) for d, lm, p, r in zip(detections, landmarks, predictions, reasons)]
