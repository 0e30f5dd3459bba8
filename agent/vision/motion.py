"""Motion gate: skip the full detector on a camera where nobody is tracked and nothing moved.

Most of the time a door or garden camera shows an empty scene, and the full detector (the P-Net pyramid)
is most of the agent's work on it. Where the camera has no live track, a full detection that is due (at least
`[tracker] detect_every` frames after the last one) runs only if some part of the picture changed since the
last full detection that ran: a face that was not there then cannot be there now without changing the pixels
where it is. The comparison is with that frame, not with the frame before, so a person walking in slowly adds
up to a change too. The check is cheap (0.4 ms a 640x360 frame, 1.7 ms at 1080p), so it is made on every
frame while the detection is due: the detector runs on the first frame that moved, not at the next multiple
of `detect_every`, and a person appearing in an empty scene is found at once.

The frame is shrunk `SHRINK` times (area average, grey), and the mean absolute change of its pixels is taken
per cell of `CELL` x `CELL` frame pixels. A face of 20 px (the detector's smallest) always covers a whole cell,
while sensor noise averages out over the cell's pixels. The frame counts as moved when any cell changed by more
than `[tracker] motion_threshold` grey levels; every `[tracker] motion_recheck_every` frames the detector runs
anyway (a change the gate cannot see, such as a face that the last detection missed and that stays still).

One `MotionGate` per camera; it only answers, the pipeline decides.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agent.vision.shrink import shrink

SHRINK = 4  # the frame is compared at 1/4 of its size (area average): noise and compression artefacts average out
CELL = 8  # px of the frame: the change is averaged over cells this large (a 20 px face covers at least one)


def motion_picture(image: np.ndarray) -> np.ndarray:
    """The frame shrunk SHRINK times (area average) as grey float32, the picture the gate compares."""
    h, w = image.shape[:2]
    small = shrink(image, (max(1, w // SHRINK), max(1, h // SHRINK)))
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return small.astype(np.float32)


def largest_change(before: np.ndarray, after: np.ndarray) -> float:
    """The largest mean absolute grey change of a CELL x CELL cell between two motion pictures."""
    diff = cv2.absdiff(before, after)
    side = CELL // SHRINK
    h, w = diff.shape
    cells = cv2.resize(diff, (max(1, w // side), max(1, h // side)), interpolation=cv2.INTER_AREA)
    return float(cells.max())


class MotionGate:
    """Is this frame worth a full detection? See the module docstring. `threshold` 0 turns the gate off."""

    def __init__(self, threshold: float, recheck_every: int) -> None:
        self.threshold = threshold
        self.recheck_every = recheck_every
        self._reference: np.ndarray | None = None  # the motion picture of the last frame that was detected
        self._reference_frame: int | None = None  # its frame number
        self.skipped = 0  # frames on which a due full detection was skipped

    def since_detection(self, frame: int) -> float:
        """Frames since the last full detection (inf before the first)."""
        return math.inf if self._reference_frame is None else frame - self._reference_frame

    def still(self, image: np.ndarray, frame: int) -> bool:
        """True when the due full detection of `image` (frame number `frame`) can be skipped: nothing changed
        by more than the threshold since the last detected frame, and the recheck is not due. False makes
        `image` the new reference (the caller detects it)."""
        if self.threshold <= 0:
            self._reference_frame = frame
            return False
        picture = motion_picture(image)
        reference = self._reference
        if (reference is not None and reference.shape == picture.shape
                and self.since_detection(frame) < self.recheck_every
                and largest_change(reference, picture) <= self.threshold):
            self.skipped += 1
            return True
        self.detected(image, frame, picture)
        return False

    def detected(self, image: np.ndarray, frame: int, picture: np.ndarray | None = None) -> None:
        """A full detection ran on `image` (for any reason): changes are measured from it from now on."""
        self._reference_frame = frame
        if self.threshold > 0:
            self._reference = motion_picture(image) if picture is None else picture
