"""The agent's three SQLite files (events.db, embeddings.db, remote_enroll.db) on real files: files written by
the previous version (its exact table layout, copied from files it wrote) open with every row; the layout
version in PRAGMA user_version; a newer layout is refused; a migration step runs once; the files stay plain
tables the `sqlite-utils` CLI reads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
from conftest import make_config

from agent import database
from agent.events import EventFactory, parse_timestamp
from agent.files import StorageError
from agent.gallery import CACHE_VERSION, ENROLLED, NO_FACE, EmbeddingCache
from agent.store import DB_VERSION, DELIVERED, PENDING, EventStore, StoreError, _create_tables
from agent.sync.enrollment import NONCE_VERSION, NonceStore
from agent.sync.enrollment_protocol import ProtocolError

F = EventFactory("edge-1", "door")

# The previous version's files, as sqlite_master holds them (events.db: layout 1, auto_vacuum INCREMENTAL;
# embeddings.db and remote_enroll.db: no layout version, the nonce file without WAL).
OLD_EVENTS = [
    'CREATE TABLE "events" (\n   "seq" INTEGER PRIMARY KEY,\n   "event_id" TEXT NOT NULL,\n   "t" REAL NOT NULL,\n'
    '   "timestamp" TEXT NOT NULL,\n   "type" TEXT NOT NULL,\n   "name" TEXT,\n   "camera" TEXT NOT NULL,\n'
    '   "track_id" INTEGER,\n   "confidence" REAL,\n   "state" TEXT NOT NULL DEFAULT \'pending\',\n'
    '   "created" REAL NOT NULL,\n   "delivered_at" REAL,\n   "payload" TEXT NOT NULL\n)',
    "CREATE UNIQUE INDEX idx_events_event_id ON events(event_id)",
    "CREATE INDEX idx_events_t ON events(t)",
    "CREATE INDEX idx_events_name_t ON events(name, t)",
    "CREATE INDEX idx_events_type_t ON events(type, t)",
    "CREATE INDEX idx_events_pending ON events(seq) WHERE state = 'pending'",
]
OLD_PHOTOS = ("CREATE TABLE photos (sha256 TEXT, settings TEXT, status TEXT, reason TEXT, embedding BLOB, box TEXT, "
              "PRIMARY KEY (sha256, settings))")
OLD_NONCES = ["CREATE TABLE nonces (nonce TEXT PRIMARY KEY, key_id TEXT, keep_until REAL)",
              "CREATE INDEX nonces_keep ON nonces (keep_until)"]


def schema(path: Path) -> dict[str, str]:
    """name -> columns (for tables) or indexed columns and uniqueness (for indexes), as SQLite reads them."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for kind, name, table in conn.execute("SELECT type, name, tbl_name FROM sqlite_master ORDER BY name"):
            if kind == "table":
                out[name] = [tuple(r[1:6]) for r in conn.execute(f'PRAGMA table_info("{name}")')]
            else:
                unique = [r for r in conn.execute(f'PRAGMA index_list("{table}")') if r[1] == name][0][2]
                out[name] = (table, [r[2] for r in conn.execute(f'PRAGMA index_info("{name}")')], unique)
        return out
    finally:
        conn.close()


def old_events_db(path: Path, events: list) -> None:
    """events.db as the previous version wrote it: its table layout and its INSERT."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    for sql in OLD_EVENTS:
        conn.execute(sql)
    for i, e in enumerate(events):
        conn.execute(
            "INSERT INTO events (event_id, t, timestamp, type, name, camera, track_id, confidence, state, created, "
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.event_id, parse_timestamp(e.timestamp), e.timestamp, e.type, e.name, e.camera, e.track_id,
             e.confidence, DELIVERED if i < 4 else PENDING, 1.0, e.to_json()))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_an_events_db_of_the_previous_version_opens_with_every_row(tmp_path):
    old = tmp_path / "old" / "events.db"
    old.parent.mkdir()
    events = [F.identified(i, f"p{i % 3}", 0.9, 2, (0, 0, 5, 5), (10, 10)) for i in range(10)]
    old_events_db(old, events)
    with EventStore(make_config(tmp_path), old) as store:
        assert store.counts() == {PENDING: 6, DELIVERED: 4, "expired": 0, "total": 10}
        assert [r.event_id for r in store.pending(100)] == [e.event_id for e in events[4:]]
        assert [r.event() for r in store.query(limit=None)] == events
        assert store.get(events[0].event_id).state == DELIVERED
        new = F.identified(10, "p0", 0.9, 2, (0, 0, 5, 5), (10, 10))
        assert store.add(new) == 11
        assert store.mark_delivered([events[4].event_id, new.event_id]) == 2
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == DB_VERSION
        assert store.integrity_check() == []
    # the same tables, columns, types, constraints and indexes as a file the new code creates
    fresh = tmp_path / "new" / "events.db"
    fresh.parent.mkdir()
    EventStore(make_config(tmp_path), fresh).close()
    assert schema(old) == schema(fresh)


def test_an_embedding_cache_of_the_previous_version_opens_with_every_row(tmp_path):
    old = tmp_path / "old" / "embeddings.db"
    old.parent.mkdir()
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(OLD_PHOTOS)
    emb = np.arange(128, dtype=np.float32)
    conn.execute("INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?, ?)",
                 ("a" * 64, "onnx|40", ENROLLED, "", emb.tobytes(), json.dumps([1, 2, 3, 4])))
    conn.execute("INSERT OR REPLACE INTO photos VALUES (?, ?, ?, ?, ?, ?)",
                 ("b" * 64, "onnx|40", NO_FACE, "no face found", None, json.dumps(None)))
    conn.commit()
    conn.close()
    cache = EmbeddingCache(old)
    status, reason, got = cache.get("a" * 64, "onnx|40")
    assert (status, reason) == (ENROLLED, "") and np.array_equal(got, emb)
    assert cache.get("b" * 64, "onnx|40") == (NO_FACE, "no face found", None)
    assert cache.get("a" * 64, "other settings") is None
    cache.put("a" * 64, "onnx|40", NO_FACE, "replaced", None, None)  # a photo analysed again replaces its row
    assert cache.get("a" * 64, "onnx|40") == (NO_FACE, "replaced", None)
    cache.close()
    assert sqlite3.connect(old).execute("PRAGMA user_version").fetchone()[0] == CACHE_VERSION
    fresh = tmp_path / "new" / "embeddings.db"
    EmbeddingCache(fresh).close()
    assert schema(old) == schema(fresh)


def test_a_nonce_file_of_the_previous_version_still_refuses_its_replays(tmp_path):
    old = tmp_path / "old" / "remote_enroll.db"
    old.parent.mkdir()
    conn = sqlite3.connect(old)  # the previous version kept it in a rollback journal
    for sql in OLD_NONCES:
        conn.execute(sql)
    conn.execute("INSERT INTO nonces VALUES (?, ?, ?)", ("seen-before", "ops", 4e9))
    conn.execute("INSERT INTO nonces VALUES (?, ?, ?)", ("expired", "ops", 10.0))
    conn.commit()
    conn.close()
    nonces = NonceStore(old)
    with pytest.raises(ProtocolError, match="already used"):
        nonces.remember("seen-before", "ops", 4e9, now=100.0)
    nonces.remember("new", "ops", 4e9, now=100.0)
    with pytest.raises(ProtocolError, match="already used"):
        nonces.remember("new", "ops", 4e9, now=100.0)
    nonces.close()
    rows = {r["nonce"] for r in sqlite_utils.Database(old)["nonces"].rows}
    assert rows == {"seen-before", "new"}  # the expired one was cleaned on the first remember()
    assert sqlite3.connect(old).execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # opened like the others
    fresh = tmp_path / "new" / "remote_enroll.db"
    fresh.parent.mkdir()
    NonceStore(fresh).close()
    assert schema(old) == schema(fresh)


def test_a_file_from_a_newer_version_is_refused_in_one_line(tmp_path):
    path = tmp_path / "events.db"
    EventStore(make_config(tmp_path), path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {DB_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=rf"events.db: written by a newer face-agent \(table layout "
                                         rf"{DB_VERSION + 1} > {DB_VERSION}\)"):
        EventStore(make_config(tmp_path), path)
    cache = tmp_path / "embeddings.db"
    EmbeddingCache(cache).close()
    conn = sqlite3.connect(cache)
    conn.execute(f"PRAGMA user_version = {CACHE_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="embeddings.db: cannot use the embedding cache: written by a newer"):
        EmbeddingCache(cache)
    nonces = tmp_path / "remote_enroll.db"
    NonceStore(nonces).close()
    conn = sqlite3.connect(nonces)
    conn.execute(f"PRAGMA user_version = {NONCE_VERSION + 1}")
    conn.close()
    with pytest.raises(database.LayoutError, match="newer face-agent"):
        NonceStore(nonces)


def test_migration_steps_run_once_in_order_and_roll_back_on_failure(tmp_path):
    path = tmp_path / "x.db"
    db = database.database(database.connect(path))
    db["things"].create({"id": int, "label": str}, pk="id")
    db["things"].insert_all([{"id": 1, "label": "a"}, {"id": 2, "label": None}])
    ran = []

    def create(db: sqlite_utils.Database) -> None:
        db["things"].create({"id": int, "label": str, "size": int}, pk="id", ignore=True)
        database.ensure_index(db["things"], "idx_things_label", ["label"])

    def to_1(db: sqlite_utils.Database) -> None:  # version 0 -> 1: a column added
        ran.append(0)
        db["things"].add_column("size", int)

    def to_2(db: sqlite_utils.Database) -> None:  # 1 -> 2: a transform (labels required)
        ran.append(1)
        db["things"].update(2, {"label": ""})
        db["things"].transform(not_null={"label"})

    assert database.ensure_layout(db, 2, create, {0: to_1, 1: to_2}) == 0
    assert ran == [0, 1]
    assert database.ensure_layout(db, 2, create, {0: to_1, 1: to_2}) == 2 and ran == [0, 1]  # up to date
    assert [c.notnull for c in db["things"].columns] == [0, 1, 0]
    assert [i.name for i in db["things"].indexes] == ["idx_things_label"]
    assert list(db["things"].rows) == [{"id": 1, "label": "a", "size": None}, {"id": 2, "label": "", "size": None}]

    fresh = database.database(database.connect(tmp_path / "fresh.db"))  # a new file: created, no migrations
    assert database.ensure_layout(fresh, 2, create, {0: to_1, 1: to_2}) == 0 and ran == [0, 1]
    assert fresh["things"].columns_dict == {"id": int, "label": str, "size": int}
    assert fresh.conn.execute("PRAGMA user_version").fetchone()[0] == 2
    fresh.close()

    def broken(db: sqlite_utils.Database) -> None:
        db["things"].insert({"id": 3, "label": "c"})
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError):
        database.ensure_layout(db, 3, create, {2: broken})
    assert db["things"].count == 2 and db.conn.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_an_up_to_date_file_opens_without_a_write(tmp_path):
    """A read-only (immutable) connection opens an up-to-date file: ensure_layout writes nothing then."""
    path = tmp_path / "events.db"
    with EventStore(make_config(tmp_path), path) as store:
        store.add(F.track_started(1, (0, 0, 10, 10), (100, 100)))
    conn, how = database.open_degraded(path, "read-only")
    assert how == "read-only"
    assert database.ensure_layout(database.database(conn), DB_VERSION, _create_tables) == DB_VERSION
    conn.close()


def test_the_files_are_plain_tables_for_the_sqlite_utils_cli(tmp_path):
    path = tmp_path / "events.db"
    with EventStore(make_config(tmp_path), path) as store:
        e = F.identified(1, "alice", 0.9, 2, (0, 0, 5, 5), (10, 10))
        store.add(e)
    out = subprocess.run([str(Path(sys.executable).parent / "sqlite-utils"), "rows", str(path), "events", "-c",
                          "event_id", "-c", "name", "-c", "state"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [{"event_id": e.event_id, "name": "alice", "state": PENDING}]
