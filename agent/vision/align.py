"""Alignment exactly as dlib intends: 5-point landmarks inside the detector box, then a 150x150 chip.

dlib's ResNet was trained on chips made by `get_face_chip(img, shape, size=150, padding=0.25)` from its
5-point shape predictor, so we run that predictor inside each MTCNN box (MTCNN's own landmarks are a
different definition) and cut the chips with dlib.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from agent.vision.embed import CHIP_SIZE, ModelFileError, dlib_model_path

log = logging.getLogger(__name__)

PADDING = 0.25
IN_FRAME_GRID = 16  # points per side sampled to measure how much of a chip lies inside the image


class Aligner:
    """dlib's 5-point shape predictor plus get_face_chips."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        path = dlib_model_path("shape_predictor_5_face_landmarks.dat")
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise ModelFileError(f"{path}: cannot load shape predictor ({exc})") from None

    def shapes(self, rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> list:
        """dlib full_object_detections for (x1, y1, x2, y2) boxes."""
        dlib = self._dlib
        out = []
        for x1, y1, x2, y2 in boxes:
            rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
            out.append(self._predictor(rgb, rect))
        return out

    def chips(self, rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips, one per box."""
        return self.chips_in_frame(rgb, boxes)[0]

    def in_frame(self, rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """The share (0..1) of each box's chip that lies inside the image (see chips_in_frame)."""
        return self.chips_in_frame(rgb, boxes, cut=False)[1]

    def chips_in_frame(self, rgb: np.ndarray, boxes: Sequence[Sequence[float]],
                       cut: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(N, 150, 150, 3) uint8 RGB chips (empty when not `cut`) and the share (0..1) of each chip that lies
        inside the image, from one run of the shape predictor. A face cut off by the frame's edge gets a chip
        partly black and an embedding that drifts from the person's (bench/calibrate_cut_off.py: LFW photos
        cut at the side, 90% of the embeddings within 0.14 of the uncut one at 0.95 inside, 0.31 at 0.9).

        The share comes from the chip's placement as dlib cuts it (its rectangle rotated by its angle about
        the centre, dlib's get_mapping_to_chip), sampled on a 16x16 grid: within 0.03 of the share of
        non-black pixels in the chip of a white image."""
        no_chips = np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
        if len(boxes) == 0:
            return no_chips, np.zeros(0)
        rgb = np.ascontiguousarray(rgb)
        dets = self._dlib.full_object_detections()
        dets.extend(self.shapes(rgb, boxes))
        chips = no_chips
        if cut:
            cuts = self._dlib.get_face_chips(rgb, dets, size=CHIP_SIZE, padding=PADDING)
            chips = np.stack([np.asarray(c, dtype=np.uint8) for c in cuts])
        height, width = rgb.shape[:2]
        grid = (np.arange(IN_FRAME_GRID) + 0.5) / IN_FRAME_GRID - 0.5
        shares = []
        for details in self._dlib.get_face_chip_details(dets, size=CHIP_SIZE, padding=PADDING):
            r = details.rect
            u, v = np.meshgrid(grid * (r.right() - r.left()), grid * (r.bottom() - r.top()))
            cos, sin = np.cos(details.angle), np.sin(details.angle)
            x = (r.left() + r.right()) / 2 + cos * u - sin * v
            y = (r.top() + r.bottom()) / 2 + sin * u + cos * v
            shares.append(float(((x >= 0) & (x < width) & (y >= 0) & (y < height)).mean()))
        return chips, np.asarray(shares)

    def landmarks(self, rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """The dlib 5 points (x, y) per box, as (5, 2) float arrays."""
        return [np.array([(p.x, p.y) for p in s.parts()], dtype=np.float32) for s in self.shapes(rgb, boxes)]
