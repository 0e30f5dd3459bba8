"""MTCNN face detection (P-Net -> R-Net -> O-Net cascade), independent of the inference runtime.

The networks themselves run in a backend (`agent.vision.backends`: ONNX Runtime on the CPU, TensorRT on a
Jetson); this module does everything around them: the image pyramid, candidate boxes from the P-Net
heat map, non-maximum suppression, bounding-box regression, the square crops for R-Net and O-Net (zero
padded where they leave the image) and the five landmarks.

It follows the reference implementation of the weights (PyPI `mtcnn` 0.1.1, itself after David
Sandberg's facenet port of the original MATLAB/Caffe code): same pyramid, same INTER_AREA resizing, same
`(pixel - 127.5) / 128` normalisation of RGB pixels, same box arithmetic. The only difference in the
data flow is that the reference feeds every network a *transposed* image (x and y swapped, a relic of
MATLAB's column-major Caffe); our ONNX graphs have that transposition baked into their weights (see
tools/build_mtcnn_onnx.py), so here images go in plain NCHW and nothing is transposed.

Coordinates: internally boxes keep the reference's MATLAB convention (1-based, inclusive: [x1, x2] covers
0-based pixels x1 - 1 .. x2 - 1), so the arithmetic is the reference's to the digit; `Detection` boxes are
0-based with exclusive right/bottom edges (width = x2 - x1), landmarks 0-based pixel positions.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from agent.config import DetectorSection
from agent.vision.shrink import halve

log = logging.getLogger(__name__)

PNET_CELL = 12  # P-Net receptive field: a 12x12 window of the scaled image
PNET_STRIDE = 2  # P-Net output stride
_NMS_MATRIX_MAX = 600  # up to this many boxes NMS uses an all-pairs overlap matrix (faster), else a loop
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


# --------------------------------------------------------------------------------------------------------
# Pyramid geometry (also used by the TensorRT backend to build its optimisation profile)
# --------------------------------------------------------------------------------------------------------

def fit_size(height: int, width: int, max_input_side: int = 0) -> tuple[int, int]:
    """(h, w) of a frame after the `max_input_side` downscale (unchanged when it already fits or 0)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} has no pixels")
    longest = max(height, width)
    if max_input_side <= 0 or longest <= max_input_side:
        return int(height), int(width)
    factor = max_input_side / longest
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def pyramid_scales(height: int, width: int, min_face_size: int = 20, scale_factor: float = 0.709) -> list[float]:
    """Scales of the image pyramid, largest first, as in the reference implementation.

    Scale k is (12 / min_face_size) * scale_factor**k, for as long as the short side of the scaled image is
    still at least 12 px (the P-Net window). An image whose short side is under 12 px after the first
    scale gets no scale at all (it cannot contain a face of `min_face_size`).
    """
    if min_face_size < 1:
        raise ValueError(f"min_face_size must be >= 1, got {min_face_size}")
    if not 0.0 < scale_factor < 1.0:
        raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
    first = PNET_CELL / min_face_size
    min_layer = min(height, width) * first
    scales: list[float] = []
    count = 0
    while min_layer >= PNET_CELL:
        scale = first * scale_factor**count
        # guard against float drift: P-Net needs both sides >= 12 after ceil()
        if math.ceil(min(height, width) * scale) >= PNET_CELL:
            scales.append(scale)
        min_layer *= scale_factor
        count += 1
    return scales


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return int(math.ceil(height * scale)), int(math.ceil(width * scale))


def pnet_input_shapes(height: int, width: int, min_face_size: int = 20, scale_factor: float = 0.709,
                      max_input_side: int = 0) -> list[tuple[int, int]]:
    """The exact (h, w) that P-Net receives at each pyramid scale for a `height` x `width` frame.

    Accounts for the `max_input_side` downscale done before the pyramid. All shapes are >= 12 on both sides.
    """
    h, w = fit_size(height, width, max_input_side)
    return [_scaled_size(h, w, s) for s in pyramid_scales(h, w, min_face_size, scale_factor)]


# --------------------------------------------------------------------------------------------------------
# Box arithmetic
# --------------------------------------------------------------------------------------------------------

def octaves(image: np.ndarray) -> list[np.ndarray]:
    """The image halved again and again (agent.vision.shrink.halve: every pixel the rounded mean of a 2x2
    block) down to P-Net's 12 px window: the sources the pyramid's levels are resized from
    (`MTCNN._pnet_candidates`)."""
    out: list[np.ndarray] = []
    current = image
    while min(current.shape[:2]) // 2 >= PNET_CELL:
        current = halve(current)
        out.append(current)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns the indices kept, best score first.

    `boxes` (N, 4) x1, y1, x2, y2 in inclusive pixel coordinates (area = (x2 - x1 + 1) * (y2 - y1 + 1), as in
    the reference). A box is dropped when its overlap with a kept, better box is above `threshold`; the
    overlap is intersection over union (mode "union") or over the smaller area (mode "min").
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[order].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    if len(order) <= _NMS_MATRIX_MAX:
        # all pairwise overlaps at once, then a cheap greedy pass (numpy call overhead dominates small inputs)
        w = np.maximum(0.0, np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1) + 1)
        h = np.maximum(0.0, np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1) + 1)
        inter = w * h
        base = np.minimum(area[:, None], area) if mode == "min" else area[:, None] + area - inter
        over = inter > threshold * base
        removed = np.zeros(len(order), dtype=bool)
        keep = []
        for i in range(len(order)):
            if not removed[i]:
                keep.append(i)
                removed |= over[i]
        return order[np.asarray(keep, dtype=np.int64)]
    keep, rest = [], np.arange(len(order))
    while rest.size > 0:
        i, rest = rest[0], rest[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        base = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        rest = rest[inter <= threshold * base]
    return order[np.asarray(keep, dtype=np.int64)]


def _rerec(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes (N, >=4) to squares around the same centre (reference `rerec`)."""
    boxes = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply R-Net/O-Net box regression (offsets relative to the inclusive box size)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += reg[:, 0] * w
    boxes[:, 1] += reg[:, 1] * h
    boxes[:, 2] += reg[:, 2] * w
    boxes[:, 3] += reg[:, 3] * h
    return boxes


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Detection:
    """One face: box in image pixels (x1, y1 inclusive top-left; x2, y2 exclusive, so x2 - x1 is the width),
    O-Net face score, and five landmarks (5, 2) as (x, y) in the order of `LANDMARK_NAMES` (left_eye is the
    eye on the image's left). Equality is identity (the landmarks are an array)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: {"box": {"left", "top", "right", "bottom"}, "score", "landmarks": [[x, y] x 5]}."""
        return {
            "box": {"left": round(float(self.x1), 1), "top": round(float(self.y1), 1),
                    "right": round(float(self.x2), 1), "bottom": round(float(self.y2), 1)},
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }


# --------------------------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------------------------

# A crop canvas larger than this many pixels is built at reduced resolution first (bounds memory for
# absurd candidate boxes far outside the frame; INTER_AREA in two steps is close to one step).
_MAX_CANVAS_PIXELS = 2_000_000


def _crop_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square crops of `image` (uint8 or float32 H, W, 3) for integer boxes in the reference's 1-based
    inclusive coordinates, zero padded where they leave the image, resized (INTER_AREA, in float32) to
    size x size. Only the crops are converted to float, not the whole frame. (Halving large crops in uint8
    first would save ~0.8 of the montage's ~28 CPU ms a frame, but its rounding moved one Hamilton box enough
    for an embedding to split Lin-Manuel's track: 12 fewer named face-frames.)

    Returns float32 (N, size, size, 3) in pixel units (not normalised).
    """
    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    for k, (bx1, by1, bx2, by2) in enumerate(boxes.astype(np.int64)[:, :4]):
        x0, y0 = bx1 - 1, by1 - 1  # 0-based top-left; the box covers x0 .. bx2 - 1
        w, h = bx2 - bx1 + 1, by2 - by1 + 1
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(bx2, width), min(by2, height)
        if ix0 == x0 and iy0 == y0 and ix1 == bx2 and iy1 == by2:
            crop = image[iy0:iy1, ix0:ix1].astype(np.float32)
        else:
            f = min(1.0, math.sqrt(_MAX_CANVAS_PIXELS / float(w * h)))
            crop = np.zeros((max(1, round(h * f)), max(1, round(w * f)), 3), dtype=np.float32)
            if ix1 > ix0 and iy1 > iy0:
                part = image[iy0:iy1, ix0:ix1].astype(np.float32)
                px0, py0 = round((ix0 - x0) * f), round((iy0 - y0) * f)
                pw = min(max(1, round((ix1 - ix0) * f)), crop.shape[1] - px0)
                ph = min(max(1, round((iy1 - iy0) * f)), crop.shape[0] - py0)
                if pw > 0 and ph > 0:
                    if f < 1.0 or (pw, ph) != (part.shape[1], part.shape[0]):
                        part = cv2.resize(part, (pw, ph), interpolation=cv2.INTER_AREA)
                    crop[py0:py0 + ph, px0:px0 + pw] = part
        out[k] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _to_batch(crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) pixels -> normalised float32 NCHW."""
    return np.ascontiguousarray(((crops - 127.5) * 0.0078125).transpose(0, 3, 1, 2), dtype=np.float32)


@dataclass
class DetectRequest:
    """One image for `MTCNN.detect_many`: a full detection (boxes None) or a refine around `boxes`."""

    rgb: np.ndarray
    boxes: np.ndarray | list | None = None  # x1, y1, x2, y2 (image pixels) to refine; None = full detection
    margin: float = 0.1  # refine: each box grown by this on every side
    min_score: float | None = None  # None: the detector's min_score
    min_face_size: int | None = None  # full detection: None = the detector's min_face_size


_DEFAULTS = DetectorSection()  # the config's defaults: a detector built without a config behaves as with it


class MTCNN:
    """The three-stage cascade over a backend (see `agent.vision.backends`).

    thresholds: face-score thresholds of P-Net (>=), R-Net and O-Net (>).
    nms_thresholds: [0] NMS (IoU) inside each pyramid scale; [1] over the merged P-Net candidates and after
    R-Net (IoU); [2] after O-Net (intersection over the smaller box).
    max_input_side: when > 0, frames whose long side is larger are downscaled first; boxes and landmarks are
    mapped back to the original frame.
    """

    def __init__(self, backend: Any, min_face_size: int = _DEFAULTS.min_face_size,
                 scale_factor: float = _DEFAULTS.scale_factor,
                 thresholds: tuple[float, float, float] | list[float] = tuple(_DEFAULTS.thresholds),
                 nms_thresholds: tuple[float, float, float] | list[float] = tuple(_DEFAULTS.nms_thresholds),
                 max_input_side: int = _DEFAULTS.max_input_side, min_score: float = _DEFAULTS.min_score,
                 pyramid_workers: int = _DEFAULTS.pyramid_workers, max_batch: int = _DEFAULTS.max_batch):
        # the values' ranges are checked once, by the config schema (agent.config.DetectorSection)
        thresholds = tuple(float(t) for t in thresholds)
        nms_thresholds = tuple(float(t) for t in nms_thresholds)
        self.backend = backend
        self.min_face_size = int(min_face_size)
        self.scale_factor = float(scale_factor)
        self.thresholds = thresholds
        self.nms_thresholds = nms_thresholds
        self.max_input_side = int(max_input_side)
        # R-Net/O-Net crops per backend call: bounds the memory of a call (the candidates of several cameras'
        # frames, or of a crowd, would otherwise make one huge batch; TensorRT engines are built for this size)
        self.max_batch = int(max_batch)
        # pyramid scales run on this many threads at once, when the backend allows concurrent calls (ONNX
        # Runtime; a GPU backend takes one call at a time); the results are merged in scale order, so the
        # faces found are the same as one scale after another
        self.pyramid_workers = int(pyramid_workers) if getattr(backend, "concurrent", False) else 1
        self._pool: ThreadPoolExecutor | None = None
        # faces scoring below this are not reported by detect()/refine() unless the caller lowers it: video
        # passes 0 so that a tracked face is followed down to the O-Net threshold
        self.min_score = float(min_score)
        # milliseconds spent in each stage by the last detect() (pre/post-processing included)
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_config(cls, detector_section: DetectorSection, backend: Any) -> MTCNN:
        """Build from the [detector] section of the config (agent.config.DetectorSection)."""
        s = detector_section
        return cls(backend, min_face_size=s.min_face_size, scale_factor=s.scale_factor,
                   thresholds=tuple(s.thresholds), nms_thresholds=tuple(s.nms_thresholds),
                   max_input_side=s.max_input_side, min_score=s.min_score, pyramid_workers=s.pyramid_workers,
                   max_batch=s.max_batch)

    def __repr__(self) -> str:
        return (f"MTCNN(backend={getattr(self.backend, 'name', self.backend)!r}, "
                f"min_face_size={self.min_face_size}, scale_factor={self.scale_factor}, "
                f"thresholds={self.thresholds}, nms_thresholds={self.nms_thresholds}, "
                f"max_input_side={self.max_input_side})")

    # ---- public -----------------------------------------------------------------------------------------

    def _prepare(self, rgb: np.ndarray, caller: str) -> tuple[np.ndarray, int, int, int, int]:
        """Check the image and downscale it to max_input_side: (image, height, width, small_h, small_w)."""
        if not isinstance(rgb, np.ndarray):
            raise ValueError(f"{caller}() needs a numpy array, got {type(rgb).__name__}")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"{caller}() needs an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        if height < 1 or width < 1:
            raise ValueError(f"{caller}() got an empty image {rgb.shape}")
        small_h, small_w = fit_size(height, width, self.max_input_side)
        image = rgb
        if (small_h, small_w) != (height, width):
            image = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image), height, width, small_h, small_w

    def detect(self, rgb: np.ndarray, min_score: float | None = None) -> list[Detection]:
        """Faces in an (H, W, 3) uint8 RGB image, best score first; boxes clipped to the image.

        Only faces scoring at least `min_score` (default: the detector's `min_score`) are returned."""
        return self.detect_many([DetectRequest(rgb, min_score=min_score)])[0]

    def refine(self, rgb: np.ndarray, boxes: np.ndarray | list, margin: float = 0.1,
               min_score: float | None = None) -> list[Detection]:
        """Faces near the given boxes only: R-Net and O-Net on them, no P-Net pyramid.

        For video: between full detections the tracker's predicted boxes (x1, y1, x2, y2, image pixels)
        are re-detected here at a fraction of the cost; each box is grown by `margin` on every side and
        squared, R-Net and O-Net regress it onto the face (or reject it when the face is gone).
        """
        return self.detect_many([DetectRequest(rgb, boxes=boxes, margin=margin, min_score=min_score)])[0]

    def detect_many(self, requests: list[DetectRequest]) -> list[list[Detection]]:
        """`detect` or `refine` on several images (one per camera) at once: the P-Net pyramid runs per image,
        R-Net and O-Net each run once on the candidates of all images together (one batch per stage instead
        of one per image). The faces of each image are what `detect`/`refine` would find on it alone."""
        t0 = time.perf_counter()
        pnet_seconds = 0.0
        prepared, candidates = [], []
        for request in requests:
            image, height, width, small_h, small_w = self._prepare(
                request.rgb, "detect" if request.boxes is None else "refine")
            prepared.append((image, (height, width, small_h, small_w)))
            if request.boxes is None:
                start = time.perf_counter()
                candidates.append(self._stage1(image, request.min_face_size))
                pnet_seconds += time.perf_counter() - start
            else:
                candidates.append(self._box_candidates(request.boxes, request.margin, height, width,
                                                       small_h, small_w))
        t1 = time.perf_counter()
        images = [image for image, _ in prepared]
        candidates = self._stage2(images, candidates)
        t2 = time.perf_counter()
        finished = self._stage3(images, candidates)
        t3 = time.perf_counter()
        results = [self._finish(boxes, points, *sizes, self.min_score if r.min_score is None else r.min_score)
                   for (boxes, points), (_, sizes), r in zip(finished, prepared, requests)]
        self.last_timings = {"pnet": pnet_seconds * 1e3, "rnet": (t2 - t1) * 1e3, "onet": (t3 - t2) * 1e3,
                             "total": (time.perf_counter() - t0) * 1e3}
        log.debug("%d face(s) in %d image(s) in %.1f ms", sum(map(len, results)), len(requests),
                  self.last_timings["total"])
        return results

    @staticmethod
    def _box_candidates(boxes: np.ndarray | list, margin: float, height: int, width: int, small_h: int,
                        small_w: int) -> np.ndarray:
        """Given boxes (x1, y1, x2, y2, image pixels), grown by `margin` and squared, as R-Net candidates."""
        given = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(given) == 0:
            return np.empty((0, 5))
        scale = np.array([small_w / width, small_h / height] * 2)
        b = given * scale
        grow = (b[:, 2:4] - b[:, 0:2]) * margin
        b[:, 0:2] -= grow
        b[:, 2:4] += grow
        # 0-based [x1, x2) -> the reference's 1-based inclusive boxes
        cand = _rerec(np.column_stack([b[:, 0] + 1, b[:, 1] + 1, b[:, 2], b[:, 3], np.ones(len(b))]))
        cand[:, :4] = np.fix(cand[:, :4])
        return cand[(cand[:, 2] - cand[:, 0] >= PNET_CELL - 1) & (cand[:, 3] - cand[:, 1] >= PNET_CELL - 1)]

    # ---- stages -----------------------------------------------------------------------------------------

    def _pnet_candidates(self, image: np.ndarray, scale: float,
                         octaves: list[np.ndarray] | None = None) -> np.ndarray | None:
        """P-Net on one pyramid level -> its candidates after NMS (N, 9): box, score, regression; None if none.

        The level is made as the reference makes it, the uint8 frame resized (INTER_AREA) then normalised,
        except that it is resized from the smallest of the frame's `octaves` (halvings, see `octaves`) that is
        at least as large: OpenCV's INTER_AREA at a non-integer factor reads every source pixel (~3 ms a level
        from 720p, whatever the level's size: most of a full detection's time), halving is ~15x cheaper, and
        the levels differ from the reference's by rounding (same faces: bench/bench_video.py).
        (Resizing the normalised frame in float32 would be ~1 ms faster per full detection, but its unrounded
        pixels move a box now and then: 2 fewer named face-frames on the Hamilton clip.)"""
        sh, sw = _scaled_size(image.shape[0], image.shape[1], scale)
        source = next((o for o in reversed(octaves or []) if o.shape[0] >= sh and o.shape[1] >= sw), image)
        scaled = cv2.resize(source, (sw, sh), interpolation=cv2.INTER_AREA)
        batch = ((scaled.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)[None]
        prob, reg = self.backend.run("pnet", np.ascontiguousarray(batch))
        score_map = prob[0, 1]
        rows, cols = np.nonzero(score_map >= self.thresholds[0])
        if rows.size == 0:
            return None
        x1 = np.fix((PNET_STRIDE * cols + 1) / scale)
        y1 = np.fix((PNET_STRIDE * rows + 1) / scale)
        x2 = np.fix((PNET_STRIDE * cols + PNET_CELL) / scale)
        y2 = np.fix((PNET_STRIDE * rows + PNET_CELL) / scale)
        cand = np.column_stack([x1, y1, x2, y2, score_map[rows, cols], reg[0][:, rows, cols].T])
        keep = nms(cand[:, :4], cand[:, 4], self.nms_thresholds[0], "union")
        return cand[keep]

    def _run_levels(self, image: np.ndarray, min_face_size: int | None = None) -> list[np.ndarray | None]:
        """`_pnet_candidates` of every pyramid scale (resize included), largest scale first; on
        `pyramid_workers` threads when > 1.

        Scales are dealt to the workers largest first, each to the least loaded one (by pixels), so that the
        workers finish together: with two workers the largest scale (about half the work) runs beside all
        the others. The results are in scale order whatever the threads, so the faces are the same."""
        height, width = image.shape[:2]
        scales = pyramid_scales(height, width, min_face_size or self.min_face_size, self.scale_factor)
        halves = octaves(image) if scales else []
        if self.pyramid_workers == 1 or len(scales) < 2:
            return [self._pnet_candidates(image, scale, halves) for scale in scales]
        workers = min(self.pyramid_workers, len(scales))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.pyramid_workers - 1, thread_name_prefix="pnet")
        pixels = [math.prod(_scaled_size(height, width, scale)) for scale in scales]
        groups: list[list[int]] = [[] for _ in range(workers)]
        load = [0] * workers
        for k in sorted(range(len(scales)), key=lambda k: -pixels[k]):
            w = load.index(min(load))
            groups[w].append(k)
            load[w] += pixels[k]

        def run_group(indices: list[int]) -> list[tuple[int, np.ndarray | None]]:
            return [(k, self._pnet_candidates(image, scales[k], halves)) for k in indices]

        futures = [self._pool.submit(run_group, g) for g in groups[1:]]
        done = run_group(groups[0])  # the calling thread is one of the workers
        for future in futures:
            done += future.result()
        results: list[np.ndarray | None] = [None] * len(scales)
        for k, cand in done:
            results[k] = cand
        return results

    def close(self) -> None:
        """Stop the pyramid threads (the detector still works afterwards: they are made again when needed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _stage1(self, image: np.ndarray, min_face_size: int | None = None) -> np.ndarray:
        """P-Net over the pyramid -> square candidate boxes (N, 5): integer x1, y1, x2, y2 (1-based), score."""
        found = [cand for cand in self._run_levels(image, min_face_size) if cand is not None]
        if not found:
            return np.empty((0, 5))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], self.nms_thresholds[1], "union")]
        w = cand[:, 2] - cand[:, 0]
        h = cand[:, 3] - cand[:, 1]
        boxes = np.column_stack([cand[:, 0] + cand[:, 5] * w, cand[:, 1] + cand[:, 6] * h,
                                 cand[:, 2] + cand[:, 7] * w, cand[:, 3] + cand[:, 8] * h, cand[:, 4]])
        boxes = _rerec(boxes)
        boxes[:, :4] = np.fix(boxes[:, :4])
        return boxes[(boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])]

    def _run_batched(self, network: str, images: list[np.ndarray], boxes: list[np.ndarray],
                     size: int) -> list[tuple[np.ndarray, ...]]:
        """One `network` call on the crops of every image's boxes: its outputs, split back per image."""
        counts = [len(b) for b in boxes]
        if not sum(counts):
            return [()] * len(boxes)
        crops = np.concatenate([_crop_resize(image, b, size) for image, b in zip(images, boxes) if len(b)])
        chunks = [self.backend.run(network, _to_batch(crops[k:k + self.max_batch]))
                  for k in range(0, len(crops), self.max_batch)]
        outputs = [np.concatenate(parts) for parts in zip(*chunks)] if len(chunks) > 1 else chunks[0]
        ends = np.cumsum(counts)
        return [tuple(out[end - n:end] for out in outputs) for n, end in zip(counts, ends)]

    def _stage2(self, images: list[np.ndarray], candidates: list[np.ndarray]) -> list[np.ndarray]:
        """R-Net on all candidates of all images in one batch -> refined square boxes (N, 5) per image, float."""
        refined = []
        for boxes, outputs in zip(candidates, self._run_batched("rnet", images, candidates, 24)):
            if not len(boxes):
                refined.append(boxes)
                continue
            prob, reg = outputs
            score = prob[:, 1]
            ok = score > self.thresholds[1]
            boxes = np.column_stack([boxes[ok, :4], score[ok]])
            reg = reg[ok]
            if len(boxes) == 0:
                refined.append(boxes)
                continue
            keep = nms(boxes[:, :4], boxes[:, 4], self.nms_thresholds[1], "union")
            refined.append(_rerec(_bbreg(boxes[keep], reg[keep])))
        return refined

    def _stage3(self, images: list[np.ndarray],
                candidates: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """O-Net on all candidates of all images in one batch -> final boxes (N, 5) and landmarks (N, 5, 2)
        per image."""
        inputs = []
        for boxes in candidates:
            boxes = boxes.copy()
            if len(boxes):
                boxes[:, :4] = np.fix(boxes[:, :4])
                boxes = boxes[(boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])]
            inputs.append(boxes)
        finished = []
        for boxes, outputs in zip(inputs, self._run_batched("onet", images, inputs, 48)):
            if not len(boxes):
                finished.append((np.empty((0, 5)), np.empty((0, 5, 2))))
                continue
            prob, reg, marks = outputs
            score = prob[:, 1]
            ok = score > self.thresholds[2]
            boxes = np.column_stack([boxes[ok, :4], score[ok]])
            reg, marks = reg[ok], marks[ok].astype(np.float64)
            if len(boxes) == 0:
                finished.append((boxes, np.empty((0, 5, 2))))
                continue
            w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
            h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
            # landmarks relative to the box; "- 1" turns the reference's 1-based box corner into 0-based pixels
            xs = w * marks[:, 0:5] + boxes[:, 0:1] - 1
            ys = h * marks[:, 5:10] + boxes[:, 1:2] - 1
            points = np.stack([xs, ys], axis=2)
            boxes = _bbreg(boxes, reg)
            keep = nms(boxes[:, :4], boxes[:, 4], self.nms_thresholds[2], "min")
            finished.append((boxes[keep], points[keep]))
        return finished

    @staticmethod
    def _finish(boxes: np.ndarray, points: np.ndarray, height: int, width: int, small_h: int,
                small_w: int, min_score: float = 0.0) -> list[Detection]:
        """1-based inclusive boxes of the (maybe downscaled) image -> clipped Detections in the original,
        those scoring at least `min_score`."""
        if len(boxes) == 0:
            return []
        fx, fy = width / small_w, height / small_h
        # reference box [x1, x2] (1-based, inclusive) covers 0-based pixels x1 - 1 .. x2 - 1: [x1 - 1, x2)
        left = np.clip((boxes[:, 0] - 1) * fx, 0, width)
        top = np.clip((boxes[:, 1] - 1) * fy, 0, height)
        right = np.clip(boxes[:, 2] * fx, 0, width)
        bottom = np.clip(boxes[:, 3] * fy, 0, height)
        # landmarks are pixel positions (centres at integers): scale about the pixel centres
        points = (points + 0.5) * np.array([fx, fy]) - 0.5
        detections = [
            Detection(float(left[i]), float(top[i]), float(right[i]), float(bottom[i]), float(boxes[i, 4]),
                      points[i].astype(np.float32))
            for i in np.argsort(-boxes[:, 4], kind="stable")
            if right[i] > left[i] and bottom[i] > top[i] and boxes[i, 4] >= min_score
        ]
        return detections
