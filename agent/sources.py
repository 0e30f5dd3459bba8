"""Video sources: cameras, Jetson CSI, GStreamer, RTSP/HTTP streams, video files and folders of images.

`open_source(section)` turns the `[source]` section into a `Source`. Capture runs in its own thread and
hands out `Frame`s: (H, W, 3) uint8 RGB images with a frame index and a timestamp.

Two delivery modes:
- latest frame (`every_frame=False`, the default for live sources): a one-slot box always holding the newest
  frame; a frame the consumer did not take in time is replaced and counted as dropped, so a slow consumer
  never builds up lag. Files and folders read this way are paced at their nominal frame rate, like a camera.
- every frame (`every_frame=True`, the default for files and folders): frames in order, none dropped; the
  capture thread waits for the consumer (backpressure). The stream ends with `read()` returning None.

A source that fails mid-run (RTSP hiccup, unplugged camera, unreadable file, vanished folder) is reopened with
exponential backoff capped at `reconnect_max_delay`: a warning on loss, an info line on recovery. Files and
folders continue where they stopped. A file or folder that cannot be used at all is a `SourceError` from
`start()`; a live source that is not there yet at start is retried in the background (see `connected`).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.vision.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, is_image_path, load_image

log = logging.getLogger(__name__)

FIRST_RETRY_DELAY = 0.5  # seconds before the first reopen attempt; doubles up to reconnect_max_delay
EVERY_FRAME_BUFFER = 2  # frames decoded ahead of the consumer in every-frame mode
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(RuntimeError):
    """A source that cannot be used at all; the message says which one and why."""


class _OpenError(Exception):
    """Opening failed this time (the source may come back)."""


class _EndOfStreamError(Exception):
    """No more frames (end of a file or folder)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    `image` (H, W, 3) uint8 RGB. `index`: frame number - the position in the file for video files, else a
    running count of captured frames from 0 (gaps mean dropped frames). `timestamp`: seconds since the epoch -
    the capture time for live sources; for files and folders the start time of the source plus the frame's
    position in the video (index / fps), so durations are in video time however fast frames are processed.
    `media_time`: seconds into the file (index / fps) for files and folders, None for live sources.
    """

    image: np.ndarray
    index: int
    timestamp: float
    media_time: float | None = None


# ------------------------------------------------------------------------------------------------------------
# URI parsing and the CSI pipeline
# ------------------------------------------------------------------------------------------------------------

def csi_pipeline(sensor_id: int, width: int, height: int, fps: int) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc), ending in a BGR appsink for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
            "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=1 max-buffers=1")


def parse_uri(uri: str, base_dir: Path | None = None) -> tuple[str, Any]:
    """(kind, target) of a source URI: ("camera", index), ("v4l2", "/dev/videoN"), ("csi", sensor id),
    ("gst", pipeline), ("stream", url), ("folder", Path) or ("file", Path). Raises SourceError if unusable."""
    text = uri.strip()
    if not text:
        raise SourceError("source.uri is empty: give a camera index, /dev/videoN, csi://0, a URL, a file or a folder")
    if text.isdigit():
        return "camera", int(text)
    if text.startswith("/dev/video"):
        return "v4l2", text
    if text.lower().startswith("csi://"):
        rest = text[len("csi://"):] or "0"
        if not rest.isdigit():
            raise SourceError(f"source.uri {uri!r}: the CSI sensor id must be a number, as in csi://0")
        return "csi", int(rest)
    if text.startswith("gst:"):
        pipeline = text[len("gst:"):].strip()
        if not pipeline:
            raise SourceError(f"source.uri {uri!r}: an empty GStreamer pipeline")
        return "gst", pipeline
    if text.lower().startswith(STREAM_PREFIXES):
        return "stream", text
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise SourceError(f"source.uri {uri!r}: unsupported scheme (use rtsp://, http(s)://, csi:// or gst:)")
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        return "folder", path
    if path.exists():
        if is_image_path(path):
            raise SourceError(f"source {path}: an image, not a video; put images in a folder and give the folder")
        return "file", path
    raise SourceError(f"source {path}: no such file or folder")


def _gstreamer_available() -> bool:
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or grey / BGRA) frame as contiguous RGB."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


# ------------------------------------------------------------------------------------------------------------
# Readers: open / read / close one kind of source, in the capture thread
# ------------------------------------------------------------------------------------------------------------

class _CaptureReader:
    """A live cv2.VideoCapture source: camera, V4L2 device, CSI/GStreamer pipeline or network stream."""

    bgr = True  # OpenCV's channel order

    def __init__(self, kind: str, target: Any, section: Any):
        self.kind, self.target, self.section = kind, target, section
        self.cap: cv2.VideoCapture | None = None
        self.fps = float(section.fps)
        self.index = -1  # index of the last frame read; continues across reopens

    def describe(self) -> str:
        return f"{self.kind} {self.target}" if self.kind != "gst" else "GStreamer pipeline"

    def open(self) -> None:
        s = self.section
        timeout_ms = int(s.timeout * 1000)
        if self.kind in ("camera", "v4l2"):
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        elif self.kind in ("csi", "gst"):
            pipeline = csi_pipeline(self.target, s.width, s.height, s.fps) if self.kind == "csi" else self.target
            cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        else:
            is_rtsp = self.target.lower().startswith(("rtsp://", "rtsps://"))
            if is_rtsp and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:  # the user's own options win
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{s.rtsp_transport}"
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise _OpenError(f"cannot open {self.describe()}")
        if self.kind in ("camera", "v4l2"):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
            cap.set(cv2.CAP_PROP_FPS, s.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short: old frames are lag
        fps = cap.get(cv2.CAP_PROP_FPS)
        if math.isfinite(fps) and 0 < fps < 1000:
            self.fps = float(fps)
        self.cap = cap

    def read(self) -> np.ndarray | None:
        assert self.cap is not None
        ok, image = self.cap.read()
        if not ok or image is None or image.size == 0:
            return None
        self.index += 1
        return image

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _FileReader:
    """A video file; after a failure it is reopened at the frame where it stopped."""

    bgr = True

    def __init__(self, path: Path, section: Any):
        self.path = path
        self.cap: cv2.VideoCapture | None = None
        self.fps = float(section.fps)
        self.frame_count = 0
        self.next_index = 0  # frame number of the next frame to read
        self.index = -1
        self._fresh = False  # opened, no frame read since
        self._pending: np.ndarray | None = None  # first frame, read at open to check the file is a video

    def describe(self) -> str:
        return f"video file {self.path}"

    def open(self) -> None:
        if not self.path.is_file():
            raise _OpenError(f"{self.path}: no such file" if not self.path.exists() else f"{self.path}: not a file")
        if not os.access(self.path, os.R_OK):
            raise _OpenError(f"{self.path}: permission denied")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise _OpenError(f"{self.path}: not a video OpenCV can read")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if math.isfinite(fps) and 0 < fps < 1000:
            self.fps = float(fps)
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and count > 0 else 0
        if self.next_index == 0:
            ok, image = cap.read()
            if not ok or image is None:
                cap.release()
                raise _OpenError(f"{self.path}: no frame could be decoded (not a video, or an empty one)")
            self._pending = image
        else:
            cap.set(cv2.CAP_PROP_POS_FRAMES, self.next_index)
        self.cap = cap
        self._fresh = True

    def read(self) -> np.ndarray | None:
        assert self.cap is not None
        if self._pending is not None:
            image, self._pending = self._pending, None
            ok = True
        else:
            ok, image = self.cap.read()
        if ok and image is not None:
            self._fresh = False
            self.index = self.next_index
            self.next_index += 1
            return image
        if self.frame_count and self.next_index >= self.frame_count:
            raise _EndOfStreamError
        if self._fresh:
            # reopened fine, yet no frame here: the file is shorter than its header said
            log.info("%s: no frame at %d after reopening (header said %d frames): end of the file",
                     self.path, self.next_index, self.frame_count)
            raise _EndOfStreamError
        return None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _FolderReader:
    """A folder of images in natural name order; after a failure it continues after the last image read."""

    bgr = False  # load_image gives RGB already

    def __init__(self, path: Path, section: Any, max_pixels: int, max_bytes: int):
        self.path = path
        self.fps = float(section.fps)
        self.max_pixels, self.max_bytes = max_pixels, max_bytes
        self.remaining: collections.deque[str] = collections.deque()
        self.last_name: str | None = None
        self.index = -1
        self.skipped = 0  # unreadable images

    def describe(self) -> str:
        return f"image folder {self.path}"

    def open(self) -> None:
        try:
            names = [p.name for p in self.path.iterdir() if p.is_file() and is_image_path(p)]
        except FileNotFoundError:
            raise _OpenError(f"{self.path}: no such folder") from None
        except NotADirectoryError:
            raise _OpenError(f"{self.path}: not a folder") from None
        except OSError as exc:
            raise _OpenError(f"{self.path}: cannot list ({exc.strerror or exc})") from None
        names.sort(key=_natural_key)
        if self.last_name is None and not names:
            raise _OpenError(f"{self.path}: no images in this folder")
        if self.last_name is not None:
            last = _natural_key(self.last_name)
            names = [n for n in names if _natural_key(n) > last]
        self.remaining = collections.deque(names)

    def read(self) -> np.ndarray | None:
        while self.remaining:
            name = self.remaining[0]
            try:
                image = load_image(self.path / name, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
            except ImageError as exc:
                if not self.path.is_dir():
                    return None  # the folder itself went away: reopen later, this image first
                self.remaining.popleft()
                self.last_name = name
                self.skipped += 1
                log.warning("skipping %s", exc)
                continue
            self.remaining.popleft()
            self.last_name = name
            self.index += 1
            return image
        raise _EndOfStreamError

    def close(self) -> None:
        self.remaining.clear()


# ------------------------------------------------------------------------------------------------------------
# The source: capture thread, delivery box, reconnects
# ------------------------------------------------------------------------------------------------------------

class Source:
    """A started source hands out frames with `read()`; see the module docstring. Use `open_source()`."""

    def __init__(self, reader: Any, *, live: bool, every_frame: bool, reconnect_max_delay: float, name: str):
        self._reader = reader
        self.name = name
        self.is_live = live
        self.every_frame = every_frame
        self._max_delay = max(FIRST_RETRY_DELAY, float(reconnect_max_delay))
        self._capacity = EVERY_FRAME_BUFFER if every_frame else 1
        self._box: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._connected = False
        self._t0_wall = 0.0
        self._t0_mono = 0.0
        self.frames_read = 0  # frames captured
        self.frames_delivered = 0  # frames handed out by read()
        self.dropped = 0  # frames replaced in the box before anyone read them (latest-frame mode only)
        self.reconnects = 0  # successful reopens after a loss
        self.last_error = ""  # why the source is down (empty while it delivers), for health reports

    # -- consumer side -------------------------------------------------------------------------------------

    @property
    def fps(self) -> float:
        """Nominal frame rate (the file's, the camera's, or source.fps)."""
        return float(self._reader.fps)

    @property
    def connected(self) -> bool:
        """True while the source is open and delivering."""
        return self._connected

    @property
    def ended(self) -> bool:
        """True once the stream is over (end of a file or folder, or stop()) and every frame was read."""
        with self._cond:
            return self._ended and not self._box

    @property
    def skipped(self) -> int:
        """Unreadable images skipped in a folder source."""
        return int(getattr(self._reader, "skipped", 0))

    def stats(self) -> dict[str, Any]:
        return {"frames_read": self.frames_read, "frames_delivered": self.frames_delivered,
                "dropped": self.dropped, "reconnects": self.reconnects, "skipped": self.skipped,
                "connected": self._connected, "last_error": self.last_error}

    def start(self) -> Source:
        """Open the source and start capturing. Raises SourceError if a file or folder cannot be used;
        a live source that cannot be opened yet is retried in the background with a warning."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._t0_wall, self._t0_mono = time.time(), time.monotonic()
        try:
            self._reader.open()
            self._connected = True
            log.info("opened %s (%s, %.3g fps)", self.name, "live" if self.is_live else "replay", self.fps)
        except _OpenError as exc:
            if not self.is_live:
                raise SourceError(str(exc)) from None
            self.last_error = str(exc)
            log.warning("%s; retrying in the background", exc)
        self._thread = threading.Thread(target=self._run, name=f"source:{self.name}", daemon=True)
        self._thread.start()
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (latest-frame mode: the newest one not handed out yet), waiting up to `timeout`
        seconds (None: until a frame comes or the stream ends). None when no frame came in time, at the end
        of the stream, or after stop(); `ended` tells these apart."""
        if self._thread is None:
            raise RuntimeError(f"{self.name}: read() before start()")
        with self._cond:
            if not self._cond.wait_for(lambda: self._box or self._ended, timeout):
                return None
            if not self._box:
                return None
            frame = self._box.popleft()
            self.frames_delivered += 1
            self._cond.notify_all()
            return frame

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capturing and release the device; idempotent. Frames not read yet are discarded."""
        self._stop.set()
        with self._cond:
            self._ended = True
            self._box.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: capture thread did not stop within %.0f s", self.name, timeout)

    def __enter__(self) -> Source:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- capture thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = FIRST_RETRY_DELAY
        down_since = time.monotonic()  # when the source was lost (or the start, if it never opened)
        ever_connected = self._connected
        failed_opens = 0
        try:
            while not self._stop.is_set():
                if not self._connected:
                    if not self._reopen_wait(delay):
                        break
                    try:
                        self._reader.open()
                    except _OpenError as exc:
                        failed_opens += 1
                        self.last_error = str(exc)
                        delay = min(delay * 2, self._max_delay)
                        log.log(logging.WARNING if failed_opens == 1 else logging.DEBUG,
                                "%s: reopen failed (%s); next try in %.1f s", self.name, exc, delay)
                        continue
                    self._connected = True
                    self.last_error = ""
                    if ever_connected:
                        self.reconnects += 1
                        log.info("%s: recovered after %.1f s (%d failed attempts)", self.name,
                                 time.monotonic() - down_since, failed_opens)
                    else:
                        log.info("%s: connected after %.1f s", self.name, time.monotonic() - down_since)
                    ever_connected = True
                    delay, failed_opens = FIRST_RETRY_DELAY, 0
                reason = "read failed"
                try:
                    image = self._reader.read()
                except _EndOfStreamError:
                    log.info("%s: end of stream after %d frames", self.name, self.frames_read)
                    break
                except (cv2.error, OSError, ValueError) as exc:
                    image, reason = None, f"read failed: {exc}"
                if image is None:
                    self.last_error = reason
                    log.warning("%s: lost (%s); reopening with backoff up to %.0f s", self.name, reason,
                                self._max_delay)
                    self._reader.close()
                    self._connected = False
                    down_since = time.monotonic()
                    continue
                self.frames_read += 1
                self._deliver(self._make_frame(image))
        except Exception:  # pragma: no cover - a bug; say so instead of dying silently
            log.exception("%s: capture thread failed", self.name)
        finally:
            self._reader.close()
            self._connected = False
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _reopen_wait(self, delay: float) -> bool:
        """Sleep `delay` seconds unless stopped; False when stopped."""
        return not self._stop.wait(delay)

    def _make_frame(self, image: np.ndarray) -> Frame:
        index = self._reader.index
        offset = None
        if self.is_live:
            timestamp = time.time()
        else:
            offset = index / self.fps if self.fps > 0 else 0.0
            timestamp = self._t0_wall + offset
            if not self.every_frame:  # replay a file like a camera: at its own frame rate
                self._stop.wait(max(0.0, self._t0_mono + offset - time.monotonic()))
        rgb = _to_rgb(image) if self._reader.bgr else image
        return Frame(image=np.ascontiguousarray(rgb), index=index, timestamp=timestamp, media_time=offset)

    def _deliver(self, frame: Frame) -> None:
        with self._cond:
            if self._stop.is_set():
                return
            if self.every_frame:
                self._cond.wait_for(lambda: len(self._box) < self._capacity or self._stop.is_set())
                if self._stop.is_set():
                    return
            elif self._box:
                self._box.popleft()
                self.dropped += 1
            self._box.append(frame)
            self._cond.notify_all()


def open_source(section: Any, every_frame: bool | None = None, base_dir: Path | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> Source:
    """A Source (not started) for a `[source]` section (agent.config.SourceSection).

    every_frame: None = every frame for files and folders, the latest frame for live sources. base_dir: folder
    a relative file/folder path is resolved against (cfg.base_dir). max_pixels/max_bytes: image caps for
    folder sources ([images]). Raises SourceError for a URI that can never work (malformed, missing
    file/folder, a CSI/GStreamer pipeline without GStreamer support in OpenCV).
    """
    kind, target = parse_uri(section.uri, base_dir)
    if kind == "file":
        reader: Any = _FileReader(target, section)
    elif kind == "folder":
        reader = _FolderReader(target, section, max_pixels, max_bytes)
    else:
        if kind in ("csi", "gst") and not _gstreamer_available():
            raise SourceError(f"source.uri {section.uri!r} needs OpenCV built with GStreamer "
                              "(JetPack's python3-opencv); this OpenCV has no GStreamer support")
        reader = _CaptureReader(kind, target, section)
    live = kind not in ("file", "folder")
    return Source(reader, live=live, every_frame=(not live) if every_frame is None else every_frame,
                  reconnect_max_delay=section.reconnect_max_delay, name=reader.describe())
