"""Storage on a full disk and on a read-only mount (issue 14): a real, small tmpfs mounted for each test
(root only; skipped with the reason otherwise), real SQLite files, the real models, a real mosquitto."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from broker import Collector
from conftest import FR, ROOT, SHARED
from test_database import OLD_PHOTOS, old_events_db

from agent.cli import main
from agent.config import load_config
from agent.events import EventFactory
from agent.gallery import ENROLLED, EmbeddingCache
from agent.service import Service
from agent.store import EventStore

F = EventFactory("agent-1", "door")
TRAIN = FR / "examples" / "knn_examples" / "train"


class Disk:
    """A small tmpfs at `path`: fill() it up, make it read_only()."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        with open(self.path / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        assert os.statvfs(self.path).f_bavail == 0

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk"
    path.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {run.stderr.strip()}")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def config_file(tmp: Path, disk: Disk, extra: str = "") -> str:
    path = tmp / "agent.toml"
    path.write_text(f'[paths]\nstorage = "{disk.path}/storage"\nengines = "engines"\nsvm = "svm"\n'
                    f'faces = "faces"\n[mqtt]\nenabled = false\n{extra}')
    return str(path)


def one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("face-agent: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_events_are_listed_from_a_full_and_then_a_read_only_disk(tmp_path, disk, capsys):
    conf = config_file(tmp_path, disk)
    with EventStore(load_config(conf)) as store:
        events = [F.track_started(i, (0, 0, 10, 10), (100, 100)) for i in range(30)]
        for e in events:
            store.add(e)
        store.mark_delivered(e.event_id for e in events[:10])
    for fault in (disk.fill, disk.read_only):
        fault()
        assert main(["--config", conf, "events", "--limit", "0"]) == 0
        out, err = capsys.readouterr()
        assert "30 event(s)" in out and "damaged" not in err, (out, err)
        assert main(["--config", conf, "events", "--json", "--pending", "--limit", "0"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 20


def face_agent(conf: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI in its own process (an in-process run would keep its SQLite files open, and a file system
    with files open for writing cannot be remounted read-only)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "agent", "--config", conf, *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_identify_works_and_enroll_refuses_in_one_line_on_a_full_or_read_only_disk(tmp_path, disk):
    conf = config_file(tmp_path, disk)
    run = face_agent(conf, "enroll", "biden", str(TRAIN / "biden" / "biden.jpg"))
    assert run.returncode == 0, run.stderr
    raw = tmp_path / "faces" / "train" / "raw"
    for fault, word in ((disk.fill, "full"), (disk.read_only, "read-only")):
        fault()
        # identify reads what is stored: it still names the enrolled person
        run = face_agent(conf, "identify", str(TRAIN / "biden" / "biden2.jpg"))
        assert run.returncode == 0 and "biden" in run.stdout and "Traceback" not in run.stderr, run
        # a new photo cannot be enrolled: one clear line, and the photo is not copied
        run = face_agent(conf, "enroll", "obama", str(TRAIN / "obama" / "obama.jpg"))
        assert run.returncode == 1, run
        line = one_line_error(run.stderr)
        assert "embeddings.db" in line and word in line, line
        assert not (raw / "obama").exists()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_run_starts_degraded_on_a_full_disk_and_publishes_what_it_has(tmp_path, disk, mosquitto, analyzer,
                                                                       caplog):
    conf = config_file(tmp_path, disk)
    cfg = load_config(conf)
    cfg.mqtt.enabled = True
    cfg.mqtt.host, cfg.mqtt.port = mosquitto.host, mosquitto.port
    cfg.mqtt.max_inflight = 50  # all in one window: marking them delivered fails on the full disk
    with EventStore(cfg) as store:
        pending = [F.track_started(i, (0, 0, 10, 10), (100, 100)) for i in range(25)]
        for e in pending:
            store.add(e)
    disk.fill()
    collector = Collector(mosquitto, "faces/events").start()
    photos = tmp_path / "frames"
    photos.mkdir()
    for name in ("biden.jpg", "biden2.jpg"):
        (photos / name).write_bytes((TRAIN / "biden" / name).read_bytes())
    service = Service(cfg, source_uri=str(photos), every_frame=True, analyzer=analyzer)
    assert service.run() == 0  # no crash (systemd would restart it in a loop with the events stuck)
    received = {json.loads(m.text)["event_id"] for m in collector.wait_count("faces/events", 25, timeout=30)}
    assert {e.event_id for e in pending} <= received, "the stored events were not published"
    assert "degraded mode" in caplog.text and "full" in caplog.text
    collector.stop()
    with EventStore(cfg) as store:  # nothing stored before was lost
        assert store.count() >= 25


def test_files_of_the_previous_version_open_on_a_full_or_read_only_disk(tmp_path, disk):
    """An embedding cache written before layouts had a version cannot be stamped on a broken disk: it is read
    as it is (the same layout); the event log likewise."""
    conf = config_file(tmp_path, disk)
    cfg = load_config(conf)
    storage = cfg.path("storage")
    storage.mkdir(parents=True)
    events = [F.track_started(i, (0, 0, 10, 10), (100, 100)) for i in range(10)]
    old_events_db(storage / "events.db", events)
    conn = sqlite3.connect(storage / "embeddings.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(OLD_PHOTOS)
    emb = np.arange(128, dtype=np.float32)
    conn.execute("INSERT INTO photos VALUES (?, ?, ?, ?, ?, ?)", ("a" * 64, "s", ENROLLED, "", emb.tobytes(), "null"))
    conn.commit()
    conn.close()
    for fault in (disk.fill, disk.read_only):
        fault()
        cache = EmbeddingCache(storage / "embeddings.db")
        assert cache.degraded and np.array_equal(cache.get("a" * 64, "s")[2], emb)
        cache.close()
        with EventStore(cfg) as store:
            assert store.degraded and [r.event() for r in store.query(limit=None)] == events


HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_a_full_disk_loses_no_event_and_health_says_disk_full(tmp_path, disk, mosquitto, analyzer, caplog):
    """Issue 25.2: the disk fills before the run: every event of the run still goes out over MQTT (from memory)
    and is counted, the errors are a few lines (not one per event), and health says `disk full`."""
    conf = config_file(tmp_path, disk, '[service]\nstatus_interval = 0.2\nmin_free_disk_mb = 0\n')
    cfg = load_config(conf)
    cfg.mqtt.enabled = True
    cfg.mqtt.host, cfg.mqtt.port = mosquitto.host, mosquitto.port
    with EventStore(cfg) as store:
        store.add(F.track_started(0, (0, 0, 10, 10), (100, 100)))
    disk.fill()
    collector = Collector(mosquitto, ["faces/events", f"faces/{cfg.agent.id}/#"]).start()
    service = Service(cfg, source_uri=str(HAMILTON), every_frame=True, max_frames=120, analyzer=analyzer)
    assert service.run() == 0
    assert service.stats.not_stored >= 5 and service.stats.events >= service.stats.not_stored
    received = [json.loads(m.text) for m in collector.wait_count("faces/events", service.stats.events + 1,
                                                                  timeout=30)]
    types = {e["type"] for e in received}
    assert {"track_started", "track_ended"} <= types, types
    assert len({e["event_id"] for e in received}) == service.stats.events + 1  # each run event + the stored one
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "not stored" in r.getMessage()]
    assert 1 <= len(errors) <= 6, [r.getMessage() for r in errors]  # rate-limited: a few, not one per event
    health = [json.loads(m.text) for m in collector.on(f"faces/{cfg.agent.id}/health")]
    assert any(h["state"] == "degraded" and any("disk full" in r for r in h["reasons"]) for h in health), health
    collector.stop()


def test_the_reserve_keeps_the_event_log_writing_when_the_disk_fills(tmp_path, disk, caplog):
    """Issue 25.2: [store] reserve_mb is held beside the log while there is room and given up when something
    else fills the disk: the events still fit (and old delivered ones can still be deleted), health says
    `disk full`, and the WAL stays within its budget."""
    conf = config_file(tmp_path, disk, "[store]\nreserve_mb = 2\nmax_db_mb = 4\n")
    cfg = load_config(conf)
    store = EventStore(cfg)
    reserve = store.path.with_name("events.db.reserve")
    assert reserve.stat().st_size == 2 << 20 and store.space_problem() is None
    disk.fill()
    events = [F.track_started(i, (0, 0, 10, 10), (100, 100)) for i in range(150)]
    for e in events:
        store.add(e)
    assert store.count() == 150 and not reserve.exists()
    assert "disk full" in store.space_problem() and "DISK FULL" in caplog.text
    assert Path(f"{store.path}-wal").stat().st_size <= 2 * store.wal_budget + 64 * 1024
    (disk.path / "filler").unlink()  # room again: the reserve is taken back and health is ok
    assert store.space_problem() is None and reserve.exists()
    store.close()


def test_a_people_registry_that_cannot_be_opened_is_not_reopened_until_the_next_swap(tmp_path, caplog):
    """The frame loop's person ids: a registry that fails gives None at once for every name (not a new open per
    event), says so once, and is tried again after a classifier swap (`clear()`)."""
    from agent.people import PersonIds

    storage = tmp_path / "storage"
    storage.write_text("a file where the storage folder should be")
    ids = PersonIds(storage)
    assert ids("Ada") is None
    storage.unlink()  # the registry could be opened now: the next swap tries again, not the next event
    assert ids("Ada") is None and ids("Bob") is None and not storage.exists()
    ids.clear()
    assert ids("Ada") == "p1" and ids("Bob") == "p2" and (storage / "people.db").is_file()
    assert len([r for r in caplog.records if "events carry no person_id" in r.message]) == 1
