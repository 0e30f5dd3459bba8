"""`forget` forgets (issue 25, point 8): after it, nothing of the person stays on the agent but the trash
(bounded by [enrollment] trash_days; `--purge` empties it now): not their name or face thumbnails in the event
log (nor in its file's free pages), not in model_updated, not in the kept tune report, not the faces the camera
kept of them (named, re-identified or rejected as them) nor their photos' cached embeddings. Real models, real
SQLite files, the real CLI."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest
from conftest import FR

from agent.cli import main
from agent.config import load_config
from agent.evaluation.report import save_last
from agent.events import EventFactory, format_timestamp
from agent.files import file_sha256
from agent.gallery import Gallery
from agent.sightings import SightingStore
from agent.store import EventStore
from agent.sync import enrollment_protocol as proto

KNN = FR / "examples" / "knn_examples"
FACE = np.full((120, 160, 3), 90, dtype=np.uint8)


@pytest.fixture
def agent(tmp_path, capsys, shared):
    (tmp_path / "agent.toml").write_text('[paths]\nfaces = "faces"\nstorage = "storage"\nsvm = "svm"\n'
                                         'engines = "engines"\n[mqtt]\nenabled = false\n[events]\n'
                                         'thumbnails = true\n[sightings]\nprivacy = "all"\n')

    def run(*argv: str) -> tuple[int, str]:
        code = main(["-q", "-c", str(tmp_path / "agent.toml"), *argv])
        return code, capsys.readouterr().out

    for person in ("obama", "biden"):
        assert run("enroll", person, *map(str, sorted((KNN / "train" / person).iterdir())))[0] == 0
    return run, load_config(tmp_path / "agent.toml")


def _log_events(cfg) -> None:
    """Two tracks of obama (one identified live, one unknown then re-identified), one of biden, a model."""
    from agent.people import PersonIds

    factory = EventFactory.from_config(cfg, person_id=PersonIds(cfg.path("storage")))
    t0 = time.time() - 100
    box, size = (10, 10, 60, 70), (160, 120)
    events = [factory.track_started(1, box, size, image=FACE), factory.identified(1, "obama", 0.9, 3, box, size,
                                                                                   image=FACE),
              factory.track_ended(1, "obama", 2.0, 0.9, box, size),
              factory.track_started(2, box, size, image=FACE), factory.identified(2, "biden", 0.9, 3, box, size,
                                                                                   image=FACE),
              factory.identified(2, "obama", 0.8, 3, box, size, previous_name="biden", image=FACE),
              factory.identified(2, "biden", 0.9, 3, box, size, previous_name="obama", image=FACE),
              factory.track_ended(2, "biden", 2.0, 0.9, box, size),
              factory.track_started(3, box, size, image=FACE),
              factory.unknown_face(3, 5, box, size, image=FACE, unknown_id="u1"),
              factory.track_ended(3, None, 2.0, None, box, size),
              factory.track_started(4, box, size, image=FACE), factory.identified(4, "biden", 0.9, 3, box, size,
                                                                                   image=FACE),
              factory.track_ended(4, "biden", 2.0, 0.9, box, size),
              factory.model_updated(["biden", "obama"], {"biden": 2, "obama": 2}, 1.0, None),
              factory.reidentified(3, "obama", 0.7, "u1", t0 + 9)]
    store = EventStore(cfg)
    for i, event in enumerate(events):
        event.timestamp = format_timestamp(t0 + i)
        assert event.thumbnail or event.type in ("track_ended", "model_updated", "reidentified")
        store.add(event)
    store.close()


def _keep_sightings(cfg) -> SightingStore:
    store = SightingStore(cfg)
    store.folder.mkdir(parents=True, exist_ok=True)
    for i, (name, rejected) in enumerate([("obama", None), ("obama", None), (None, "obama"), ("biden", None)]):
        for kind in ("chip", "context"):
            (store.folder / f"s{i}-{kind}.jpg").write_bytes(b"jpeg of a face")
        store.db["sightings"].insert({"run": "r1", "track_id": 10 + i, "t": time.time(), "name": name,
                                      "rejected": rejected, "embedding": np.ones(128, np.float32).tobytes(),
                                      "chip": f"s{i}-chip.jpg", "context": f"s{i}-context.jpg", "bytes": 28})
    store.db.conn.commit()
    return store


def _file_bytes(folder, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(pattern))


def test_forget_erases_the_person_everywhere_on_the_agent(tmp_path, agent):
    run, cfg = agent
    storage = tmp_path / "storage"
    _log_events(cfg)
    _keep_sightings(cfg).close()
    save_last(cfg, "tune", "tune on 4 photos\n  no_face        obama/a.jpg: no face found\n",
              {"per_person": {"obama": 0.9, "biden": 0.8}, "failures": [{"path": "raw/obama/a.jpg"}]}, None)
    photos = sorted((tmp_path / "faces" / "train" / "raw" / "obama").iterdir())
    shas = [file_sha256(p) for p in photos]
    assert b"obama" in _file_bytes(storage, "events.db*")
    from agent.people import People

    with People.of(cfg) as people:
        obama_id = people.id_of("obama")
    assert obama_id and obama_id.encode() in _file_bytes(storage, "events.db*")

    code, out = run("forget", "obama")
    assert code == 0 and "kept 30 days" in out

    events = EventStore(cfg)
    rows = events.query(limit=100)
    events.close()
    payloads = [json.loads(r.payload) for r in rows]
    assert not [p for p in payloads if "obama" in json.dumps(p) or p.get("person_id") == obama_id]
    assert all(r.name != "obama" for r in rows)
    by_track = {}
    for p in payloads:
        by_track.setdefault(p.get("track_id"), []).append(p)
    # obama's own track and the unknown track that was him: no thumbnail, no name; the identifications gone
    assert [p["type"] for p in by_track[1]] == ["track_started", "track_ended"]
    assert not [p for p in by_track[1] + by_track[3] if "thumbnail" in p or p.get("name")]
    assert "reidentified" not in [p["type"] for p in payloads]
    # a track that was briefly him: his identification goes, biden's stay (without his name as previous_name)
    assert [(p["type"], p.get("name"), p.get("previous_name")) for p in by_track[2] if p["type"] == "identified"] \
        == [("identified", "biden", None), ("identified", "biden", None)]
    # someone else's track keeps everything
    assert [bool(p.get("thumbnail")) for p in by_track[4]] == [True, True, False]
    [model] = [p for p in payloads if p["type"] == "model_updated"]
    assert model["people"] == ["biden"] and model["counts"] == {"biden": 2}
    # not even in the database's free pages or its WAL
    assert b"obama" not in _file_bytes(storage, "events.db*")
    assert f'"{obama_id}"'.encode() not in _file_bytes(storage, "events.db*")
    # the people registry keeps the id (never given again) but none of the names
    with People.of(cfg) as people:
        assert people.name_of(obama_id) is None and people.id_of("obama") is None

    store = SightingStore(cfg)
    assert [r["name"] for r in store.sightings()] == ["biden"]
    store.close()
    assert sorted(p.name for p in (storage / "sightings").iterdir()) == ["s3-chip.jpg", "s3-context.jpg"]
    assert b"obama" not in _file_bytes(storage, "sightings.db*")

    cache = sqlite3.connect(storage / "embeddings.db")
    assert not cache.execute(f"SELECT COUNT(*) FROM photos WHERE sha256 IN ({','.join('?' * len(shas))})",
                             shas).fetchone()[0]
    cache.close()
    reports = storage / "reports"
    text = (reports / "tune.txt").read_text()
    assert "obama" not in text and "(forgotten)/a.jpg" in text
    assert json.loads((reports / "tune.json").read_text())["per_person"] == {"(forgotten)": 0.9, "biden": 0.8}

    # the trash: kept trash_days, then deleted at the next start or retrain; --purge deletes it now
    gallery = Gallery(cfg)
    [trash] = list(gallery.trash.iterdir())
    assert sorted(p.name for p in trash.iterdir()) == sorted(p.name for p in photos)
    assert gallery.purge_trash(now=time.time() + 29 * 86400) == 0 and trash.is_dir()
    assert gallery.purge_trash(now=time.time() + 31 * 86400) == 1 and not trash.exists()
    gallery.close()
    code, out = run("forget", "biden", "--purge")
    assert code == 0 and "their photos were deleted" in out
    assert not list((tmp_path / "faces" / "train" / "trash").iterdir())


def test_remote_forget_carries_purge_signed():
    secret = b"k" * 32
    fields = proto.build_request(proto.FORGET, "ops", secret, person="obama", purge=True)
    assert fields["purge"] is True and fields[proto.SIGNATURE] == proto.sign(proto.signed_form(fields), secret)
    assert proto.validate(fields, 1000).purge
    assert not proto.validate(proto.build_request(proto.FORGET, "ops", secret, person="obama"), 1000).purge
    with pytest.raises(proto.ProtocolError, match="purge must be true or false"):
        proto.validate({**fields, "purge": "yes"}, 1000)
