"""The one event schema (version 4): what the agent logs in SQLite and publishes on `<prefix>/events`.

An `Event` is a flat JSON object. Common fields are always present (`null` where they do not apply);
type-specific fields are present only for their type (see `TYPE_FIELDS`). The JSON Schema in
`agent/schemas/event.schema.json` states the rules; `validate_event` checks them by that file itself
(compiled by fastjsonschema), so there is no second copy to keep in step. See docs/events.md.

Version 2 added `frame_index` and `media_time` (where in the source the event happened); version 1
events (in an older log) are still valid without them, and consumers of version 1 keep working: nothing
else changed.
Version 3 added `unknown_id` to `unknown_face` (the unknown person, from agent.sightings, the track joined)
and the `reidentified` type; version 1 and 2 events are still valid as they were.
Version 4 added `person_id` to every event (the enrolled person's stable id, agent.people, beside `name`:
a rename keeps it), `unknown_id` to `track_ended` (an unknown track's unknown person) and `original_event_id`
to `reidentified` (the track's `unknown_face` event); `camera` is null for agent-wide events
(`model_updated`, and `reidentified` when the track's camera is not known); every `unknown_face` carries its
`unknown_id` whenever faces are kept (`[sightings] privacy`). Older events are still valid as they were.

Event ids are ULIDs: 26 Crockford base32 characters, a 48-bit millisecond timestamp then 80 random bits,
monotonic within one process, so they sort by creation time and are unique across agents.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.config import Config

SCHEMA_VERSION = 4
SCHEMA_VERSIONS = (1, 2, 3, 4)  # versions this code reads (an event log may hold older events)

TRACK_STARTED = "track_started"
IDENTIFIED = "identified"
UNKNOWN_FACE = "unknown_face"
TRACK_ENDED = "track_ended"
MODEL_UPDATED = "model_updated"
REIDENTIFIED = "reidentified"
EVENT_TYPES = (TRACK_STARTED, IDENTIFIED, UNKNOWN_FACE, TRACK_ENDED, MODEL_UPDATED, REIDENTIFIED)

# type-specific fields: required for their type, absent from every other type
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    TRACK_STARTED: (),
    IDENTIFIED: ("previous_name",),
    UNKNOWN_FACE: ("attempts", "unknown_id"),
    TRACK_ENDED: ("duration_s", "best_confidence", "unknown_id"),
    MODEL_UPDATED: ("people", "counts", "training_s", "cv_score"),
    REIDENTIFIED: ("unknown_id", "seen_at", "original_event_id"),
}
TYPE_FIELDS_V3 = {**TYPE_FIELDS, TRACK_ENDED: ("duration_s", "best_confidence"),
                  REIDENTIFIED: ("unknown_id", "seen_at")}
TYPE_FIELDS_V2 = {**TYPE_FIELDS_V3, UNKNOWN_FACE: ("attempts",)}  # versions 1 and 2 (no reidentified type)


def type_fields(etype: str, version: int) -> tuple[str, ...]:
    """The type-specific fields of `etype` in schema `version`."""
    table = TYPE_FIELDS if version >= 4 else TYPE_FIELDS_V3 if version == 3 else TYPE_FIELDS_V2
    return table.get(etype, ())


COMMON_FIELDS_V1 = ("schema_version", "event_id", "type", "agent_id", "camera", "timestamp", "track_id",
                    "name", "confidence", "votes", "box", "frame")
COMMON_FIELDS_V2 = (*COMMON_FIELDS_V1, "frame_index", "media_time")
COMMON_FIELDS = (*COMMON_FIELDS_V2, "person_id")


def common_fields(version: int) -> tuple[str, ...]:
    """The fields every event of schema `version` has."""
    return COMMON_FIELDS if version >= 4 else COMMON_FIELDS_V2 if version >= 2 else COMMON_FIELDS_V1

OPTIONAL_FIELDS = ("thumbnail",)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


class EventError(ValueError):
    """An event that does not follow the schema; the message names the field and the reason."""


# ---------------------------------------------------------------------------------------------- ids, time

_id_lock = threading.Lock()
_last_id = (0, 0)  # (milliseconds, 80-bit random part) of the previous id, for monotonic ids


def new_event_id(now: float | None = None) -> str:
    """A new ULID: sortable by creation time, strictly increasing within this process."""
    global _last_id
    ms = int((time.time() if now is None else now) * 1000)
    with _id_lock:
        last_ms, last_rand = _last_id
        if ms <= last_ms:  # same millisecond (or the clock went back): keep order by incrementing
            ms, rand = last_ms, (last_rand + 1) % (1 << 80)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id = (ms, rand)
    value = (ms << 80) | rand
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def format_timestamp(t: float | datetime | None = None) -> str:
    """UTC ISO 8601 with milliseconds and a Z: 2024-05-01T12:00:00.123Z (fixed width, sorts as text)."""
    if t is None:
        t = time.time()
    dt = t if isinstance(t, datetime) else datetime.fromtimestamp(t, tz=timezone.utc)
    if dt.tzinfo is None:
        raise EventError("timestamp: a naive datetime is ambiguous; give a timezone-aware one")
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> float:
    """Seconds since the epoch of an event timestamp (ISO 8601 UTC ending in Z)."""
    if not isinstance(value, str) or not TIMESTAMP_RE.match(value):
        raise EventError(f"timestamp: {value!r} is not ISO 8601 UTC like 2024-05-01T12:00:00.123Z")
    try:
        return datetime.strptime(value[:-1] + ("" if "." in value else ".0"), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError as exc:
        raise EventError(f"timestamp: {value!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------- the event


@dataclass
class Event:
    """One event. Build it with `EventFactory`; `to_json()` is exactly what is logged and published."""

    type: str
    agent_id: str
    camera: str | None  # the camera ([[sources]] name); null for agent-wide events (version 4)
    event_id: str = field(default_factory=new_event_id)
    timestamp: str = field(default_factory=format_timestamp)
    track_id: int | None = None
    name: str | None = None  # settled identity; null = unknown / not settled
    person_id: str | None = None  # the enrolled person `name` is (p<n>, agent.people): kept by a rename
    confidence: float | None = None  # 0..1
    votes: int | None = None  # agreeing votes behind `name`
    box: dict[str, int] | None = None  # {left, top, right, bottom} in frame pixels
    frame: dict[str, int] | None = None  # {width, height}
    frame_index: int | None = None  # the source frame (position in a file; count since start when live)
    media_time: float | None = None  # seconds into the file (files only; null for live sources)
    thumbnail: str | None = None  # base64 JPEG of the face; optional, off by default
    # type-specific
    previous_name: str | None = None  # identified: the name before a change (null the first time)
    attempts: int | None = None  # unknown_face: embeddings tried before giving up
    duration_s: float | None = None  # track_ended: seconds between track start and end
    best_confidence: float | None = None  # track_ended: best confidence of the final identity
    people: list[str] | None = None  # model_updated: enrolled people
    counts: dict[str, int] | None = None  # model_updated: photos per person
    training_s: float | None = None  # model_updated: training time in seconds
    cv_score: float | None = None  # model_updated: cross-validation accuracy (0..1), null if too few photos
    unknown_id: str | None = None  # unknown_face, track_ended: the unknown person (u<n>); reidentified: the one it was
    seen_at: str | None = None  # reidentified: when the face was seen (the track's first sighting)
    original_event_id: str | None = None  # reidentified: the track's unknown_face event (null: not in the log)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: common fields, thumbnail if any, then the fields of this type."""
        out = {key: getattr(self, key) for key in common_fields(self.schema_version)}
        if self.thumbnail is not None:
            out["thumbnail"] = self.thumbnail
        for key in type_fields(self.type, self.schema_version):
            out[key] = getattr(self, key)
        return out

    def to_json(self) -> str:
        """Compact JSON, validated: what goes into the log and onto the wire."""
        data = self.to_dict()
        validate_event(data)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        validate_event(data)
        return cls(**{k: v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @property
    def time(self) -> float:
        """The timestamp as seconds since the epoch."""
        return parse_timestamp(self.timestamp)


# ---------------------------------------------------------------------------------------------- validation


def _fail(where: str, why: str) -> None:
    raise EventError(f"{where}: {why}")


_SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "event.schema.json"
_schema_lock = threading.Lock()
_schema_check: Callable[[Any], Any] | None = None


def _compiled_schema() -> Callable[[Any], Any]:
    """event.schema.json compiled to Python by fastjsonschema, once (on first use: no cost at import)."""
    global _schema_check
    with _schema_lock:
        if _schema_check is None:
            import fastjsonschema

            _schema_check = fastjsonschema.compile(json.loads(_SCHEMA_PATH.read_text(encoding="utf-8")))
        return _schema_check


def _schema_error(exc: Any, data: dict) -> EventError:
    """A fastjsonschema error as this module says it: the field, what is wrong, the value. A rule about
    which fields an event has (the schema's version and type conditions) is said with the fields."""
    name = str(exc.name or "data")
    field_name = name.removeprefix("data").lstrip(".") or "event"
    why = str(exc.message).removeprefix(name).strip() or "does not follow the schema"
    if field_name == "event":
        return EventError(_fields_problem(data) or f"event: {why}")
    return EventError(f"{field_name}: {why}, got {exc.value!r:.80}")


def _fields_problem(data: dict) -> str:
    """Why an event the schema refused has the wrong fields for its version and type ("" if it has not)."""
    version, etype = data.get("schema_version"), data.get("type")
    if version not in SCHEMA_VERSIONS:
        return f"schema_version: expected one of {SCHEMA_VERSIONS}, got {version!r:.20}"
    if etype == REIDENTIFIED and version < 3:
        return f"type: {etype} needs schema_version 3 or later"
    expected = (*common_fields(version), *type_fields(str(etype), version))
    missing = [k for k in expected if k not in data]
    extra = sorted(set(data) - set(expected) - set(OPTIONAL_FIELDS))
    if missing:
        return f"event: missing field(s) {', '.join(missing)} for type {etype} (schema_version {version})"
    if extra:
        return f"event: unexpected field(s) {', '.join(extra)} for type {etype} (schema_version {version})"
    return ""


def validate_event(data: Any) -> None:
    """Check an event object against agent/schemas/event.schema.json (the one statement of the rules, every
    schema version in it), then what JSON Schema cannot say: timestamps that are real UTC times, finite
    numbers. Raise EventError naming the field."""
    from fastjsonschema import JsonSchemaValueException

    if not isinstance(data, dict):
        _fail("event", f"expected a JSON object, got {type(data).__name__}")
    if isinstance(data.get("schema_version"), bool):  # Python's True == 1 would pass the schema's enum
        _fail("schema_version", f"expected one of {SCHEMA_VERSIONS}, got {data['schema_version']!r}")
    try:
        _compiled_schema()(data)
    except JsonSchemaValueException as exc:
        raise _schema_error(exc, data) from None
    parse_timestamp(data["timestamp"])
    if "seen_at" in data:
        parse_timestamp(data["seen_at"])
    for key, value in data.items():
        if isinstance(value, float) and not math.isfinite(value):
            _fail(key, f"expected a finite number, got {value!r}")


# ---------------------------------------------------------------------------------------------- factories


@dataclass(frozen=True)
class FramePosition:
    """Where in the source an event happened: the frame index and, for files, the media time in seconds."""

    index: int
    media_time: float | None = None


def _box(box: Any) -> dict[str, int]:
    """(left, top, right, bottom) as any sequence of numbers (numpy included) or a dict -> int dict."""
    keys = ("left", "top", "right", "bottom")
    try:
        values = [float(box[k]) for k in keys] if isinstance(box, dict) else [float(v) for v in box]
    except (TypeError, ValueError, KeyError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise EventError(f"box: expected (left, top, right, bottom), got {box!r}")
    return {k: int(round(v)) for k, v in zip(keys, values, strict=True)}


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _frame(frame_size: Sequence[int]) -> dict[str, int]:
    width, height = (int(v) for v in frame_size)
    return {"width": width, "height": height}


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(float(v), digits)


def make_thumbnail(image: Any, box: dict[str, int], size: int, max_bytes: int) -> str | None:
    """Base64 JPEG of the face crop (RGB uint8 frame), long side `size`; None if empty or over `max_bytes`."""
    from PIL import Image  # imported here: only needed when thumbnails are on

    h, w = image.shape[:2]
    left, top = max(0, box["left"]), max(0, box["top"])
    right, bottom = min(w, box["right"]), min(h, box["bottom"])
    if right <= left or bottom <= top:
        return None
    crop = Image.fromarray(image[top:bottom, left:right])
    crop.thumbnail((size, size))
    for quality in (85, 70, 50):
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= max_bytes:
            return base64.b64encode(buf.getvalue()).decode("ascii")
    return None


def jpeg_thumbnail(data: bytes, size: int, max_bytes: int) -> str | None:
    """Base64 JPEG of an encoded face image (a kept chip), long side `size`; None if unreadable or too big."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    h, w = rgb.shape[:2]
    return make_thumbnail(rgb, {"left": 0, "top": 0, "right": w, "bottom": h}, size, max_bytes)


class EventFactory:
    """Builds events for one agent and camera (None: agent-wide events); attaches thumbnails when
    [events] thumbnails = true; `person_id(name)` gives the enrolled person's stable id (agent.people)."""

    def __init__(self, agent_id: str, camera: str | None, thumbnails: bool = False, thumbnail_size: int = 96,
                 thumbnail_max_bytes: int = 8000, person_id: Callable[[str], str | None] | None = None) -> None:
        self.agent_id = agent_id
        self.camera = camera
        self.thumbnails = thumbnails
        self.thumbnail_size = thumbnail_size
        self.thumbnail_max_bytes = thumbnail_max_bytes
        self.person_id = person_id

    @classmethod
    def from_config(cls, cfg: Config, camera: str | None = None,
                    person_id: Callable[[str], str | None] | None = None) -> EventFactory:
        """For `camera` (a [[sources]] name); None: [agent] camera_name (one camera)."""
        e = cfg.events
        return cls(cfg.agent.id, camera or cfg.agent.camera_name, e.thumbnails, e.thumbnail_size,
                   e.thumbnail_max_bytes, person_id)

    @classmethod
    def agent_wide(cls, cfg: Config, person_id: Callable[[str], str | None] | None = None) -> EventFactory:
        """For the agent's own events (model_updated; reidentified when its track's camera is not known):
        `camera` null."""
        factory = cls.from_config(cfg, person_id=person_id)
        factory.camera = None
        return factory

    def _person(self, name: str | None) -> str | None:
        return None if name is None or self.person_id is None else self.person_id(name)

    def _track_event(self, etype: str, track_id: int, box: Any, frame_size: Sequence[int], image: Any,
                     at: FramePosition | None = None, **fields: Any) -> Event:
        b = _box(box)
        if at is not None:
            fields.update(frame_index=int(at.index),
                          media_time=None if at.media_time is None else round(float(at.media_time), 3))
        thumb = None
        if self.thumbnails and image is not None:
            thumb = make_thumbnail(image, b, self.thumbnail_size, self.thumbnail_max_bytes)
        event = Event(type=etype, agent_id=self.agent_id, camera=self.camera, track_id=int(track_id), box=b,
                      frame=_frame(frame_size), thumbnail=thumb, person_id=self._person(fields.get("name")),
                      **fields)
        validate_event(event.to_dict())
        return event

    def track_started(self, track_id: int, box: Any, frame_size: Sequence[int],
                      confidence: float | None = None, image: Any = None, at: FramePosition | None = None) -> Event:
        """A confirmed new track; `confidence` = detector score (optional)."""
        return self._track_event(TRACK_STARTED, track_id, box, frame_size, image, at,
                                 confidence=_round(confidence))

    def identified(self, track_id: int, name: str, confidence: float, votes: int, box: Any,
                   frame_size: Sequence[int], previous_name: str | None = None, image: Any = None,
                   at: FramePosition | None = None) -> Event:
        """A track got a settled name, or its settled name changed (`previous_name`)."""
        return self._track_event(IDENTIFIED, track_id, box, frame_size, image, at, name=name,
                                 confidence=_round(confidence), votes=int(votes), previous_name=previous_name)

    def unknown_face(self, track_id: int, attempts: int, box: Any, frame_size: Sequence[int],
                     confidence: float | None = None, votes: int | None = None, image: Any = None,
                     at: FramePosition | None = None, unknown_id: str | None = None) -> Event:
        """A track still unknown after its attempts; `confidence` = best score of any person, if any;
        `unknown_id`: the unknown person (agent.sightings) it is, when seen before."""
        return self._track_event(UNKNOWN_FACE, track_id, box, frame_size, image, at,
                                 confidence=_round(confidence), votes=_int(votes), attempts=int(attempts),
                                 unknown_id=unknown_id)

    def track_ended(self, track_id: int, name: str | None, duration_s: float, best_confidence: float | None,
                    box: Any, frame_size: Sequence[int], votes: int | None = None,
                    confidence: float | None = None, at: FramePosition | None = None,
                    unknown_id: str | None = None) -> Event:
        """A track ended; `name` = its final identity (None = unknown, then `unknown_id` = its unknown
        person), box = last box."""
        return self._track_event(TRACK_ENDED, track_id, box, frame_size, None, at, name=name,
                                 confidence=_round(confidence), votes=_int(votes),
                                 duration_s=round(float(duration_s), 3),
                                 best_confidence=_round(best_confidence),
                                 unknown_id=unknown_id if name is None else None)

    def reidentified(self, track_id: int, name: str, confidence: float | None, unknown_id: str | None,
                     seen_at: float, original: Event | None = None, chip: bytes | None = None) -> Event:
        """A track that was unknown when seen (at `seen_at`, epoch seconds) is `name` to the new model.
        `original`: the track's unknown_face event (its id, camera and thumbnail are carried); `chip`: a JPEG
        of the face, the thumbnail when the original has none (thumbnails on)."""
        thumb = None
        if self.thumbnails:
            thumb = original.thumbnail if original is not None else None
            if thumb is None and chip:
                thumb = jpeg_thumbnail(chip, self.thumbnail_size, self.thumbnail_max_bytes)
        event = Event(type=REIDENTIFIED, agent_id=self.agent_id,
                      camera=original.camera if original is not None else self.camera, track_id=int(track_id),
                      name=name, person_id=self._person(name), confidence=_round(confidence),
                      unknown_id=unknown_id, seen_at=format_timestamp(seen_at), thumbnail=thumb,
                      original_event_id=original.event_id if original is not None else None)
        validate_event(event.to_dict())
        return event

    def model_updated(self, people: Sequence[str], counts: dict[str, int], training_s: float,
                      cv_score: float | None) -> Event:
        """The classifier was retrained (locally or by remote enrollment): agent-wide, no camera."""
        event = Event(type=MODEL_UPDATED, agent_id=self.agent_id, camera=None, people=sorted(people),
                      counts={k: int(v) for k, v in sorted(counts.items())},
                      training_s=round(float(training_s), 3), cv_score=_round(cv_score))
        validate_event(event.to_dict())
        return event
