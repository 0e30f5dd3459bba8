"""Sightings and unknown people, with the real models on the shared photos and clips built from them.

- the store: real chips and embeddings from LFW photos; bounds (count, MB, days) hold, the oldest unknown
  sightings go first; `forget` removes a person's sightings; a track joins the cluster of the same person;
- end to end through `face-agent run` on a clip of strangers nobody enrolled (bench/bench_sightings.py):
  every cluster holds one person, one cluster per person, a stranger seen again is announced with the
  cluster's `unknown_id`, `face-agent unknowns --json` lists chips that exist.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CliAgent, make_config

from agent.config import load_config
from agent.events import parse_timestamp as parse_ts
from agent.sightings import (
    LAYOUT_VERSION,
    SIGHTING_COLUMNS,
    Candidate,
    SightingStore,
    TrackFaces,
    cluster_label,
    context_crop,
    parse_cluster,
)
from bench import bench_sightings as bs
from bench import identity_clips as ic

ROOT = Path(__file__).resolve().parents[1]


def _faces(analyzer, photos: list[Path], quality: float = 0.8) -> list[Candidate]:
    """Real candidates: chip, context crop and embedding of the face in each photo."""
    from agent.images import load_image

    out = []
    for photo in photos:
        rgb = load_image(photo)
        detections = analyzer.detect(rgb)
        assert detections, photo
        face = max(detections, key=lambda d: d.area)
        chips, embeddings = analyzer.embed(rgb, [face])
        out.append(Candidate(quality, time.time(), embeddings[0], chips[0], context_crop(rgb, face.box, 2.0)))
    return out


@pytest.fixture(scope="module")
def lfw_faces(analyzer):
    if not ic.LFW.is_dir():
        pytest.skip(f"{ic.LFW} not found")
    people = ic.lfw_people()[10:13]
    return {p.name: _faces(analyzer, ic.lfw_photos(p)[:4]) for p in people}


def _track(faces: list[Candidate], track_id: int, name: str | None = None, t: float | None = None) -> TrackFaces:
    t = time.time() if t is None else t
    for f in faces:
        f.t = t
    return TrackFaces(track_id, t, t + 1, name, None, list(faces), t, t + 1)


def test_a_track_joins_the_cluster_of_the_same_person(tmp_path, lfw_faces):
    store = SightingStore(make_config(tmp_path))
    a, b, c = lfw_faces
    store.add_track("r1", _track(lfw_faces[a][:2], 1))
    store.add_track("r1", _track(lfw_faces[b][:2], 2))
    store.add_track("r2", _track(lfw_faces[a][2:], 1))  # the same person, other photos, another run
    store.add_track("r2", _track(lfw_faces[c][:2], 2))
    clusters = store.clusters()
    assert [cl["sightings"] for cl in clusters] == [4, 2, 2]
    assert clusters[0]["tracks"] == 2
    assert all(Path(chip).is_file() for cl in clusters for chip in cl["chips"])
    assert parse_cluster(clusters[0]["id"]) == 1 and cluster_label(7) == "u7"
    with pytest.raises(ValueError):
        parse_cluster("alice")
    store.close()


def test_bounds_hold_oldest_unknown_first(tmp_path, lfw_faces):
    cfg = make_config(tmp_path, sightings={"max_count": 6, "max_days": 1.0})
    store = SightingStore(cfg)
    a, b, c = lfw_faces
    old = time.time() - 3600
    store.add_track("r", _track(lfw_faces[a][:2], 1, name="alice", t=old - 10))  # named, oldest
    store.add_track("r", _track(lfw_faces[b][:2], 2, t=old))  # unknown, older
    store.add_track("r", _track(lfw_faces[c][:2], 3, t=old + 10))
    store.add_track("r", _track(lfw_faces[b][2:], 4, t=old + 20))  # 8 > 6: the two oldest unknown go
    rows = store.sightings()
    assert len(rows) == 6
    assert {r["track_id"] for r in rows} == {1, 3, 4}  # the named ones stay although they are older
    files = {p.relative_to(store.folder).as_posix() for p in store.folder.rglob("*.jpg")}
    assert files == {r[k] for r in rows for k in ("chip", "context")}  # deleted rows left no files
    size = store.totals()["bytes"]
    assert size == sum((store.folder / f).stat().st_size for f in files)
    # MB bound: room for about two sightings
    store.s = type(store.s)(**{**vars(store.s), "max_mb": 2.5 * size / len(rows) / 1e6})
    store.enforce_bounds()
    rows = store.sightings()
    assert len(rows) == 2 and all(r["name"] == "alice" for r in rows)
    assert store.totals()["bytes"] <= 2.5 * size / 6
    # days bound: everything older than max_days goes
    store.enforce_bounds(now=time.time() + 2 * 86400)
    assert store.sightings() == [] and not list(store.folder.rglob("*.jpg"))
    store.close()


def test_forget_removes_the_persons_sightings(tmp_path, lfw_faces):
    from agent.gallery import Gallery

    cfg = make_config(tmp_path)
    store = SightingStore(cfg)
    a, b, _ = lfw_faces
    store.add_track("r", _track(lfw_faces[a][:2], 1, name="alice"))
    store.add_track("r", _track(lfw_faces[b][:2], 2))
    store.mark_named(parse_cluster(store.clusters()[0]["id"]), "bob")  # named from its cluster
    store.close()
    gallery = Gallery(cfg)
    for person in ("alice", "bob"):
        (gallery.raw / person).mkdir(parents=True)
    gallery.forget("alice")
    store = SightingStore(cfg)
    assert {r["track_id"] for r in store.sightings()} == {2}
    store.close()
    gallery.forget("bob")
    store = SightingStore(cfg)
    assert store.sightings() == [] and store.clusters() == []
    assert not list(store.folder.rglob("*.jpg"))
    store.close()


def test_merge_moves_the_sightings_and_the_next_track_joins_the_merged_cluster(tmp_path, lfw_faces, capsys):
    """`face-agent unknowns merge u2 u1`: u2's sightings are u1's; the cluster model of another process (the
    running agent, which matched before the merge) sees it: the next track of u2's person joins u1, and an
    event that still says u2 reaches u1."""
    from agent.cli import main
    from agent.naming import NamingError, merge_unknowns

    (tmp_path / "agent.toml").write_text("[mqtt]\nenabled = false\n")
    cfg = make_config(tmp_path)
    agent_side, console_side = SightingStore(cfg), SightingStore(cfg)
    a, b, c = lfw_faces
    agent_side.add_track("r", _track(lfw_faces[a][:2], 1))
    agent_side.add_track("r", _track(lfw_faces[b][:2], 2))
    agent_side.add_track("r", _track(lfw_faces[c][:2], 3))
    assert [cl["id"] for cl in console_side.clusters()] == ["u1", "u2", "u3"]
    assert agent_side.match(np.stack([f.embedding for f in lfw_faces[b][2:]])).name == "2"  # model cached
    assert main(["-q", "-c", str(tmp_path / "agent.toml"), "unknowns", "merge", "u2", "u1"]) == 0
    assert "u2 merged into u1: 2 sightings moved" in capsys.readouterr().out
    clusters = console_side.clusters()
    assert [(cl["id"], cl["sightings"], cl["tracks"], cl["merged"]) for cl in clusters] == [
        ("u1", 4, 2, ["u2"]), ("u3", 2, 1, [])]
    assert all(Path(chip).is_file() for chip in clusters[0]["chips"])
    # the agent's process: its cached model is rebuilt, b's next track joins u1
    assert agent_side.match(np.stack([f.embedding for f in lfw_faces[b][2:]])).name == "1"
    agent_side.add_track("r", _track(lfw_faces[b][2:], 4))
    assert {r["cluster"] for r in agent_side.by_track(4)} == {1}
    assert agent_side.assign_cluster(np.stack([f.embedding for f in lfw_faces[c][2:]]), hint=2) == 1
    # what cannot be merged says why; a merged id points at its cluster
    for source, target, message in (("u2", "u3", "u2 was merged into u1: use u1"), ("u1", "u1", "into itself"),
                                    ("u9", "u1", "no unknown person u9"), ("bob", "u1", "not an unknown person")):
        with pytest.raises(NamingError, match=message):
            merge_unknowns(console_side, source, target)
    console_side.mark_named(3, "carol")
    with pytest.raises(NamingError, match="u3 is named carol: name u1 as carol instead"):
        merge_unknowns(console_side, "u1", "u3")
    assert main(["-q", "-c", str(tmp_path / "agent.toml"), "unknowns", "merge", "u1", "u3"]) == 1
    assert "is named carol" in capsys.readouterr().err
    with console_side.db.conn:
        console_side.db.execute("UPDATE clusters SET name = NULL WHERE id = 3")
    # a merge chain: u1 (with u2) into u3; both old ids point at u3, and deleting u3 drops them
    merge_unknowns(console_side, "u1", "u3")
    assert [(cl["id"], cl["merged"], cl["sightings"]) for cl in console_side.clusters()] == [("u3", ["u1", "u2"], 8)]
    assert console_side.cluster(2)["merged_into"] == 3 and console_side.cluster(1)["merged_into"] == 3
    console_side.enforce_bounds(now=time.time() + 40 * 86400)  # every sighting too old
    assert console_side.cluster(3) is None and console_side.cluster(1) is None and console_side.cluster(2) is None
    agent_side.close()
    console_side.close()


def test_an_ignored_unknown_person_stays_hidden_and_is_not_offered_for_naming(tmp_path, lfw_faces, capsys):
    from agent.cli import main
    from agent.gallery import Gallery
    from agent.naming import NamingError, ignore_unknown, merge_unknowns, name_cluster

    (tmp_path / "agent.toml").write_text("[mqtt]\nenabled = false\n")
    config = str(tmp_path / "agent.toml")
    cfg = make_config(tmp_path)
    store = SightingStore(cfg)
    a, b, c = lfw_faces
    store.add_track("r", _track(lfw_faces[a][:2], 1))
    store.add_track("r", _track(lfw_faces[b][:2], 2))
    assert main(["-q", "-c", config, "unknowns", "ignore", "u1"]) == 0
    assert "u1 ignored" in capsys.readouterr().out
    assert [cl["id"] for cl in store.clusters()] == ["u2"]
    assert [(cl["id"], cl["ignored"]) for cl in store.clusters(ignored=True)] == [("u1", True)]
    assert [cl["id"] for cl in store.clusters(ignored=None)] == ["u1", "u2"]
    assert main(["-q", "-c", config, "unknowns", "--json"]) == 0
    assert [cl["id"] for cl in json.loads(capsys.readouterr().out)] == ["u2"]
    assert main(["-q", "-c", config, "unknowns", "--ignored"]) == 0
    assert "(ignored)" in capsys.readouterr().out
    # the person's next track still joins the ignored cluster: it stays hidden
    assert store.match(np.stack([f.embedding for f in lfw_faces[a][2:]])).name == "1"
    store.add_track("r", _track(lfw_faces[a][2:], 3))
    assert [cl["id"] for cl in store.clusters()] == ["u2"] and store.clusters(ignored=True)[0]["tracks"] == 2
    gallery = Gallery(cfg)
    with pytest.raises(NamingError, match="u1 is ignored: `face-agent unknowns unignore u1` first"):
        name_cluster(gallery, store, "u1", "alice", retrain=False)
    gallery.close()
    # merging into an ignored one (or an ignored one into another) keeps the person ignored
    merge_unknowns(store, "u2", "u1")
    assert store.clusters() == [] and store.clusters(ignored=True)[0]["merged"] == ["u2"]
    assert main(["-q", "-c", config, "unknowns", "unignore", "u1"]) == 0
    assert [cl["id"] for cl in store.clusters()] == ["u1"] and store.clusters(ignored=True) == []
    assert main(["-q", "-c", config, "unknowns", "ignore", "u7"]) == 1
    assert "no unknown person u7" in capsys.readouterr().err
    store.mark_named(1, "alice")
    with pytest.raises(NamingError, match="forget alice"):
        ignore_unknown(store, "u1")
    store.close()


def test_a_layout_1_sightings_file_gets_merge_and_ignore_columns(tmp_path, lfw_faces):
    """A sightings.db written before merge/ignore (layout 1) is migrated in place: data kept, new columns."""
    import sqlite3

    folder = tmp_path / "storage"
    folder.mkdir()
    conn = sqlite3.connect(folder / "sightings.db")
    conn.execute("CREATE TABLE clusters (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, name TEXT)")
    conn.execute("INSERT INTO clusters (created, name) VALUES (1.0, NULL), (2.0, 'bob')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SightingStore(make_config(tmp_path))
    a = next(iter(lfw_faces))
    store.add_track("r", _track(lfw_faces[a][:2], 1))  # the sightings table, created as before
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION
    assert {"merged_into", "ignored"} <= set(store.db["clusters"].columns_dict)
    assert store.cluster(2)["name"] == "bob" and store.cluster(2)["ignored"] is None
    store.close()


def test_a_layout_2_sightings_file_gets_the_camera_column(tmp_path, lfw_faces):
    """A sightings.db kept before the camera was recorded (layout 2) is migrated in place: its faces stay, with no
    camera; a new track's camera is kept, and an unknown person's card lists the cameras they were seen on."""
    import sqlite_utils

    folder = tmp_path / "storage"
    folder.mkdir()
    old = sqlite_utils.Database(folder / "sightings.db")
    old["sightings"].create({k: v for k, v in SIGHTING_COLUMNS.items() if k != "camera"}, pk="id")
    old.execute("CREATE TABLE clusters (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, name TEXT, "
                "merged_into INTEGER, ignored REAL)")
    old.execute("INSERT INTO clusters (created) VALUES (1.0)")
    a, b = list(lfw_faces)[:2]
    face = lfw_faces[a][0]
    old["sightings"].insert({"run": "r0", "track_id": 9, "t": time.time() - 60, "cluster": 1, "quality": 0.5,
                             "embedding": face.embedding.astype("float32").tobytes(), "chip": "x-chip.jpg"})
    old.execute("PRAGMA user_version = 2")
    old.conn.commit()
    old.close()
    store = SightingStore(make_config(tmp_path))
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION == 3
    assert store.sightings()[0]["camera"] is None  # kept before: not known
    track = _track(lfw_faces[b][:2], 1)
    track.camera = "porch"
    store.add_track("r1", track)
    assert {r["camera"] for r in store.sightings()} == {None, "porch"}
    assert [c["cameras"] for c in store.clusters()] == [[], ["porch"]]
    store.close()


def test_a_full_disk_keeps_nothing_half_written(tmp_path, lfw_faces, disk):  # noqa: F811
    """No room for the crops: a clear StorageError, no files without their rows, what is stored stays
    (a real small tmpfs: tests/test_storage_faults.py, root only, else skipped)."""
    from agent.files import StorageError

    store = SightingStore(make_config(tmp_path, paths={"storage": str(disk.path / "storage")}))
    a, b, _ = lfw_faces
    store.add_track("r", _track(lfw_faces[a][:2], 1))
    before = store.sightings()
    disk.fill()
    with pytest.raises(StorageError, match="cannot keep the faces of track 2"):
        store.add_track("r", _track(lfw_faces[b], 2))
    assert store.sightings() == before
    files = {p.relative_to(store.folder).as_posix() for p in store.folder.rglob("*") if p.is_file()}
    assert files == {r[k] for r in before for k in ("chip", "context")}
    store.close()


def test_a_corrupt_sightings_file_is_salvaged_at_start(tmp_path, lfw_faces, capsys, caplog):
    """Issue 25.1: a page of sightings.db overwritten (a bad SD card): the first process to open it checks it,
    salvages every readable row into a new file and keeps the damaged one beside it, saying so once;
    `unknowns`, `name` and the store's writes then work (no traceback, no "check that ... is writable")."""
    import logging
    import shutil

    from agent import sightings as sightings_module
    from agent.cli import main

    conf = tmp_path / "agent.toml"
    conf.write_text('[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n'
                    '[mqtt]\nenabled = false\n[sightings]\nmax_count = 100000\n')
    cfg = load_config(conf)
    store = SightingStore(cfg)
    people = list(lfw_faces)
    for i in range(150):  # 4 faces a track, ~600 rows: many pages
        store.add_track("r", _track(lfw_faces[people[i % 3]], i + 1))
    clusters_before = {c["id"] for c in store.clusters()}
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = cfg.path("storage") / "sightings.db"
    pages = db.stat().st_size // 4096
    with open(db, "r+b") as f:
        f.seek(4096 * (pages // 2))
        f.write(os.urandom(4096))
    damaged = db.read_bytes()
    sightings_module._CHECKED.clear()  # as in a new process

    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(conf), "unknowns", "--json"]) == 0
    out, err = capsys.readouterr()
    clusters = json.loads(out)
    assert {c["id"] for c in clusters} == clusters_before, clusters
    assert 300 < sum(c["sightings"] for c in clusters) < 600
    salvaged = [r.getMessage() for r in caplog.records if "salvaged" in r.getMessage()]
    assert len(salvaged) == 1 and "sightings.db is corrupt" in salvaged[0], caplog.text
    assert "Traceback" not in err and "writable" not in caplog.text
    moved = [p for p in db.parent.iterdir() if p.name.startswith("sightings.db.corrupt-") and "-wal" not in
             p.name and "-shm" not in p.name]
    assert len(moved) == 1 and moved[0].read_bytes() == damaged  # kept byte for byte
    caplog.clear()

    # said once: the next opens in this process do not check or log again; the salvaged file works
    store = SightingStore(cfg)
    assert store.add_track("r", _track(lfw_faces[people[0]][:2], 999))
    assert [c["id"] for c in store.clusters()][:1] == sorted(clusters_before, key=parse_cluster)[:1]
    new = store.db.execute("INSERT INTO clusters (created) VALUES (0)").lastrowid
    assert new > max(parse_cluster(c) for c in clusters_before)  # AUTOINCREMENT carried over: no id twice
    store.close()
    assert "corrupt" not in caplog.text

    # damaged again while running: writing says the file is damaged (not "writable") and salvages it once
    shutil.copy(moved[0], db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    from agent.sightings import Sightings

    keeper = Sightings(cfg, run="r2")
    sightings_module._CHECKED.clear()
    shutil.copy(moved[0], db)  # damaged under the open connection
    keeper._queue.put(_track(lfw_faces[people[1]][:2], 5))
    keeper.close()
    assert "writable" not in caplog.text
    assert keeper.stored == 2 and caplog.text.count("salvaged") == 1, caplog.text
    # the salvaged file keeps u1 (every cluster, asserted above) and its faces spread over every page: it is named
    code = main(["--config", str(conf), "name", "u1", "Some One"])
    out, err = capsys.readouterr()
    assert code == 0 and "u1 is now Some One" in out, (code, out, err)
    assert "Traceback" not in err and "DatabaseError" not in err, err


# ------------------------------------------------------------------------------------------- end to end


class Agent(CliAgent):
    """`face-agent` with its own config in a temporary folder (MQTT off), as a user runs it."""

    def __init__(self, folder: Path, toml: str = "") -> None:
        super().__init__(folder, '[mqtt]\nenabled = false\n[sightings]\nprivacy = "all"\n' + toml)

    def unknowns(self) -> list[dict]:
        return json.loads(self("unknowns", "--json").stdout)


@pytest.fixture(scope="module")
def strangers(tmp_path_factory):
    """A clip of 4 strangers, 3 appearances each (hard cuts), run once with nobody enrolled."""
    if not ic.LFW.is_dir():
        pytest.skip(f"{ic.LFW} not found")
    folder = tmp_path_factory.mktemp("strangers")
    agent = Agent(folder / "agent")
    clip = bs.strangers_clip(4, 3)
    video = ic.render(clip, folder / "strangers.mp4")
    events = agent.run(video)
    return agent, clip, video, events


@pytest.mark.slow
def test_clusters_each_hold_one_person(strangers):
    agent, clip, _, events = strangers
    clusters = agent.unknowns()
    sightings = bs.stored_sightings(agent.folder)
    scores = bs.cluster_scores(clusters, sightings, bs.track_people(clip, events))
    assert scores["purity"] == 1.0, scores
    assert scores["clusters"] == scores["people"] == 4, scores
    assert not scores["people_without_cluster"]
    for c in clusters:
        assert c["tracks"] >= 3 and c["name"] is None
        assert c["representative"] == c["chips"][0] and all(Path(p).is_file() for p in c["chips"])
    # each track keeps at most per_track faces
    per_track: dict = {}
    for s in sightings:
        per_track[s["track_id"]] = per_track.get(s["track_id"], 0) + 1
    assert max(per_track.values()) <= load_config(agent.folder / "agent.toml").sightings.per_track
    text = agent("unknowns").stdout
    assert all(c["id"] in text for c in clusters)


def test_a_stranger_seen_again_is_announced_with_their_unknown_id(strangers):
    agent, clip, _, events = strangers
    people = bs.track_people(clip, events)
    ids: dict[str, set] = {}
    first_round = clip.frames // 3
    first: dict[str, str] = {}
    for e in events:
        if e["type"] == "unknown_face":
            assert e["schema_version"] == 4 and e["unknown_id"] is not None  # the first visit too
            if e["frame_index"] < first_round:
                first[people[e["track_id"]]] = e["unknown_id"]  # a new stranger: a new unknown person
            else:
                ids.setdefault(people[e["track_id"]], set()).add(e["unknown_id"])
    assert len(set(first.values())) == len(first) == 4, first  # four new people, four new ids
    assert len(ids) == 4, ids  # every stranger was recognised as seen before at a later appearance
    assert all(v == {first[who]} for who, v in ids.items()), (first, ids)  # always as the one first given
    # the faces are kept with the camera the tracks were seen on, and each unknown person's card says it
    camera = {e["camera"] for e in events if e["type"] == "track_ended"}
    assert len(camera) == 1 and None not in camera, camera
    assert {s["camera"] for s in bs.stored_sightings(agent.folder)} == camera
    assert all(c["cameras"] == sorted(camera) for c in agent.unknowns())


def _people_of_clusters(agent: Agent, clip: ic.Clip, events: list[dict]) -> dict[str, str]:
    """cluster id -> the person (LFW folder name) whose sightings it holds."""
    people = bs.track_people(clip, events)
    out = {}
    for s in bs.stored_sightings(agent.folder):
        if s["cluster"] is not None:
            out[s["cluster"]] = people[s["track_id"]].removeprefix("stranger:")
    return out


@pytest.mark.slow
def test_naming_an_unknown_person_names_them_in_the_next_run(strangers, tmp_path):
    """`face-agent name u<n> PERSON` enrolls the cluster's faces: the next run names that person from other
    photos; the earlier unknown tracks of them are re-identified; another stranger stays unknown."""
    agent, clip, _, events = strangers
    who = _people_of_clusters(agent, clip, events)
    unknown_id, folder_name = sorted(who.items())[0]
    out = agent("name", unknown_id, "visitor")
    assert "is now visitor" in out.stdout, out.stdout
    cluster = next(c for c in agent.unknowns() if c["id"] == unknown_id)
    assert cluster["name"] == "visitor"
    people = json.loads(agent("people", "--json").stdout)
    assert 1 <= people["visitor"]["photos"] <= 5
    # every earlier unknown track of that person is re-identified, nobody else's
    reid = [e for e in agent.events() if e["type"] == "reidentified"]
    tracks = bs.track_people(clip, events)
    assert reid and all(e["name"] == "visitor" and e["unknown_id"] == unknown_id for e in reid)
    assert {tracks[e["track_id"]] for e in reid} == {"stranger:" + folder_name}
    assert len(reid) == cluster["tracks"]
    assert "reidentified" not in agent("name", unknown_id, "visitor").stdout  # once only
    # a new run: that person from photos never seen, then a stranger never seen
    person = next(p for p in ic.lfw_people() if p.name == folder_name)
    other = ic.lfw_people()[60]
    new = ic.Clip("again", 80, [ic.Actor("visitor", ic.lfw_photos(person)[8], 0, 40),
                                ic.Actor("stranger:" + other.name, ic.lfw_photos(other)[8], 40, 80)],
                  scenes=[ic.Scene(0, 40, 11), ic.Scene(40, 80, 12)])
    run = agent.run(ic.render(new, tmp_path / "again.mp4"))
    named = [e for e in run if e["type"] == "identified"]
    assert named and all(e["name"] == "visitor" and e["frame_index"] < 40 for e in named), named
    assert any(e["type"] == "unknown_face" and e["frame_index"] >= 40 for e in run)


def test_name_errors_are_clear(strangers):
    agent = strangers[0]
    out = agent("name", "u999", "x", check=False)
    assert out.returncode == 1 and "no unknown person u999" in out.stderr
    out = agent("name", "bob", "x", check=False)
    assert out.returncode == 1 and "is not an unknown person's id" in out.stderr
    out = agent("name", "--track", "9999", "x", check=False)
    assert out.returncode == 1 and "no faces of track 9999" in out.stderr
    out = agent("name", "x", check=False)
    assert out.returncode == 2


@pytest.mark.slow
def test_a_rejected_identification_is_not_repeated(tmp_path):
    """A gate loose enough to name a stranger as the one enrolled person: after `reject EVENT_ID` the same
    stranger is unknown on the next run, and the enrolled person is still named."""
    if not ic.LFW.is_dir():
        pytest.skip(f"{ic.LFW} not found")
    agent = Agent(tmp_path / "agent", "[recognition]\nmargin_weight = 5.0\nmax_margin = 0.3\n")
    alice, stranger = ic.lfw_people()[0], ic.lfw_people()[1]  # as in ic.cast(): photos 0-4 enroll
    agent("enroll", "alice", *map(str, ic.lfw_photos(alice)[:5]))
    clip = ic.Clip("wrong", 80, [ic.Actor("stranger:x", ic.lfw_photos(stranger)[5], 0, 40),
                                 ic.Actor("alice", ic.lfw_photos(alice)[5], 40, 80)],
                   scenes=[ic.Scene(0, 40, 21), ic.Scene(40, 80, 22)])
    video = ic.render(clip, tmp_path / "wrong.mp4")
    before = agent.run(video)
    wrong = [e for e in before if e["type"] == "identified" and e["frame_index"] < 40]
    assert wrong and wrong[0]["name"] == "alice", before  # the loose gate names the stranger alice
    out = agent("reject", wrong[0]["event_id"])
    assert "is not alice" in out.stdout
    assert (agent.folder / "faces" / "train" / "negatives" / "alice.npy").is_file()
    after = agent.run(video)
    assert not [e for e in after if e["type"] == "identified" and e["frame_index"] < 40], after
    assert any(e["type"] == "unknown_face" and e["frame_index"] < 40 for e in after)
    assert any(e["type"] == "identified" and e["name"] == "alice" and e["frame_index"] >= 40 for e in after)
    # the rejected faces became an unknown person; a model_updated/track event cannot be rejected
    assert agent.unknowns()
    ended = next(e for e in after if e["type"] == "track_ended")
    out = agent("reject", ended["event_id"], check=False)
    assert out.returncode == 1 and "only an identification" in out.stderr
    out = agent("reject", "01M8M3ATTSS776S3QMMFD5038S", check=False)
    assert out.returncode == 1 and "no event" in out.stderr


@pytest.mark.slow
def test_after_a_retrain_the_running_agent_reidentifies_recent_unknown_tracks(tmp_path):
    """Default privacy ("unknown"): a stranger's track is kept as an unknown person; once the person is
    enrolled (`face-agent enroll`), the agent's next start retrains and logs a `reidentified` event for
    that earlier track (its track id, the old unknown id, the new name, when it was seen)."""
    if not ic.LFW.is_dir():
        pytest.skip(f"{ic.LFW} not found")
    agent = Agent(tmp_path / "agent")
    (agent.folder / "agent.toml").write_text("[mqtt]\nenabled = false\n")  # privacy: the default
    carol, other = ic.lfw_people()[2], ic.lfw_people()[4]
    clip = ic.Clip("carol", 80, [ic.Actor("stranger:carol", ic.lfw_photos(carol)[6], 0, 40),
                                 ic.Actor("stranger:other", ic.lfw_photos(other)[6], 40, 80)],
                   scenes=[ic.Scene(0, 40, 31), ic.Scene(40, 80, 32)])
    video = ic.render(clip, tmp_path / "carol.mp4")
    first = agent.run(video)
    unknown = {e["track_id"]: e for e in first if e["type"] == "unknown_face"}
    carol_track = next(t for t, e in unknown.items() if e["frame_index"] < 40)
    clusters = agent.unknowns()
    assert len(clusters) == 2
    agent("enroll", "carol", *map(str, ic.lfw_photos(carol)[:5]))
    empty = ic.render(ic.Clip("empty", 10, []), tmp_path / "empty.mp4")
    second = agent.run(empty)
    reid = [e for e in second if e["type"] == "reidentified"]
    assert len(reid) == 1, second
    e = reid[0]
    assert e["track_id"] == carol_track and e["name"] == "carol" and e["unknown_id"] in {c["id"] for c in clusters}
    started = next(x for x in first if x["type"] == "track_started" and x["track_id"] == carol_track)
    assert abs(parse_ts(e["seen_at"]) - parse_ts(started["timestamp"])) < 5
    assert not [x for x in agent.run(empty) if x["type"] == "reidentified"]  # once only
    # the documented example has the shape of this real one
    from test_docs import doc_examples, shape

    example = next(x for x in doc_examples() if x["type"] == "reidentified")
    assert shape(example) == shape(e)


# ------------------------------------------------------------------------------------------- over MQTT

from test_remote_enrollment import USERS, agents, broker, keyfile  # noqa: E402, F401 - fixtures reused
from test_storage_faults import disk  # noqa: E402, F401 - a real small tmpfs


def test_remote_unknowns_name_and_reject(tmp_path, broker, keyfile, agents, capsys, lfw_faces):  # noqa: F811
    """The signed remote commands through a real mosquitto and `face-agent remote`: `unknowns` lists the
    agent's unknown people (with the best chip), `name` enrolls one and the agent retrains, `reject` records
    a wrong identification's faces as negatives."""
    from agent.cli import main
    from agent.events import EventFactory
    from agent.store import EventStore

    cfg = make_config(tmp_path / "agent-1", agent={"id": "agent-1"}, sightings={"privacy": "all"},
                      mqtt={"host": broker.host, "port": broker.port, "username": "agent-1",
                            "password": USERS["agent-1"], "reconnect_min_delay": 0.1},
                      remote_enroll={"key_file": str(keyfile), "debounce": 0.5})
    a, b, _ = lfw_faces
    store = SightingStore(cfg)
    store.add_track("r", _track(lfw_faces[a][:2], 1))
    store.add_track("r", _track(lfw_faces[a][2:], 2))
    now = time.time()
    store.add_track("r", _track(lfw_faces[b][:2], 3, name="dave", t=now))
    store.close()
    wrong = EventFactory.from_config(cfg).identified(3, "dave", 0.8, 2, (1, 2, 3, 4), (640, 360))
    with EventStore(cfg) as events:
        events.add(wrong)
    agent = agents(cfg).start()
    toml = tmp_path / "operator.toml"
    toml.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "operator"\n'
                    f'password = "{USERS["operator"]}"\n[remote_enroll]\nkey_file = "{keyfile}"\n')

    def cli(*argv) -> tuple[int, str, str]:
        code = main(["-q", "-c", str(toml), "remote", *argv, "--agent", "agent-1", "--timeout", "60"])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli("unknowns", "--json")
    data = json.loads(out)
    assert code == 0 and data["verified"] and [u["id"] for u in data["unknowns"]] == ["u1"]
    assert data["unknowns"][0]["tracks"] == 2 and data["unknowns"][0]["chip_jpeg"]
    code, out, _ = cli("name", "u1", "carol", "--wait-trained")
    assert code == 0 and "u1 -> carol:" in out and "retrained" in out, out
    assert agent.gallery.photos_of("carol") and agent.updates[-1][0].people == ["carol"]
    code, out, _ = cli("unknowns")
    assert code == 0 and "named carol" in out
    code, out, _ = cli("reject", wrong.event_id)
    assert code == 0 and "now known not to be dave" in out, out
    assert (agent.gallery.negatives_dir / "dave.npy").is_file()
    code, out, _ = cli("name", "u77", "x")
    assert code == 1 and "not_found" in out
    code, out, _ = cli("reject", "01M8M3ATTSS776S3QMMFD5038S")
    assert code == 1 and "not_found" in out


@pytest.mark.slow
def test_bounds_hold_through_a_run(strangers, tmp_path):
    """The same clip with tight bounds: count and disk stay under them, and what is dropped is the oldest."""
    video = strangers[2]
    agent = Agent(tmp_path / "tight", "max_count = 10\nmax_mb = 0.15\n")  # appended to [sightings]
    agent.run(video)
    sightings = bs.stored_sightings(agent.folder)
    store = SightingStore(load_config(agent.folder / "agent.toml"))
    totals = store.totals()
    store.close()
    assert 0 < len(sightings) <= 10 and totals["count"] == len(sightings)
    assert totals["bytes"] <= 150_000
    on_disk = sum(f.stat().st_size for f in (agent.folder / "storage" / "sightings").rglob("*.jpg"))
    assert on_disk == totals["bytes"]
    # the ones kept are the newest: from the last appearances of the clip (track ids grow with time)
    last = max(e["track_id"] for e in agent.events() if e["track_id"] is not None)
    assert min(s["track_id"] for s in sightings) > last // 2, sightings
