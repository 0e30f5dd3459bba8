"""check_database on real SQLite files, healthy and corrupted in the ways power loss and bad SD cards do."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Config
from agent.dbcheck import DatabaseCheckError, check_database

PAGE = 4096


def make_db(path: Path, rows: int = 3000, wal: bool = False) -> Path:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, person TEXT)")
    conn.execute("CREATE INDEX events_person ON events(person)")
    conn.executemany("INSERT INTO events (kind, person) VALUES (?, ?)",
                     [("recognized", f"person-{i % 50}" * 8) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def event_log(tmp_path: Path) -> tuple[Config, Path]:
    """A real event log (agent.store) of 400 track_started events with thumbnails (~ 5 rows a page), the first
    300 delivered, checkpointed into the file: its config and path."""
    import base64

    from conftest import make_config

    from agent.events import EventFactory
    from agent.store import EventStore

    cfg = make_config(tmp_path)
    factory = EventFactory("edge-1", "door")
    with EventStore(cfg) as store:
        ids = []
        for i in range(400):
            e = factory.track_started(i, (0, 0, 10, 10), (100, 100))
            e.thumbnail = base64.b64encode(os.urandom(600)).decode()
            store.add(e)
            ids.append(e.event_id)
        store.mark_delivered(ids[:300])
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return cfg, cfg.path("storage") / "events.db"


def readable_events(db: Path, short: bool = False) -> dict[str, str]:
    """The oracle: event_id -> outbox state of every row SQLite can still read, row by row (`short`: a file cut
    shorter than its header says, read with writable_schema so the pages that are there count)."""
    probe = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    if short:
        probe.execute("PRAGMA writable_schema = ON")
    readable: dict[str, str] = {}
    for seq in range(1, 401):
        try:
            row = probe.execute("SELECT event_id, state FROM events WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row:
            readable[row[0]] = row[1]
    probe.close()
    return readable


def assert_moved(original: Path, moved: Path | None, content: bytes) -> None:
    assert moved is not None
    assert re.fullmatch(r"events\.db\.corrupt-\d{8}T\d{6}Z(-\d+)?", moved.name), moved.name
    assert moved.parent == original.parent
    # in its place: nothing, or a healthy file with the rows that could be salvaged
    assert not original.exists() or check_database(original, full=True, salvage=False) is None
    assert moved.read_bytes() == content  # kept byte for byte, never deleted


def test_healthy_missing_and_empty_files_stay(tmp_path):
    db = make_db(tmp_path / "events.db")
    before = db.read_bytes()
    assert check_database(db) is None
    assert check_database(db, full=True) is None
    assert db.read_bytes() == before
    assert check_database(tmp_path / "absent.db") is None
    empty = tmp_path / "empty.db"
    empty.touch()
    assert check_database(empty) is None and empty.exists()  # SQLite treats an empty file as a new db


def test_not_a_database_is_moved_aside_and_logged(tmp_path, caplog):
    db = tmp_path / "events.db"
    content = b"this is no SQLite file\n" * 500
    db.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="agent.dbcheck"):
        moved = check_database(db)
    assert_moved(db, moved, content)
    assert any("file is not a database" in r.getMessage() and str(moved) in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.parametrize("damage", ["header", "truncated", "zeroed_page", "bad_cell_pointers", "garbage_pages"])
def test_corruptions_are_detected(tmp_path, damage):
    db = make_db(tmp_path / "events.db")
    size = db.stat().st_size
    if damage == "header":
        overwrite(db, 0, b"GARBAGE HEADER!!")
    elif damage == "truncated":  # power loss while the file grew
        os.truncate(db, size // 2)
    elif damage == "zeroed_page":  # a flash block that came back empty
        overwrite(db, PAGE * 9, b"\0" * PAGE)
    elif damage == "bad_cell_pointers":
        overwrite(db, PAGE * 19 + 8, b"\xff\xff" * 4)
    else:
        overwrite(db, PAGE * 10, os.urandom(PAGE * 3))
    content = db.read_bytes()
    assert_moved(db, check_database(db), content)


def test_index_mismatch_needs_the_full_check(tmp_path):
    db = make_db(tmp_path / "events.db")
    conn = sqlite3.connect(db)  # the index no longer matches its table
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql='CREATE INDEX events_person ON events(kind)' "
                 "WHERE name='events_person'")
    conn.commit()
    conn.close()
    assert check_database(db) is None  # quick_check does not compare indexes with tables
    content = db.read_bytes()
    assert_moved(db, check_database(db, full=True), content)


def test_wal_and_shm_move_with_the_database(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    make_db(live / "events.db", wal=True)
    conn = sqlite3.connect(live / "events.db")  # a crash with the WAL not yet checkpointed
    conn.execute("INSERT INTO events (kind, person) VALUES ('recognized', 'late')")
    conn.commit()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(live / f"events.db{suffix}", crashed / f"events.db{suffix}")
    conn.close()
    db = crashed / "events.db"
    overwrite(db, PAGE * 3, b"\0" * PAGE * 10)
    wal = (crashed / "events.db-wal").read_bytes()
    moved = check_database(db)
    assert_moved(db, moved, db.with_name(moved.name).read_bytes())
    assert Path(f"{moved}-wal").read_bytes() == wal
    assert Path(f"{moved}-shm").exists()
    assert sorted(p.name for p in crashed.iterdir() if p.name.startswith(moved.name)) == sorted(
        [moved.name, f"{moved.name}-wal", f"{moved.name}-shm"])
    assert {p.name for p in crashed.iterdir()} <= {moved.name, f"{moved.name}-wal", f"{moved.name}-shm", "events.db"}


def test_two_corrupt_files_in_one_second_get_distinct_names(tmp_path):
    db = tmp_path / "events.db"
    first_content, second_content = b"x" * 5000, b"y" * 5000
    db.write_bytes(first_content)
    first = check_database(db)
    db.write_bytes(second_content)
    second = check_database(db)
    assert first != second
    assert first.read_bytes() == first_content and second.read_bytes() == second_content


def test_a_locked_database_is_not_called_corrupt(tmp_path):
    db = make_db(tmp_path / "events.db")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseCheckError, match="locked"):
            check_database(db, timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert db.exists() and check_database(db) is None


def test_a_folder_is_an_error(tmp_path):
    (tmp_path / "events.db").mkdir()
    with pytest.raises(DatabaseCheckError, match="not a regular file"):
        check_database(tmp_path / "events.db")


def test_a_hot_journal_is_rolled_back_not_called_corrupt(tmp_path):
    db = make_db(tmp_path / "events.db", rows=20000)
    crash = ("import os, sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('PRAGMA cache_size=10'); c.execute('BEGIN')\n"
             "c.execute(\"UPDATE events SET kind = 'x'\")\n"
             "os._exit(0)  # power loss in the middle of a transaction\n")
    subprocess.run([sys.executable, "-c", crash, str(db)], check=True, timeout=60)
    assert Path(f"{db}-journal").exists()  # a hot journal: read-only connections cannot open this
    assert check_database(db) is None
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events WHERE kind = 'recognized'").fetchone()[0] == 20000
    conn.close()


def test_readable_rows_of_a_corrupt_event_log_are_salvaged_pending_first(tmp_path, caplog):
    """4 KB overwritten mid-file: every row still readable is in the new log (all undelivered ones that
    `face-agent events` could read), the damaged file is kept aside, and the log says how many were saved."""
    from agent.store import EventStore

    cfg, db = event_log(tmp_path)
    pages = db.stat().st_size // PAGE
    overwrite(db, PAGE * (pages // 2), os.urandom(PAGE))
    content = db.read_bytes()
    readable = readable_events(db)
    assert 300 < len(readable) < 400, len(readable)  # a page of rows is lost, the rest is readable

    with caplog.at_level(logging.ERROR, logger="agent.dbcheck"):
        moved = check_database(db)
    assert_moved(db, moved, content)
    with EventStore(cfg) as store:
        saved = {r.event_id: r.state for r in store.query(limit=None)}
        assert store.integrity_check() == []
    assert saved == readable  # every readable row, with its outbox state
    pending = sum(1 for state in readable.values() if state == "pending")
    message = next(r.getMessage() for r in caplog.records if "salvaged" in r.getMessage())
    assert f"{len(readable)} rows of events" in message and f"{pending} of them" in message, message


def test_an_event_log_cut_in_half_keeps_the_rows_of_its_first_half(tmp_path):
    """Issue 25.7: power lost while the file grew leaves it shorter than its header says; SQLite then
    refused every row, so nothing was salvaged. Now every row on the pages still there is saved (here the
    oldest, delivered ones), the same rows a reader that accepts the short file sees."""
    from agent.store import EventStore

    cfg, db = event_log(tmp_path)
    os.truncate(db, db.stat().st_size // 2)
    readable = readable_events(db, short=True)
    assert 150 < len(readable) < 250 and set(readable.values()) == {"delivered"}, len(readable)
    content = db.read_bytes()
    assert_moved(db, check_database(db), content)
    with EventStore(cfg) as store:
        assert {r.event_id: r.state for r in store.query(limit=None)} == readable
        assert store.integrity_check() == []
