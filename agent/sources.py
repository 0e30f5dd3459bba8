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
exponential backoff capped at `reconnect_max_delay` (2 s by default: a failed open of a stream that is down is
cheap, and a camera that comes back is seen within about that): a warning on loss with its cause, an info line
on recovery. Files and folders continue where they stopped. A file or folder that cannot be used at all, or a
local camera that does not exist, is a `SourceError` from `start()`; a live source that is not there yet at
start is retried in the background (see `connected`).

`stop()` returns within `STOP_WAIT` seconds whatever the source is doing: a capture thread blocked inside
FFmpeg (a stalled stream, an open that hangs) is a daemon thread that is left to finish on its own and
releases its capture when the call returns. OpenCV's and FFmpeg's own log lines are silenced (set
OPENCV_LOG_LEVEL / OPENCV_FFMPEG_LOGLEVEL to see them); the reasons appear in this module's messages instead.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from agent import rtsp
from agent.config import SourceSection
from agent.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB, ImageError, is_image_path, load_image
from agent.logsafe import redact

log = logging.getLogger(__name__)

FIRST_RETRY_DELAY = 0.5  # seconds before the first reopen attempt; doubles up to reconnect_max_delay
STOP_WAIT = 0.1  # seconds stop() waits for the capture thread before leaving it behind (blocked in FFmpeg)
FPS_MEASURE_SECONDS = 2.0  # a live source's real frame rate is measured over its first seconds of frames
EVERY_FRAME_BUFFER = 2  # frames decoded ahead of the consumer in every-frame mode
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def _quiet_opencv() -> None:
    """OpenCV's `[ WARN:...]` lines and FFmpeg's `[tcp @ 0x...]` lines go to stderr around the logging
    setup; silence them unless the user asked for them through the environment."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at the first FFmpeg capture
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


_quiet_opencv()


class SourceError(RuntimeError):
    """A source that cannot be used at all; the message says which one and why."""


class _OpenError(Exception):
    """Opening failed this time (the source may come back)."""


class _MissingDeviceError(_OpenError):
    """A local camera whose device node does not exist."""


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
            raise SourceError(f"source.uri {redact(uri)!r}: the CSI sensor id must be a number, as in csi://0")
        return "csi", int(rest)
    if text.startswith("gst:"):
        pipeline = text[len("gst:"):].strip()
        if not pipeline:
            raise SourceError(f"source.uri {redact(uri)!r}: an empty GStreamer pipeline")
        return "gst", pipeline
    if text.lower().startswith(STREAM_PREFIXES):
        return "stream", text
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise SourceError(f"source.uri {redact(uri)!r}: unsupported scheme (use rtsp://, http(s)://, csi:// or gst:)")
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


def _network_cause(url: str, timeout: float) -> str:
    """Why a stream URL did not open, from a plain TCP connection to its host and port."""
    parsed = urllib.parse.urlsplit(url)
    default_port = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}.get(parsed.scheme.lower())
    try:
        host, port = parsed.hostname, parsed.port or default_port
    except ValueError:
        return "the URL has an invalid port"
    if not host or not port:
        return "FFmpeg could not open it"
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 3.0)):
            pass
    except socket.gaierror:
        return f"host {host!r} not found"
    except ConnectionRefusedError:
        return f"connection to {host}:{port} refused (nothing listens there)"
    except TimeoutError:
        return f"no answer from {host}:{port}"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    if parsed.scheme.lower() == "rtsp":
        why = rtsp.explain(url, min(timeout, 5.0))  # the camera's own answer: 401, 404...
        if why:
            return why
    return f"{host}:{port} answers but sends no video FFmpeg can read (wrong path, credentials or format?)"


def _gstreamer_available() -> bool:
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def choose_decoder(kind: str, target: Any, setting: str) -> tuple[str, bool]:
    """(decoder, hardware) for a source: ("gstreamer", True/False) or ("ffmpeg", False).

    Only rtsp:// streams have a choice ([source] decoder): "ffmpeg" always FFmpeg on the CPU; "gstreamer"
    GStreamer (Jetson's hardware decoder when the system's GStreamer has it, else libav on the CPU); "auto"
    GStreamer with the hardware decoder when OpenCV has GStreamer and the decoder exists (a Jetson), else
    FFmpeg. Raises SourceError for "gstreamer" with an OpenCV built without GStreamer."""
    if kind != "stream" or not str(target).lower().startswith("rtsp://") or setting == "ffmpeg":
        return "ffmpeg", False
    if setting == "gstreamer":
        if not _gstreamer_available():
            raise SourceError('source.decoder = "gstreamer" needs OpenCV built with GStreamer (JetPack\'s '
                              'python3-opencv); this OpenCV has none: use "auto" or "ffmpeg"')
        return "gstreamer", rtsp.gstreamer_has(rtsp.HARDWARE_DECODER)
    if _gstreamer_available() and rtsp.gstreamer_has(rtsp.HARDWARE_DECODER):
        return "gstreamer", True
    return "ffmpeg", False


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

@dataclass(frozen=True)
class ImageCaps:
    """[images] max_pixels, max_bytes and the decode budget: what a folder source's images may be."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    memory_mb: int = DEFAULT_MEMORY_MB


class Reader(Protocol):
    """One kind of source, driven by the capture thread of `Source` (one thread at a time: no locks).

    Made as `Reader(kind, target, section, caps)` from `parse_uri`'s (kind, target), the `[source]` section
    and the [images] caps (see READERS).

    Attributes:
        bgr: the images `read` returns are BGR (OpenCV's order), else RGB.
        fps: frames per second: the configured `[source] fps` until `open` learns better (a file's header).
        index: the number of the frame `read` returned last (-1 before the first): the position in a video
            file, else a running count that continues across reopens.
        skipped: inputs passed over as unreadable (a folder's broken images), for `Source.stats`.
    """

    bgr: bool
    fps: float
    index: int
    skipped: int

    def describe(self) -> str:
        """What the source is, for logs and errors: credentials redacted."""
        ...

    def open(self) -> None:
        """(Re)open, continuing where a file or folder stopped; raises _OpenError with the reason
        (_MissingDeviceError: a local camera that does not exist)."""
        ...

    def read(self) -> np.ndarray | None:
        """The next image; None for a passing failure (the source is closed and reopened);
        raises _EndOfStreamError at the end of a file or folder."""
        ...

    def close(self) -> None:
        """Release what `open` took; safe to call twice."""
        ...


class _CaptureReader:
    """A live cv2.VideoCapture source: camera, V4L2 device, CSI/GStreamer pipeline or network stream."""

    bgr = True  # OpenCV's channel order
    skipped = 0

    def __init__(self, kind: str, target: Any, section: SourceSection, caps: ImageCaps | None = None):
        self.kind, self.target, self.section = kind, target, section
        self.cap: cv2.VideoCapture | None = None
        self.fps = float(section.fps)
        self.index = -1  # index of the last frame read; continues across reopens
        self.decoder, self.hardware = choose_decoder(kind, target, section.decoder)
        self.fallback = section.decoder == "auto"  # GStreamer failing -> FFmpeg

    def describe(self) -> str:
        """What the source is, for logs, errors and reports: credentials redacted, a pipeline not spelled out."""
        return f"{self.kind} {redact(self.target)}" if self.kind != "gst" else "GStreamer pipeline"

    def device(self) -> str | None:
        """The device node of a local camera (camera index N is /dev/videoN on Linux), else None."""
        if self.kind == "camera":
            return f"/dev/video{self.target}"
        return self.target if self.kind == "v4l2" else None

    def open(self) -> None:
        s = self.section
        timeout_ms = int(s.timeout * 1000)
        device = self.device()
        if device is not None and not os.path.exists(device):
            raise _MissingDeviceError(f"cannot open {self.describe()}: {device} does not exist (no such camera)")
        if self.kind in ("camera", "v4l2"):
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        elif self.kind in ("csi", "gst"):
            pipeline = csi_pipeline(self.target, s.width, s.height, s.fps) if self.kind == "csi" else self.target
            cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        else:
            cap = self._open_gstreamer() if self.decoder == "gstreamer" else None
            if cap is None:
                is_rtsp = self.target.lower().startswith(("rtsp://", "rtsps://"))
                if is_rtsp and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:  # the user's own options win
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{s.rtsp_transport}"
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
                cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise _OpenError(f"cannot open {self.describe()}: {self._why_not()}")
        if self.kind in ("camera", "v4l2"):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
            cap.set(cv2.CAP_PROP_FPS, s.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short: old frames are lag
        fps = cap.get(cv2.CAP_PROP_FPS)
        if math.isfinite(fps) and 0 < fps < 1000:
            self.fps = float(fps)
        self.cap = cap

    def _open_gstreamer(self) -> cv2.VideoCapture | None:
        """The rtsp:// stream through the GStreamer pipeline (agent.rtsp); None after falling back to FFmpeg
        ([source] decoder = "auto" and the pipeline did not start: logged once, FFmpeg from then on)."""
        s = self.section
        codec = "h264"
        with contextlib.suppress(rtsp.ProbeError, OSError, ValueError):  # the open below fails and says why
            codec = rtsp.probe(self.target, min(s.timeout, 5.0)).codec or codec
        pipeline = rtsp.gstreamer_pipeline(self.target, codec, transport=s.rtsp_transport, hardware=self.hardware,
                                           timeout=s.timeout)
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if cap.isOpened() or not self.fallback:
            log.debug("%s: decoding %s with GStreamer (%s)", self.describe(), codec.upper(),
                      rtsp.HARDWARE_DECODER if self.hardware else rtsp.CODECS[codec][2])
            return cap
        cap.release()
        log.warning("%s: the GStreamer %s pipeline did not start (%s); decoding with FFmpeg on the CPU from now "
                    "on", self.describe(), "hardware decoding" if self.hardware else "decoding",
                    _network_cause(self.target, s.timeout))
        self.decoder = "ffmpeg"
        return None

    def _why_not(self) -> str:
        """The likely cause of a failed open, since OpenCV does not say (and its log lines are silenced)."""
        device = self.device()
        if device is not None:
            if not os.access(device, os.R_OK | os.W_OK):
                return f"no permission on {device} (add the user to the 'video' group)"
            return f"{device} is busy or not a capture device"
        if self.kind in ("csi", "gst"):
            return "the GStreamer pipeline did not start (run it with gst-launch-1.0 to see why)"
        return _network_cause(self.target, self.section.timeout)

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
    skipped = 0

    def __init__(self, kind: str, path: Path, section: SourceSection, caps: ImageCaps | None = None):
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

    def __init__(self, kind: str, path: Path, section: SourceSection, caps: ImageCaps | None = None):
        self.path = path
        self.fps = float(section.fps)
        caps = caps or ImageCaps()
        self.max_pixels, self.max_bytes, self.memory_mb = caps.max_pixels, caps.max_bytes, caps.memory_mb
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
                image = load_image(self.path / name, max_pixels=self.max_pixels, max_bytes=self.max_bytes,
                                   memory_mb=self.memory_mb)
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


# the Reader of each kind parse_uri gives, and whether that kind is live (a camera or a stream: reopened and
# read for its latest frame) or not (a file or folder: read to its end, every frame)
READERS: dict[str, tuple[Callable[[str, Any, SourceSection, ImageCaps], Reader], bool]] = {
    "camera": (_CaptureReader, True), "v4l2": (_CaptureReader, True), "csi": (_CaptureReader, True),
    "gst": (_CaptureReader, True), "stream": (_CaptureReader, True),
    "file": (_FileReader, False), "folder": (_FolderReader, False),
}


# ------------------------------------------------------------------------------------------------------------
# The source: capture thread, delivery box, reconnects
# ------------------------------------------------------------------------------------------------------------

class Source:
    """A started source hands out frames with `read()`; see the module docstring. Use `open_source()`."""

    def __init__(self, reader: Reader, *, live: bool, every_frame: bool, reconnect_max_delay: float, name: str):
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
        self._woken = False  # wake() was called: read() returns None at once
        self._connected = False
        self._measured_fps = 0.0  # a live source's frame rate as received (0: not measured yet)
        self._fps_frames = 0  # frames counted for that measure since (re)connecting
        self._fps_since = 0.0
        self._t0_wall = 0.0
        self._t0_mono = 0.0
        self.frames_read = 0  # frames captured
        self.frames_delivered = 0  # frames handed out by read()
        self.dropped = 0  # frames replaced in the box before anyone read them (latest-frame mode only)
        self.reconnects = 0  # successful reopens after a loss
        self.last_error = ""  # why the source is down (empty while it delivers), for health reports
        self.listener: threading.Event | None = None  # set when a frame arrives or the stream ends (agent.cameras)

    # -- consumer side -------------------------------------------------------------------------------------

    @property
    def fps(self) -> float:
        """Frame rate: a live source's as measured over its first seconds (streams often announce a wrong
        one, e.g. 25 for any MJPEG stream), else the nominal one (the file's, the camera's, or source.fps)."""
        return self._measured_fps or float(self._reader.fps)

    @property
    def connected(self) -> bool:
        """True while the source is open and delivering."""
        return self._connected

    @property
    def lost(self) -> bool:
        """True while a started source is down and being reopened (not while it is still opening at start,
        nor once the stream is over)."""
        return self._thread is not None and not self._connected and not self._ended

    @property
    def ended(self) -> bool:
        """True once the stream is over (end of a file or folder, or stop()) and every frame was read."""
        with self._cond:
            return self._ended and not self._box

    @property
    def skipped(self) -> int:
        """Unreadable images skipped in a folder source."""
        return self._reader.skipped

    def stats(self) -> dict[str, Any]:
        return {"frames_read": self.frames_read, "frames_delivered": self.frames_delivered,
                "dropped": self.dropped, "reconnects": self.reconnects, "skipped": self.skipped,
                "connected": self._connected, "last_error": self.last_error}

    def start(self, missing_device_fatal: bool = True) -> Source:
        """Open the source and start capturing. Raises SourceError if a file or folder cannot be used, or
        a local camera does not exist (no /dev/videoN) unless `missing_device_fatal` is False (one of several
        cameras: it is waited for like a stream that is down); a live source that cannot be opened yet is
        retried in the background with a warning."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._t0_wall, self._t0_mono = time.time(), time.monotonic()
        try:
            self._reader.open()
            self._connected = True
            if self.is_live:  # the frame rate is logged once measured (see _measure_fps)
                log.debug("opened %s (it announces %.4g fps)", self.name, self._reader.fps)
            else:
                log.info("opened %s (replay, %.4g fps)", self.name, self.fps)
        except _OpenError as exc:
            if not self.is_live or (missing_device_fatal and isinstance(exc, _MissingDeviceError)):
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
            if not self._cond.wait_for(lambda: self._box or self._ended or self._woken, timeout):
                return None
            self._woken = False
            if not self._box:
                return None
            frame = self._box.popleft()
            self.frames_delivered += 1
            self._cond.notify_all()
            return frame

    def wake(self) -> None:
        """Make a waiting read() return None now (a shutdown request); safe from a signal handler."""
        with self._cond:  # a reentrant lock: fine even if the handler interrupted read() in this thread
            self._woken = True
            self._cond.notify_all()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop capturing; idempotent; returns within `timeout` seconds. Frames not read yet are discarded.
        A capture thread still blocked in FFmpeg then (a stalled stream) is left behind: it releases the
        device itself when the call returns, and as a daemon thread it does not keep the process alive."""
        self._stop.set()
        with self._cond:
            self._ended = True
            self._box.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.info("%s: the capture thread is blocked in the source; not waiting for it", self.name)

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
                    if self._stop.is_set():  # stop() came while the open was blocking
                        break
                reason = "read failed"
                read_started = time.monotonic()
                try:
                    image = self._reader.read()
                except _EndOfStreamError:
                    log.info("%s: end of stream after %d frames", self.name, self.frames_read)
                    break
                except (cv2.error, OSError, ValueError) as exc:
                    image, reason = None, f"read failed: {exc}"
                if image is None:
                    if self.is_live and reason == "read failed":
                        waited = time.monotonic() - read_started
                        reason = (f"no frame for {waited:.0f} s" if waited >= 1.0
                                  else "the stream ended or the connection closed")
                    self.last_error = reason
                    log.warning("%s: lost (%s); reopening with backoff up to %.0f s", self.name, reason,
                                self._max_delay)
                    self._reader.close()
                    self._connected = False
                    self._fps_frames = 0  # a measure across an outage would be wrong
                    if self.is_live:  # a frame from before the loss, not read yet, is stale by the time we are back
                        with self._cond:
                            self._box.clear()
                    down_since = time.monotonic()
                    continue
                self.frames_read += 1
                if self.is_live and not self._measured_fps:
                    self._measure_fps()
                self._deliver(self._make_frame(image))
        except Exception:  # pragma: no cover - a bug; say so instead of dying silently
            log.exception("%s: capture thread failed", self.name)
        finally:
            self._reader.close()
            self._connected = False
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            if self.listener is not None:
                self.listener.set()

    def _measure_fps(self) -> None:
        """Count the first frames of a live source; after FPS_MEASURE_SECONDS log the rate as received."""
        now = time.monotonic()
        self._fps_frames += 1
        if self._fps_frames == 1:
            self._fps_since = now
            return
        span = now - self._fps_since
        if span < FPS_MEASURE_SECONDS:
            return
        self._measured_fps = (self._fps_frames - 1) / span
        announced = float(self._reader.fps)
        note = "" if abs(announced - self._measured_fps) < 0.05 * announced else f"; it announces {announced:.4g}"
        log.info("opened %s (live, %.2f fps%s)", self.name, self._measured_fps, note)

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
        if self.listener is not None:
            self.listener.set()


def open_source(section: SourceSection, every_frame: bool | None = None, base_dir: Path | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                memory_mb: int = DEFAULT_MEMORY_MB) -> Source:
    """A Source (not started) for a `[source]` section (agent.config.SourceSection).

    every_frame: None = every frame for files and folders, the latest frame for live sources. base_dir: folder
    a relative file/folder path is resolved against (cfg.base_dir). max_pixels/max_bytes/memory_mb: image caps
    and decode budget for folder sources ([images]). Raises SourceError for a URI that can never work
    (malformed, missing file/folder, a CSI/GStreamer pipeline without GStreamer support in OpenCV).
    """
    kind, target = parse_uri(section.uri, base_dir)
    if kind in ("csi", "gst") and not _gstreamer_available():
        raise SourceError(f"source.uri {redact(section.uri)!r} needs OpenCV built with GStreamer "
                          "(JetPack's python3-opencv); this OpenCV has no GStreamer support")
    make, live = READERS[kind]
    reader = make(kind, target, section, ImageCaps(max_pixels, max_bytes, memory_mb))
    return Source(reader, live=live, every_frame=(not live) if every_frame is None else every_frame,
                  reconnect_max_delay=section.reconnect_max_delay, name=reader.describe())
