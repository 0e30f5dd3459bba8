"""The SQLite event log on real files: WAL, outbox, queries and indexes, retention, full disk, threads."""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import threading
import time

import pytest
from conftest import make_config

from agent import database
from agent.events import Event, EventFactory, format_timestamp
from agent.store import DB_NAME, EventStore, StoreError, StoreFullError

F = EventFactory("edge-1", "door")


def big_event(i: int, t: float | None = None, size: int = 3000) -> Event:
    """An event with a ~4 KB thumbnail (random bytes do not compress)."""
    e = F.track_started(i, (0, 0, 10, 10), (100, 100))
    e.thumbnail = base64.b64encode(os.urandom(size)).decode()
    if t is not None:
        e.timestamp = format_timestamp(t)
    return e


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def store(cfg):
    s = EventStore(cfg)
    yield s
    s.close()


def test_file_wal_and_durability_settings(tmp_path, cfg, store):
    assert store.path == tmp_path / "storage" / DB_NAME and store.path.is_file()
    c = store.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert c.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    normal = EventStore(make_config(tmp_path, store={"synchronous": "normal"}), tmp_path / "n.db")
    assert normal.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    normal.close()
    assert store.integrity_check() == []


def test_outbox_order_and_delivery(store):
    events = [F.identified(i, f"p{i % 3}", 0.9, 2, (0, 0, 5, 5), (10, 10)) for i in range(10)]
    seen = []
    store.add_listener(seen.append)
    seqs = [store.add(e) for e in events]
    assert seqs == sorted(seqs) and seen == events
    pending = store.pending(100)
    assert [r.event_id for r in pending] == [e.event_id for e in events]
    assert pending[0].payload == events[0].to_json() and pending[0].event() == events[0]
    assert [r.event_id for r in store.pending(3)] == [e.event_id for e in events[:3]]
    skip = {events[0].event_id, events[2].event_id}
    assert [r.event_id for r in store.pending(3, exclude=skip)] == [events[1].event_id, events[3].event_id,
                                                                    events[4].event_id]
    assert store.mark_delivered([events[1].event_id, events[0].event_id, "nonexistent"]) == 2
    assert store.mark_delivered([events[0].event_id]) == 0  # already delivered
    assert [r.event_id for r in store.pending(2)] == [events[2].event_id, events[3].event_id]
    assert store.counts() == {"pending": 8, "delivered": 2, "expired": 0, "total": 10}
    assert store.get(events[0].event_id).state == "delivered"
    with pytest.raises(StoreError, match="already stored"):
        store.add(events[0])


def test_survives_reopen(cfg, store):
    e = F.track_started(1, (0, 0, 5, 5), (10, 10))
    store.add(e)
    store.close()
    again = EventStore(cfg)
    assert [r.event() for r in again.pending(10)] == [e]
    again.close()


def test_query_filters_and_order(store):
    t0 = float(int(time.time()) - 3600)
    rows = [("alice", "identified", 0), ("bob", "identified", 60), (None, "unknown_face", 120),
            ("alice", "track_ended", 180), ("alice", "identified", 240)]
    for i, (name, typ, dt) in enumerate(rows):
        if typ == "identified":
            e = F.identified(i, name, 0.8, 2, (0, 0, 5, 5), (10, 10))
        elif typ == "unknown_face":
            e = F.unknown_face(i, 5, (0, 0, 5, 5), (10, 10))
        else:
            e = F.track_ended(i, name, 3.0, 0.8, (0, 0, 5, 5), (10, 10))
        e.timestamp = format_timestamp(t0 + dt)
        store.add(e)
    assert [r.track_id for r in store.query()] == [0, 1, 2, 3, 4]
    assert [r.track_id for r in store.query(name="alice")] == [0, 3, 4]
    assert [r.track_id for r in store.query(name="alice", type="identified")] == [0, 4]
    assert [r.track_id for r in store.query(since=t0 + 60, until=t0 + 180)] == [1, 2]
    assert [r.track_id for r in store.query(limit=2)] == [3, 4]  # the most recent, oldest first
    assert [r.track_id for r in store.query(type="unknown_face")] == [2]
    store.mark_delivered([r.event_id for r in store.query(name="bob")])
    assert [r.track_id for r in store.query(state="pending")] == [0, 2, 3, 4]


def plan(store: EventStore, sql: str, params=()) -> str:
    return " ".join(r[-1] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())


def test_indexes_serve_the_queries(store):
    for i in range(300):
        store.add(F.identified(i, "alice", 0.8, 2, (0, 0, 5, 5), (10, 10)))
    store.mark_delivered(r.event_id for r in store.pending(290))  # the usual state: a small backlog
    store.conn.execute("ANALYZE")
    assert "idx_events_pending" in plan(store, "SELECT * FROM events WHERE state = 'pending' ORDER BY seq LIMIT 5")
    assert "idx_events_name_t" in plan(store, "SELECT * FROM events WHERE name = ? AND t >= ?", ("alice", 0))
    assert "idx_events_t" in plan(store, "SELECT * FROM events WHERE t >= ? AND t < ?", (0, 1))
    assert "idx_events_type_t" in plan(store, "SELECT * FROM events WHERE type = ? AND t >= ?", ("x", 0))
    assert "idx_events_event_id" in plan(store, "SELECT * FROM events WHERE event_id = ?", ("x",))


def test_retention_by_age_keeps_pending(tmp_path, caplog):
    s = EventStore(make_config(tmp_path, store={"retention_days": 7}))
    now = time.time()
    old = [big_event(i, now - 10 * 86400, 100) for i in range(4)]
    new = [big_event(10 + i, now - 86400, 100) for i in range(3)]
    for e in old + new:
        s.add(e)
    s.mark_delivered([old[0].event_id, old[1].event_id, new[0].event_id])
    with caplog.at_level(logging.WARNING, logger="agent.store"):
        result = s.enforce_retention()
    assert result == {"deleted_by_age": 2, "deleted_by_size": 0, "old_pending": 2}
    left = {r.event_id for r in s.query(limit=None)}
    assert left == {old[2].event_id, old[3].event_id} | {e.event_id for e in new}
    assert "older than 7 days" in caplog.text
    s.close()


def test_retention_by_size_deletes_oldest_delivered_first(tmp_path, caplog):
    s = EventStore(make_config(tmp_path, store={"max_db_mb": 1}))
    events = [big_event(i) for i in range(600)]  # ~2.5 MB
    for e in events:
        s.add(e)
    assert s.used_bytes() > 2 * 2**20
    s.mark_delivered(e.event_id for e in events[:500])
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = s.path.stat().st_size
    result = s.enforce_retention()
    assert result["deleted_by_size"] > 0 and result["deleted_by_age"] == 0
    assert s.used_bytes() <= 2**20
    assert s.path.stat().st_size < size_before  # freed pages went back to the file system
    left = [r.event_id for r in s.query(limit=None)]
    kept_delivered = [eid for eid in left if s.get(eid).state == "delivered"]
    # the oldest delivered went first; every pending event is still there
    assert kept_delivered == [e.event_id for e in events[500 - len(kept_delivered):500]]
    assert s.count("pending") == 100
    # only pending left above the limit: nothing deleted, a warning instead
    s.mark_delivered([])
    with caplog.at_level(logging.WARNING, logger="agent.store"):
        s.conn.execute("DELETE FROM events WHERE state = 'delivered'")
        s.conn.commit()
        for i in range(300):
            s.add(big_event(1000 + i))
        result = s.enforce_retention()
    assert result["deleted_by_size"] == 0 and s.count("pending") == 400
    assert "only undelivered events are left" in caplog.text
    assert s.integrity_check() == []
    s.close()


def fill_until_full(s: EventStore, start: int) -> tuple[int, StoreFullError]:
    """Emulate a full disk with PRAGMA max_page_count; add events until the store refuses."""
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count = {pages + 40}")
    i = start
    while True:
        try:
            s.add(big_event(i))
        except StoreFullError as exc:
            return i, exc
        i += 1
        assert i < start + 1000, "the page limit never hit"


def test_full_disk_is_a_clear_error_and_loses_nothing(store, caplog):
    with caplog.at_level(logging.ERROR, logger="agent.store"):
        n, exc = fill_until_full(store, 0)
    assert n > 0
    assert "database or disk is full" in str(exc) and "not stored" in str(exc) and "kept" in str(exc)
    assert isinstance(exc.__cause__, sqlite3.OperationalError)
    assert store.count() == n and store.count("pending") == n  # every stored event is still there
    assert [r.track_id for r in store.pending(n)] == list(range(n))
    assert store.integrity_check() == []
    # delivered events make room: the store deletes the oldest delivered and retries
    with pytest.raises(StoreFullError, match="stay pending"):  # even an UPDATE needs pages
        store.mark_delivered(r.event_id for r in store.pending(10))
    assert store.count("pending") == n
    store.conn.execute("PRAGMA max_page_count = 1000000")  # some space came back
    store.mark_delivered(r.event_id for r in store.pending(10))
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")  # full again
    store.add(big_event(5000))
    assert store.get(store.query(limit=1)[0].event_id).track_id == 5000
    assert store.count("pending") == n - 10 + 1  # no pending event was touched


class LosesCommit(sqlite3.Connection):
    """Beneath face-agent's Connection: leaving a `with` block the way CPython 3.11's sqlite3 does when COMMIT
    fails and SQLite has already cleared the error (seen once on a filling disk): rolled back, then SystemError."""

    def __exit__(self, *exc):
        self.rollback()
        raise SystemError("error return without exception set")


class LossyConnection(database.Connection, LosesCommit):
    pass


def test_a_commit_lost_by_sqlite3_is_a_store_error_not_a_crash(cfg, store, monkeypatch):
    """The event log's real file and connection class, with the fault beneath it: the event is not stored, the
    caller gets a StoreError (not "full": this disk is not), and the log goes on."""
    store.add(big_event(1))
    real = store.conn
    lossy = sqlite3.connect(store.path, factory=LossyConnection, check_same_thread=False)
    lossy.folder = store.path.parent
    store._local.conn = lossy
    try:
        with pytest.raises(StoreError, match="commit failed"):
            store.add(big_event(2))
    finally:
        store._local.conn = real
        lossy.close()
    assert [r.track_id for r in store.pending(10)] == [1]  # nothing half-stored
    store.add(big_event(3))
    assert store.count("pending") == 2


def test_full_disk_may_drop_oldest_pending_when_allowed(tmp_path, caplog):
    s = EventStore(make_config(tmp_path, store={"drop_pending_when_full": True}))
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count = {pages + 40}")
    with caplog.at_level(logging.CRITICAL, logger="agent.store"):
        for i in range(200):  # far more than fits: the oldest undelivered events make room
            s.add(big_event(i))
    assert "DISK FULL" in caplog.text and "UNDELIVERED" in caplog.text
    ids = [r.track_id for r in s.pending(1000)]
    assert ids[-1] == 199 and ids == sorted(ids) and len(ids) < 200
    assert ids == list(range(ids[0], 200))  # only the oldest were dropped
    s.close()


def test_concurrent_writer_and_publisher_threads(store):
    errors: list[BaseException] = []
    total = 400
    done = threading.Event()

    def writer():
        try:
            for i in range(total):
                store.add(F.track_started(i, (0, 0, 5, 5), (10, 10)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def publisher():
        try:
            while True:
                finished = done.is_set()
                batch = store.pending(25)
                store.mark_delivered(r.event_id for r in batch)
                if finished and not batch:
                    return
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=publisher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert store.counts() == {"pending": 0, "delivered": total, "expired": 0, "total": total}


def test_bad_files_give_clear_errors(tmp_path, cfg):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="garbage.db.*(not a database|damaged)"):
        EventStore(cfg, bad)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the storage folder"):
        EventStore(cfg, blocker / "sub" / "events.db")


def test_events_command_lists_filters_and_exports(tmp_path, capsys):
    from agent.cli import main

    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text('[paths]\nstorage = "st"\n')
    assert main(["-q", "-c", str(cfg_path), "events"]) == 0
    assert "no event log yet" in capsys.readouterr().out
    s = EventStore(make_config(tmp_path, paths={"storage": "st"}))
    now = time.time()
    a = F.identified(1, "alice", 0.91, 3, (0, 0, 5, 5), (10, 10))
    a.timestamp = format_timestamp(now - 7200)
    b = F.unknown_face(2, 6, (0, 0, 5, 5), (10, 10))
    c = F.track_ended(1, "alice", 4.0, 0.91, (0, 0, 5, 5), (10, 10))
    for e in (a, b, c):
        s.add(e)
    s.mark_delivered([a.event_id])
    s.close()

    def run(*args: str) -> str:
        assert main(["-q", "-c", str(cfg_path), "events", *args]) == 0
        return capsys.readouterr().out

    table = run()
    assert "alice" in table and "unknown_face" in table and "3 event(s)" in table
    assert table.index("identified") < table.index("unknown_face")  # oldest first
    lines = run("--json").splitlines()
    assert [Event.from_json(x).event_id for x in lines] == [a.event_id, b.event_id, c.event_id]
    assert lines[0] == a.to_json()  # export is byte-identical to what was published
    assert [Event.from_json(x).event_id for x in run("--json", "--name", "alice").splitlines()] == \
        [a.event_id, c.event_id]
    assert [Event.from_json(x).event_id for x in run("--json", "--since", "1h").splitlines()] == \
        [b.event_id, c.event_id]
    assert [Event.from_json(x).event_id for x in run("--json", "--until", "1h").splitlines()] == [a.event_id]
    assert [Event.from_json(x).type for x in run("--json", "--type", "unknown_face").splitlines()] == \
        ["unknown_face"]
    assert [Event.from_json(x).event_id for x in run("--json", "--pending").splitlines()] == \
        [b.event_id, c.event_id]
    assert [Event.from_json(x).event_id for x in run("--json", "--limit", "1").splitlines()] == [c.event_id]
    day = format_timestamp(now - 7200)[:10]
    assert a.event_id in run("--json", "--since", day)
    assert "no matching events" in run("--name", "nobody")
    with pytest.raises(SystemExit):
        main(["-q", "-c", str(cfg_path), "events", "--since", "last tuesday"])
    assert "expected a date/time" in capsys.readouterr().err


def test_max_db_mb_bounds_the_file_with_its_wal_and_deletes_just_enough(tmp_path):
    """At a 1 MB cap: the WAL counts (and is kept small), a pass deletes just enough of the oldest
    delivered events (not 90-100% of them) and gives the space back to the file system."""
    cap = 2**20
    s = EventStore(make_config(tmp_path, store={"max_db_mb": 1}))
    wal = tmp_path / "storage" / f"{DB_NAME}-wal"
    events = [big_event(i) for i in range(600)]  # ~2.5 MB of rows
    for e in events:
        s.add(e)
        assert wal.stat().st_size <= cap // 4 + 64 * 1024, "the WAL grows past its share of max_db_mb"
    s.mark_delivered(e.event_id for e in events)
    assert s.disk_bytes() > 2 * cap
    result = s.enforce_retention()
    assert s.disk_bytes() <= cap, f"{s.disk_bytes()} bytes on disk (database + WAL) at a {cap}-byte cap"
    assert s.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # freed pages went back to the disk
    assert s.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    kept = s.count()
    # just enough: what is left fills most of the room the WAL leaves (3/4 of the cap)
    assert s.used_bytes() >= 0.5 * cap and kept >= 100, (kept, s.used_bytes())
    assert result["deleted_by_size"] == 600 - kept
    assert [r.event_id for r in s.query(limit=None)] == [e.event_id for e in events[600 - kept:]]  # oldest went
    # a second pass right away has nothing to do
    assert s.enforce_retention()["deleted_by_size"] == 0
    s.close()


def test_with_mqtt_off_events_are_not_an_outbox(tmp_path, caplog):
    """[mqtt] enabled = false: nothing is ever published, so 'pending' events get the normal retention by
    age and by size, and nothing claims they will be sent."""
    from agent.sync.publisher import Publisher

    now = time.time()
    s = EventStore(make_config(tmp_path, mqtt={"enabled": False}, store={"retention_days": 7, "max_db_mb": 1}))
    old = [big_event(i, now - 10 * 86400, 100) for i in range(5)]
    for e in old:
        s.add(e)
    result = s.enforce_retention()
    assert result["deleted_by_age"] == 5 and result["old_pending"] == 0 and s.count() == 0
    for i in range(600):  # ~2.5 MB, never published
        s.add(big_event(100 + i))
    with caplog.at_level(logging.INFO):
        result = s.enforce_retention()
        assert result["deleted_by_size"] > 0 and s.disk_bytes() <= 2**20
        pub = Publisher(make_config(tmp_path, mqtt={"enabled": False}), s)
        pub.start()
        assert pub.stop() == 0  # nothing is "left to publish"
    assert "undelivered" not in caplog.text and "not yet published" not in caplog.text
    s.close()
