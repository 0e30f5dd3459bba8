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


def assert_moved(original: Path, moved: Path | None, content: bytes) -> None:
    assert moved is not None
    assert re.fullmatch(r"events\.db\.corrupt-\d{8}T\d{6}Z(-\d+)?", moved.name), moved.name
    assert moved.parent == original.parent
    assert not original.exists()
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
    assert sorted(p.name for p in crashed.iterdir()) == sorted(
        [moved.name, f"{moved.name}-wal", f"{moved.name}-shm"])


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
