"""Event schema: round trips, factories, validation, and agreement with agent/schemas/event.schema.json."""

from __future__ import annotations

import base64
import copy
import io
import json
from importlib import resources

import numpy as np
import pytest
from conftest import FR, make_config

from agent.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Event,
    EventError,
    EventFactory,
    FramePosition,
    format_timestamp,
    new_event_id,
    parse_timestamp,
    validate_event,
)

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def schema() -> dict:
    text = resources.files("agent").joinpath("schemas/event.schema.json").read_text(encoding="utf-8")
    data = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(data)
    return data


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory("edge-7", "front door")


def one_of_each(factory: EventFactory) -> list[Event]:
    return [
        factory.track_started(1, (10, 20, 110, 140), (1280, 720), confidence=0.998),
        factory.identified(1, "alice", 0.87654, 3, (10.4, 20.6, 110, 140), (1280, 720)),
        factory.identified(1, "bob", 0.7, 5, {"left": 1, "top": 2, "right": 3, "bottom": 4}, (640, 480),
                           previous_name="alice"),
        factory.unknown_face(2, attempts=6, box=(0, 0, 50, 60), frame_size=(640, 480), confidence=0.31, votes=0),
        factory.unknown_face(3, attempts=6, box=(0, 0, 50, 60), frame_size=(640, 480)),
        factory.unknown_face(4, attempts=2, box=(0, 0, 50, 60), frame_size=(640, 480), unknown_id="u17"),
        factory.reidentified(4, "carol", 0.83, "u17", seen_at=1_700_000_000.25),
        factory.reidentified(5, "carol", None, None, seen_at=1_700_000_000.0),
        factory.track_ended(1, "bob", 12.3456, 0.91, (10, 20, 110, 140), (1280, 720), votes=5),
        factory.track_ended(2, None, 3.0, None, (0, 0, 50, 60), (640, 480)),
        factory.model_updated(["bob", "alice"], {"alice": 12, "bob": 9}, 4.2, 0.97),
        factory.model_updated(["carol"], {"carol": 1}, 0.5, None),
    ]


def test_round_trip_every_type(factory):
    events = one_of_each(factory)
    assert {e.type for e in events} == set(EVENT_TYPES)
    for event in events:
        text = event.to_json()
        back = Event.from_json(text)
        assert back == event
        assert back.to_json() == text  # byte-identical: what is logged is what is published
        data = json.loads(text)
        assert data["schema_version"] == SCHEMA_VERSION
        assert data["agent_id"] == "edge-7"
        assert data["camera"] == (None if event.type == "model_updated" else "front door")  # agent-wide: none
        assert data["timestamp"].endswith("Z")


def test_common_fields_and_type_fields(factory):
    e = json.loads(factory.identified(1, "alice", 0.87654, 3, (10.4, 20.6, 110, 140), (1280, 720)).to_json())
    assert e["box"] == {"left": 10, "top": 21, "right": 110, "bottom": 140}
    assert e["frame"] == {"width": 1280, "height": 720}
    assert e["confidence"] == 0.8765 and e["votes"] == 3 and e["previous_name"] is None
    assert "thumbnail" not in e and "duration_s" not in e
    ended = json.loads(factory.track_ended(1, "bob", 12.3456, 0.91, (1, 2, 3, 4), (10, 10)).to_json())
    assert ended["duration_s"] == 12.346 and ended["best_confidence"] == 0.91 and ended["name"] == "bob"
    model = json.loads(factory.model_updated(["bob", "alice"], {"bob": 2, "alice": 3}, 1.0, 0.5).to_json())
    assert model["people"] == ["alice", "bob"] and model["track_id"] is None and model["box"] is None


def test_event_ids_unique_sortable():
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # monotonic, also within one millisecond
    assert all(len(i) == 26 for i in ids)


def test_timestamps():
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert parse_timestamp("2024-05-01T12:00:00.250Z") == pytest.approx(1714564800.25)
    assert parse_timestamp("2024-05-01T12:00:00Z") == pytest.approx(1714564800.0)
    for bad in ("2024-05-01 12:00:00Z", "2024-05-01T12:00:00+02:00", "yesterday", "2024-13-01T00:00:00Z"):
        with pytest.raises(EventError, match="timestamp"):
            parse_timestamp(bad)


def test_examples_valid_against_json_schema(schema, factory):
    validator = jsonschema.Draft202012Validator(schema)
    for event in one_of_each(factory):
        errors = list(validator.iter_errors(json.loads(event.to_json())))
        assert not errors, (event.type, [e.message for e in errors])


def _mutations(factory) -> list[tuple[str, dict]]:
    base = json.loads(factory.identified(1, "alice", 0.8, 3, (1, 2, 3, 4), (10, 10)).to_json())
    unknown = json.loads(factory.unknown_face(2, 6, (1, 2, 3, 4), (10, 10)).to_json())
    model = json.loads(factory.model_updated(["a"], {"a": 1}, 1.0, 0.5).to_json())
    ended = json.loads(factory.track_ended(1, "bob", 1.0, 0.5, (1, 2, 3, 4), (10, 10)).to_json())
    cases = []

    def case(label, src, **changes):
        d = copy.deepcopy(src)
        for k, v in changes.items():
            if v is KeyError:
                d.pop(k)
            else:
                d[k] = v
        cases.append((label, d))

    reid = json.loads(factory.reidentified(4, "carol", 0.8, "u3", 1_700_000_000.0).to_json())
    case("schema_version", base, schema_version=5)
    case("v4 without person_id", base, person_id=KeyError)
    case("person_id not p<n>", base, person_id="alice")
    case("person_id without a name", unknown, person_id="p3")
    case("v3 with person_id", base, schema_version=3)
    case("v4 ended without unknown_id", ended, unknown_id=KeyError)
    case("named ended with unknown_id", ended, unknown_id="u2")
    case("v3 ended with unknown_id", ended, schema_version=3, person_id=KeyError)
    case("model with a camera", model, camera="door")
    case("track event without camera", base, camera=None)
    case("v3 model without camera", model, schema_version=3, person_id=KeyError)
    case("v4 reidentified without original_event_id", reid, original_event_id=KeyError)
    case("original_event_id not a ULID", reid, original_event_id="x")
    case("v2 unknown with unknown_id", unknown, schema_version=2)
    case("v3 unknown without unknown_id", unknown, unknown_id=KeyError)
    case("unknown_id not u<n>", unknown, unknown_id="stranger")
    case("reidentified in v2", reid, schema_version=2, frame_index=None, media_time=None)
    case("reidentified without name", reid, name=None)
    case("reidentified with a box", reid, box={"left": 1, "top": 2, "right": 3, "bottom": 4})
    case("reidentified seen_at", reid, seen_at="yesterday")
    case("reidentified without track", reid, track_id=None)
    case("v1 with v2 fields", base, schema_version=1)
    case("v2 without frame_index", base, frame_index=KeyError)
    case("frame_index negative", base, frame_index=-1)
    case("media_time text", base, media_time="1.5")
    case("media_time negative", base, media_time=-0.5)
    case("type", base, type="face_seen")
    case("event_id", base, event_id="not-an-id")
    case("timestamp", base, timestamp="2024-05-01 12:00")
    case("missing name", base, name=KeyError)
    case("identified name null", base, name=None)
    case("confidence > 1", base, confidence=1.5)
    case("confidence text", base, confidence="high")
    case("votes negative", base, votes=-1)
    case("box keys", base, box={"x": 1, "y": 2, "w": 3, "h": 4})
    case("box float", base, box={"left": 1.5, "top": 2, "right": 3, "bottom": 4})
    case("frame missing", base, frame=None)
    case("extra field", base, color="red")
    case("type field on wrong type", base, duration_s=3.0)
    case("thumbnail not base64", base, thumbnail="not base64!")
    case("unknown with a name", unknown, name="alice")
    case("unknown without attempts", unknown, attempts=KeyError)
    case("ended negative duration", ended, duration_s=-1)
    case("ended missing best_confidence", ended, best_confidence=KeyError)
    case("model with track", model, track_id=3)
    case("model counts negative", model, counts={"a": -1})
    case("model people not strings", model, people=[1])
    case("agent_id empty", base, agent_id="")
    case("name too long", base, name="x" * 201)
    return cases


def test_invalid_events_rejected_by_both_validators(schema, factory):
    validator = jsonschema.Draft202012Validator(schema)
    for label, data in _mutations(factory):
        with pytest.raises(EventError):
            validate_event(data)
        assert list(validator.iter_errors(data)), f"schema file accepts: {label}"


def test_events_say_where_in_the_source(schema, factory):
    """Version 2: frame index and media time (files) on every track event; version 1 events still read."""
    at = FramePosition(211, 7.04)
    event = factory.track_ended(6, "lin", 4.2, 0.9, (1, 2, 3, 4), (640, 360), at=at)
    data = json.loads(event.to_json())
    assert data["schema_version"] == SCHEMA_VERSION and data["frame_index"] == 211 and data["media_time"] == 7.04
    live = json.loads(factory.track_started(1, (1, 2, 3, 4), (640, 360), at=FramePosition(5)).to_json())
    assert live["frame_index"] == 5 and live["media_time"] is None
    model = json.loads(factory.model_updated(["a"], {"a": 1}, 1.0, 0.5).to_json())
    assert model["frame_index"] is None and model["media_time"] is None
    validator = jsonschema.Draft202012Validator(schema)
    for d in (data, live, model):
        assert not list(validator.iter_errors(d))
    v1 = {k: v for k, v in data.items() if k not in ("frame_index", "media_time", "person_id", "unknown_id")} | {
        "schema_version": 1}
    validate_event(v1)  # an older event in the log
    assert not list(validator.iter_errors(v1))
    assert Event.from_dict(v1).to_dict() == v1  # read back and re-serialised as it was


def test_version_2_unknown_face_still_reads(schema, factory):
    """Version 3 added unknown_id to unknown_face: a version 2 one without it (an older log) still reads."""
    v4 = json.loads(factory.unknown_face(2, 6, (1, 2, 3, 4), (10, 10), unknown_id="u2").to_json())
    assert v4["schema_version"] == 4 and v4["unknown_id"] == "u2"
    v2 = {k: v for k, v in v4.items() if k not in ("unknown_id", "person_id")} | {"schema_version": 2}
    validate_event(v2)
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(v2))
    assert Event.from_dict(v2).to_dict() == v2


# version 3 events exactly as a version 3 agent logged them (older logs): every type, camera on model_updated
V3_LOG = [
    '{"schema_version":3,"event_id":"01JCZ3M2Q5V6W7X8Y9Z0A1B2C3","type":"identified","agent_id":"edge-7",'
    '"camera":"camera","timestamp":"2024-11-14T10:00:00.000Z","track_id":4,"name":"Person A","confidence":0.9,'
    '"votes":3,"box":{"left":1,"top":2,"right":30,"bottom":40},"frame":{"width":640,"height":360},'
    '"frame_index":12,"media_time":0.4,"previous_name":null}',
    '{"schema_version":3,"event_id":"01JCZ3M2Q5V6W7X8Y9Z0A1B2C4","type":"unknown_face","agent_id":"edge-7",'
    '"camera":"camera","timestamp":"2024-11-14T10:00:01.000Z","track_id":5,"name":null,"confidence":null,'
    '"votes":null,"box":{"left":1,"top":2,"right":30,"bottom":40},"frame":{"width":640,"height":360},'
    '"frame_index":40,"media_time":1.3,"attempts":6,"unknown_id":null}',
    '{"schema_version":3,"event_id":"01JCZ3M2Q5V6W7X8Y9Z0A1B2C5","type":"track_ended","agent_id":"edge-7",'
    '"camera":"camera","timestamp":"2024-11-14T10:00:02.000Z","track_id":5,"name":null,"confidence":null,'
    '"votes":null,"box":{"left":1,"top":2,"right":30,"bottom":40},"frame":{"width":640,"height":360},'
    '"frame_index":60,"media_time":2.0,"duration_s":1.0,"best_confidence":null}',
    '{"schema_version":3,"event_id":"01JCZ3M2Q5V6W7X8Y9Z0A1B2C6","type":"model_updated","agent_id":"edge-7",'
    '"camera":"camera","timestamp":"2024-11-14T10:00:03.000Z","track_id":null,"name":null,"confidence":null,'
    '"votes":null,"box":null,"frame":null,"frame_index":null,"media_time":null,"people":["Person A"],'
    '"counts":{"Person A":5},"training_s":0.2,"cv_score":null}',
    '{"schema_version":3,"event_id":"01JCZ3M2Q5V6W7X8Y9Z0A1B2C7","type":"reidentified","agent_id":"edge-7",'
    '"camera":"camera","timestamp":"2024-11-14T10:00:04.000Z","track_id":5,"name":"Person A","confidence":0.8,'
    '"votes":null,"box":null,"frame":null,"frame_index":null,"media_time":null,"unknown_id":"u1",'
    '"seen_at":"2024-11-14T10:00:01.000Z"}',
]


def test_version_3_events_still_read(schema):
    """Every type as a version 3 agent logged it (no person_id; a camera on model_updated; no unknown_id on
    track_ended) is valid to both validators and reads back byte-identical."""
    validator = jsonschema.Draft202012Validator(schema)
    for text in V3_LOG:
        event = Event.from_json(text)
        assert event.to_json() == text
        assert not list(validator.iter_errors(json.loads(text))), text


def test_factories_accept_numpy_values(factory):
    box = np.array([10.6, 20.2, 110.0, 140.9], dtype=np.float32)
    e = factory.unknown_face(np.int64(4), np.int64(6), box, (np.int64(640), np.int64(480)),
                             confidence=np.float32(0.25), votes=np.int64(1))
    d = json.loads(e.to_json())
    assert d["box"] == {"left": 11, "top": 20, "right": 110, "bottom": 141} and d["votes"] == 1
    ended = factory.track_ended(4, None, np.float64(2.5), np.float32(0.5), box, (640, 480), votes=np.int32(2))
    assert json.loads(ended.to_json())["votes"] == 2
    with pytest.raises(EventError, match="box"):
        factory.track_started(1, np.array([1.0, np.nan, 3.0, 4.0]), (10, 10))


def test_from_json_errors_are_clear():
    with pytest.raises(EventError, match="not valid JSON"):
        Event.from_json("{nope")
    with pytest.raises(EventError, match="expected a JSON object"):
        Event.from_json("[1, 2]")
    with pytest.raises(EventError, match="box"):
        EventFactory("a", "c").identified(1, "x", 0.5, 1, (1, 2, 3), (10, 10))


def test_thumbnail_on_a_real_photo(tmp_path):
    from agent.images import load_image

    photos = sorted(FR.glob("**/*.jpg"))
    if not photos:
        pytest.skip(f"no photos under {FR}")
    image = load_image(photos[0])
    h, w = image.shape[:2]
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    cfg = make_config(tmp_path, events={"thumbnails": True, "thumbnail_size": 64, "thumbnail_max_bytes": 8000})
    event = EventFactory.from_config(cfg).identified(1, "someone", 0.9, 2, box, (w, h), image=image)
    assert event.thumbnail
    raw = base64.b64decode(event.thumbnail)
    assert raw[:2] == b"\xff\xd8" and len(raw) <= 8000
    from PIL import Image

    assert max(Image.open(io.BytesIO(raw)).size) <= 64
    assert Event.from_json(event.to_json()).thumbnail == event.thumbnail
    # over the byte cap: left out, the event is still valid
    tiny = EventFactory("a", "c", thumbnails=True, thumbnail_size=64, thumbnail_max_bytes=50)
    assert tiny.identified(1, "x", 0.9, 2, box, (w, h), image=image).thumbnail is None
    # off by default
    assert EventFactory("a", "c").identified(1, "x", 0.9, 2, box, (w, h), image=image).thumbnail is None
    # a box outside the frame gives no thumbnail rather than an error
    blank = np.zeros((10, 10, 3), np.uint8)
    assert EventFactory("a", "c", thumbnails=True).track_started(1, (20, 20, 30, 30), (10, 10),
                                                                  image=blank).thumbnail is None


def test_examples_in_docs_are_valid(schema):
    from conftest import ROOT

    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    block = text.split("## Examples", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    validator = jsonschema.Draft202012Validator(schema)
    examples = [json.loads(line) for line in block.strip().splitlines()]
    assert {e["type"] for e in examples} == set(EVENT_TYPES)
    for e in examples:
        validate_event(e)
        assert not list(validator.iter_errors(e))
        assert Event.from_dict(e).to_json() == json.dumps(e, separators=(",", ":"))


def test_every_topic_the_service_publishes_is_documented():
    """Every topic of the tree (agent/topics.py) is in the topic tables of docs/events.md or
    docs/enrollment.md, and the health message has its payload described, like status and stats."""
    from conftest import ROOT

    from agent.topics import Topics

    t = Topics("<prefix>", "<agent_id>", "<discovery_prefix>")
    docs = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    enrollment = (ROOT / "docs" / "enrollment.md").read_text(encoding="utf-8")
    table = docs.split("## Topics", 1)[1].split("\n\n", 2)[1]
    for topic in (t.events, t.status, t.stats, t.health, f"{t.ha_base}/recognition", f"{t.ha_base}/last_person"):
        assert f"`{topic}`" in table, f"{topic} is not in the topic table"
    for topic in (t.enroll_fleet, t.enroll, t.enroll_result):
        assert f"`{topic}`" in docs + enrollment, f"{topic} is not documented"
    assert "Health message (`<prefix>/<agent_id>/health`" in docs
