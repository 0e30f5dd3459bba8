"""What a processed frame shows: one record per frame, written as JSON Lines (`--frames-out`) and drawn
on the picture (`--show`), so the two always agree.

A record (schema: agent/schemas/frame.schema.json, docs/events.md) lists every confirmed track drawn on the
frame: its box, what may be shown about it (`Track.shown_status` / `shown_name`: a face that is not verified
to be the track's person shows no name), the certainty of that outcome, and whether the box is only the
motion prediction (`coasting`). Tracks coasting for more than `[tracker] show_coasting` frames are not drawn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import camera_slug
from agent.files import output_file_problem

log = logging.getLogger(__name__)

LIVE_FRAME = "live.jpg"  # in [paths] storage: the latest annotated frame ([service] live_frame_interval)
LIVE_PREFIX = "live-"  # several cameras: live-<camera slug>.jpg each
COLOURS = {"named": (0, 200, 0), "unknown": (0, 160, 255), "pending": (200, 200, 200)}  # BGR


class OutputError(ValueError):
    """An output path (--frames-out, --show) that cannot be written; the message names it and says why."""


def check_frames_out(path: str | Path) -> None:
    """Raise OutputError unless `path` can take the --frames-out lines (checked before the run starts)."""
    problem = output_file_problem(path)
    if problem:
        raise OutputError(f"--frames-out {path} {problem}")


def check_show(path: str | Path) -> None:
    """Raise OutputError unless --show can write `path`: a picture format OpenCV writes or a video
    (AnnotatedWriter.VIDEO), in a folder that exists and is writable."""
    import cv2

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AnnotatedWriter.VIDEO and (not suffix or not cv2.haveImageWriter(str(path))):
        raise OutputError(f"--show {path}: {suffix or 'no suffix'} is not a picture or video format that can be "
                          f"written; use .jpg or .png (the latest frame) or {', '.join(AnnotatedWriter.VIDEO)} "
                          "(a video)")
    problem = output_file_problem(path)
    if problem:
        raise OutputError(f"--show {path} {problem}")


def live_frame_name(camera: str | None) -> str:
    """The live frame's file name in [paths] storage: live.jpg (one camera) or live-<camera slug>.jpg."""
    return LIVE_FRAME if camera is None else f"{LIVE_PREFIX}{camera_slug(camera)}.jpg"


def frame_record(index: int, time: float, tracks: Iterable[Any], show_coasting: int,
                 camera: str | None = None) -> dict[str, Any]:
    """The record of one frame of `camera`: `tracks` are the tracker's confirmed live tracks
    (agent.vision.tracker.Track)."""
    faces = []
    for track in tracks:
        if track.missed > show_coasting:
            continue
        status = track.shown_status
        left, top, right, bottom = (int(round(float(v))) for v in track.box)
        faces.append({"track_id": int(track.id),
                      "box": {"left": left, "top": top, "right": right, "bottom": bottom},
                      "status": status, "name": track.shown_name,
                      "confidence": None if status == "pending" else round(float(track.confidence), 4),
                      "coasting": bool(track.missed > 0)})
    record = {"frame": int(index), "time": round(float(time), 3), "faces": faces}
    return {"camera": camera, **record} if camera is not None else record


LABELS = {"unknown": "unknown", "pending": "identifying..."}  # plain words for a track's status on the picture


def draw(rgb: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """A BGR copy of the frame with the record's faces drawn (coasting boxes thin); each label on a dark band,
    its size following the frame's width (readable on a phone, where a 1280 px frame is shown 390 px wide)."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    scale = max(0.6, img.shape[1] / 640 * 0.7)
    thickness = max(1, int(round(scale * 1.5)))
    for face in record["faces"]:
        b = face["box"]
        colour = COLOURS[face["status"]]
        label = face["name"] or LABELS.get(face["status"], face["status"])
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x, y = max(0, b["left"]), max(h + base + 2, b["top"] - 2)
        cv2.rectangle(img, (x, y - h - base - 2), (x + w + 4, y + 2), (20, 20, 20), -1)
        cv2.putText(img, label, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
        # the box last: its edges stay whole where the label's band meets them
        cv2.rectangle(img, (b["left"], b["top"]), (b["right"], b["bottom"]), colour, 1 if face["coasting"] else 2)
    return img


class FramesWriter:
    """`--frames-out PATH`: one JSON line per processed frame, flushed line by line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class AnnotatedWriter:
    """`--show PATH`: annotated frames to a picture (.jpg/.png, overwritten each frame) or a video
    (.mp4/.avi/.mkv at the source's frame rate)."""

    VIDEO = (".mp4", ".avi", ".mkv")

    def __init__(self, path: str | Path, fps: float | None) -> None:
        self.path = Path(path)
        self.fps = fps or 15.0
        self._video: Any = None

    def write(self, rgb: np.ndarray, record: dict[str, Any]) -> None:
        import cv2

        img = draw(rgb, record)
        suffix = self.path.suffix.lower()
        if suffix in self.VIDEO:
            if self._video is None:
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if suffix == ".mp4" else "MJPG"))
                self._video = cv2.VideoWriter(str(self.path), fourcc, self.fps, (img.shape[1], img.shape[0]))
                if not self._video.isOpened():
                    self._video = None
                    raise OSError(f"{self.path}: cannot write a {suffix} video here (no encoder, or the folder "
                                  "is gone)")
            self._video.write(img)
        else:
            tmp = self.path.with_name(f".{self.path.name}.tmp{self.path.suffix}")
            if not cv2.imwrite(str(tmp), img):
                raise OSError(f"{tmp}: cannot write the picture")
            tmp.replace(self.path)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
