"""The event log: every event is written to `<storage>/events.db` BEFORE it is published (an outbox).

Each row keeps the exact JSON that is published and an outbox state: `pending` until the broker
acknowledged it (PUBACK), then `delivered`. After any outage - broker down, agent killed, power cut - the
publisher drains the pending rows in insertion order, so nothing logged is lost. A pending event older than
`[mqtt] max_event_age` (1 h) is not published late (automations would fire on a stale arrival): the
publisher marks it `expired`; it stays in the log (`face-agent events`, counted in the stats' outbox) and
`face-agent events --resend-expired` makes it pending again.

Durability: WAL journal (readers never block the writer) with `synchronous = FULL` by default: every
commit is fsynced, so an event that `add()` returned for survives a power cut, not just a crash. Edge
devices lose power without warning and events are rare (a few per track), so one fsync per event is
cheap; NORMAL is faster but may lose the last commits on power loss (never on a process crash). FULL
writes the same bytes as NORMAL (SD card wear is about bytes written, not flushes). See
`[store] synchronous`.

Tables, indexes, inserts and reads use sqlite-utils (agent/database.py opens the file the way every agent
database is opened); the few statements it has no call for are plain SQL, each with its reason.

Threads: each thread gets its own SQLite connection (WAL lets the service thread write events while the
publisher thread reads the outbox and marks rows delivered); writes wait up to `database.BUSY_TIMEOUT_MS`
for each other. Listeners registered with `add_listener` are called after each `add()` (the publisher uses
it to wake up).

Retention (`enforce_retention`): delivered (and expired) events older than `[store] retention_days` are deleted; above
`[store] max_db_mb` (the database file plus its WAL, whose size is capped at a quarter of it) the WAL is
checkpointed and just enough of the oldest delivered events are deleted, then the freed pages are given
back to the file system (auto_vacuum = INCREMENTAL + incremental_vacuum). Pending events are never deleted
by retention - unless MQTT is off (`[mqtt] enabled = false`): then nothing is ever published, the log is
not an outbox, and every event is under the same retention by age and size. The running agent calls it at
the start and every `[store] retention_interval` seconds, on its retention timer (agent.service).

A full disk (SQLITE_FULL) makes `add()` first give up the reserve - a file of `[store] reserve_mb`
(`events.db.reserve`) held beside the log while the disk has room, so that the log (its WAL, the deletes that
make room) still has space when everything else filled the disk - then delete old delivered events and retry;
if that is not enough it raises `StoreFullError` and the rows already stored stay intact - unless
`[store] drop_pending_when_full` allows dropping the oldest undelivered events, which is logged loudly. The
service then publishes the event from memory (it is not lost while the broker is there) and health says
`disk full` (`space_problem()`) until the reserve could be taken again. The WAL is kept within its budget
even while a reader holds it (`add()` checkpoints without waiting once it is twice its budget).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from agent import database
from agent.config import Config
from agent.database import LayoutError, open_degraded
from agent.events import IDENTIFIED, REIDENTIFIED, Event, EventError, parse_timestamp, validate_event
from agent.files import FULL_BELOW_BYTES, StorageError, storage_hint, storage_state
from agent.people import People

log = logging.getLogger(__name__)

DB_NAME = "events.db"
DB_VERSION = 2  # PRAGMA user_version of the table layout below (2: person_id, camera nullable, counters)
DELETE_BATCH = 500  # most rows deleted per retention step (each step deletes just enough, estimated)
WAL_LIMIT_BYTES = 16 * 1024 * 1024  # journal_size_limit: the WAL is truncated back to this after checkpoints
WAL_SHARE = 4  # the WAL may take at most 1/WAL_SHARE of max_db_mb (and at most WAL_LIMIT_BYTES)
WAL_CHECK_EVERY = 16  # inserts between looks at the WAL's size
RESERVE_SUFFIX = ".reserve"  # events.db.reserve: [store] reserve_mb held free for the log
PENDING = "pending"
DELIVERED = "delivered"
EXPIRED = "expired"  # pending until older than [mqtt] max_event_age: kept in the log, never published late
SETTLED = (DELIVERED, EXPIRED)  # states retention may delete (with MQTT on)

COLUMNS = {
    "seq": int,  # insertion order (rowid)
    "event_id": str,
    "t": float,  # event time, seconds since the epoch (range queries, retention)
    "timestamp": str,
    "type": str,
    "name": str,
    "person_id": str,  # the enrolled person `name` was (p<n>, agent.people; null before schema 4)
    "camera": str,  # null for agent-wide events
    "track_id": int,
    "confidence": float,
    "state": str,  # pending | delivered | expired
    "created": float,  # when the row was written (or made pending again: resend_expired)
    "delivered_at": float,  # when the PUBACK came
    "payload": str,  # the exact JSON published
}
REQUIRED = {"event_id", "t", "timestamp", "type", "state", "created", "payload"}  # NOT NULL
INDEXES = {  # name -> (columns, unique); one per query users run
    "idx_events_event_id": (["event_id"], True),
    "idx_events_t": (["t"], False),
    "idx_events_name_t": (["name", "t"], False),
    "idx_events_type_t": (["type", "t"], False),
    "idx_events_person_t": (["person_id", "t"], False),
    "idx_events_track": (["track_id"], False),
}
TRACK_IDS = "track_id"  # the counters row of the next track id (never repeated on one agent)
TRACK_ID_BLOCK = 1  # track ids reserved per write: one write per new track keeps ids without gaps
# partial index: the outbox scan reads only pending rows, in insertion order (plain SQL: sqlite-utils'
# create_index has no WHERE)
PENDING_INDEX = "idx_events_pending"
PENDING_INDEX_SQL = f"CREATE INDEX {PENDING_INDEX} ON events(seq) WHERE state = 'pending'"


class StoreError(StorageError):
    """The event log cannot be opened or written; the message says which file and why."""


class StoreFullError(StoreError):
    """The disk (or database) is full: the new event was not stored; everything stored before is intact."""


@dataclass(frozen=True)
class StoredEvent:
    """One row of the log."""

    seq: int
    event_id: str
    t: float
    timestamp: str
    type: str
    name: str | None
    camera: str | None
    track_id: int | None
    confidence: float | None
    state: str
    payload: str
    person_id: str | None = None

    def event(self) -> Event:
        return Event.from_json(self.payload)


_SELECT = ("seq, event_id, t, timestamp, type, name, camera, track_id, confidence, state, payload, "
           "person_id")  # StoredEvent
_SELECT_V1 = _SELECT.replace("person_id", "NULL AS person_id")  # a layout 1 file read as it is (degraded open)
_PENDING = "SELECT {} FROM events WHERE state = 'pending' ORDER BY seq LIMIT ?"
_INSERT = ("INSERT INTO events (event_id, t, timestamp, type, name, person_id, camera, track_id, confidence, state, "
           "created, payload) VALUES (:event_id, :t, :timestamp, :type, :name, :person_id, :camera, :track_id, "
           ":confidence, :state, :created, :payload)")


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == 13 or "database or disk is full" in str(exc)


def _hint(path: Path, exc: sqlite3.Error) -> str:
    """What to do about an error opening the log: only a damaged file is to be moved aside."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, full, read-only, cannot open: not damage
        return storage_hint(path.parent)
    return "the file is damaged: move it aside (with its -wal and -shm files); a new log is created"


class EventStore:
    """The SQLite event log with its outbox. `EventStore(cfg)` opens (or creates) <storage>/events.db."""

    def __init__(self, cfg: Config, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cfg.path("storage") / DB_NAME
        self.retention_days = cfg.store.retention_days
        self.max_db_bytes = cfg.store.max_db_mb * 1024 * 1024
        self.wal_budget = min(WAL_LIMIT_BYTES, self.max_db_bytes // WAL_SHARE)
        self.outbox = cfg.mqtt.enabled  # False: nothing is published, no state is kept back
        self.synchronous = cfg.store.synchronous.upper()
        self.drop_pending_when_full = cfg.store.drop_pending_when_full
        self.reserve_bytes = int(cfg.store.reserve_mb * 2**20)
        self.reserve_path = self.path.with_name(self.path.name + RESERVE_SUFFIX)
        self.full = False  # the disk filled: the reserve is given up or an event could not be stored
        self.not_stored = 0  # events add() refused for lack of space (this process)
        self._inserts = 0
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self._closed = False
        self._shared: sqlite3.Connection | None = None  # degraded mode: one connection for every thread
        self.degraded: str | None = None  # why the log is open in degraded mode (None: normal)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path.parent}: cannot create the storage folder: {exc}") from None
        if storage_state(self.path.parent) == "full":  # full before the start: the reserve is there for this
            self._release_reserve()
        self._create_schema()
        self.keep_reserve()

    # ------------------------------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        try:
            return database.connect(self.path, self.synchronous, self.wal_budget)
        except sqlite3.DatabaseError as exc:  # the failed connection is closed: it would hold a lock
            state = storage_state(self.path.parent) if isinstance(exc, sqlite3.OperationalError) else None
            if state is not None and self.path.is_file() and self.path.stat().st_size > 0:
                return self._connect_degraded(state, exc)
            raise StoreError(f"{self.path}: cannot open the event log: {exc} ({_hint(self.path, exc)})") from None

    def _connect_degraded(self, state: str, exc: sqlite3.Error) -> sqlite3.Connection:
        """The disk is full or read-only: keep what the log holds readable (and publishable) instead of
        failing; new events are refused with StoreFullError/StoreError until the disk is fixed."""
        try:
            conn, how = open_degraded(self.path, state)
        except sqlite3.Error as again:
            raise StoreError(f"{self.path}: cannot open the event log: {exc}; degraded open: {again} "
                             f"({storage_hint(self.path.parent)})") from None
        self._shared = conn
        self.full = self.full or state == "full"
        self.degraded = f"storage: the disk holding {self.path.parent} is {state}"
        log.error("%s: the disk is %s: the event log is open in degraded mode (%s): the %s stored events are "
                  "kept%s, new events cannot be stored until it is fixed (%s)", self.path, state, how,
                  database.database(conn)["events"].count if self._has_events(conn) else 0,
                  " and published" if how == "exclusive" else "", storage_hint(self.path.parent))
        return conn

    @staticmethod
    def _has_events(conn: sqlite3.Connection) -> bool:
        return database.database(conn)["events"].exists()

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (created on first use)."""
        if self._closed:
            raise StoreError(f"{self.path}: the event log is closed")
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            if conn is self._shared:
                with self._conns_lock:
                    self._conns.append(conn)
                return conn
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection as a sqlite-utils Database."""
        db = getattr(self._local, "db", None)
        if db is None or db.conn is not self.conn:
            db = database.database(self.conn)
            self._local.db = db
            self._local.table = db.table("events")  # made once: db["events"] reads the schema each time
        return db

    @property
    def table(self) -> sqlite_utils.db.Table:
        """This thread's `events` table as a sqlite-utils Table."""
        _ = self.db
        return self._local.table

    def close(self) -> None:
        """Close every thread's connection (call when all threads using the store have stopped)."""
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.Error):  # closing is best effort
                    conn.close()
            self._conns.clear()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        try:
            database.ensure_layout(self.db, DB_VERSION, _create_tables, MIGRATIONS, writable=self.degraded is None)
        except LayoutError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot use the event log: {exc} ({_hint(self.path, exc)})") from None
        # a file of the previous layout on a full or read-only disk is read as it is (no person_id column)
        self._person_column = "person_id" in self.table.columns_dict if self.table.exists() else True
        self._select = _SELECT if self._person_column else _SELECT_V1
        self._pending_sql = _PENDING.format(self._select)

    # ------------------------------------------------------------------------------------------ space

    def keep_reserve(self) -> bool:
        """Hold `[store] reserve_mb` in events.db.reserve while the disk has room for it and as much again;
        True when it is held. After the disk filled, a reserve taken again means there is room again
        (`full` is cleared)."""
        if not self.reserve_bytes or self.degraded is not None:
            return False
        with contextlib.suppress(OSError):
            if self.reserve_path.stat().st_size >= self.reserve_bytes:
                return True
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        if st.f_bavail * st.f_frsize < 2 * self.reserve_bytes + FULL_BELOW_BYTES:
            return False  # nearly full already: taking the last space for a reserve would only move the problem
        try:
            with open(self.reserve_path, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
                except OSError:  # not supported by this file system: write it
                    for _ in range(0, self.reserve_bytes, 1 << 20):
                        f.write(b"\0" * min(1 << 20, self.reserve_bytes - f.tell()))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.reserve_path.unlink(missing_ok=True)
            log.debug("%s: cannot hold the reserve: %s", self.reserve_path, exc)
            return False
        if self.full:
            log.warning("%s: there is room on the disk again: the %.0f MB reserve is held again", self.path,
                        self.reserve_bytes / 2**20)
            self.full = False
        return True

    def _release_reserve(self) -> bool:
        """Give the reserve back to the file system (the disk is full); True if there was one."""
        try:
            size = self.reserve_path.stat().st_size
            self.reserve_path.unlink()
        except OSError:
            return False
        self.full = True
        log.error("%s: DISK FULL: gave up the %.1f MB reserve so events are still stored; free disk space (%s)",
                  self.path, size / 2**20, storage_hint(self.path.parent))
        return True

    def space_problem(self) -> str | None:
        """For health: "disk full: ..." while the disk is full for the log (the reserve is given up, or events
        could not be stored), else None. Tries to take the reserve again first (room may have been freed)."""
        if self.full and self.reserve_bytes:
            self.keep_reserve()
        if not self.full:
            return None
        if self.not_stored:  # no count here: the health state changes only when the situation does (stats count)
            return f"disk full: new events cannot be stored in {self.path} (they are published from memory)"
        return f"disk full: the event log is writing into its reserve on {self.path.parent}"

    def _bound_wal(self) -> None:
        """Checkpoint the WAL back to empty once it is twice its budget (a reader kept the automatic checkpoint
        from resetting it), without waiting for readers: the video loop's thread calls this."""
        try:
            if Path(f"{self.path}-wal").stat().st_size <= 2 * self.wal_budget:
                return
        except OSError:
            return
        conn = self.conn
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass  # a reader is in the WAL: next time
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {database.BUSY_TIMEOUT_MS}")

    # ------------------------------------------------------------------------------------------ writing

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        """Call `fn(event)` after each stored event (from the thread that called `add`); keep it quick."""
        self._listeners.append(fn)

    def add(self, event: Event) -> int:
        """Store one event as pending (durably, before it is published); returns its sequence number.

        Raises StoreFullError when the disk is full (nothing stored before is lost), StoreError otherwise.
        """
        payload = event.to_json()  # validates
        row = {"event_id": event.event_id, "t": parse_timestamp(event.timestamp),
               "timestamp": event.timestamp, "type": event.type, "name": event.name,
               "person_id": event.person_id, "camera": event.camera, "track_id": event.track_id,
               "confidence": event.confidence, "state": PENDING, "created": time.time(), "payload": payload}
        try:
            seq = self._insert(row)
            if self.full and not self.reserve_bytes:
                self.full = False  # stored without deleting anything: there is room again
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise StoreError(f"{self.path}: cannot store event {event.event_id}: {exc}") from None
            seq = self._insert_when_full(row, exc)
        except sqlite3.IntegrityError:
            raise StoreError(f"{self.path}: event {event.event_id} is already stored") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot store event {event.event_id}: {exc}") from None
        self._inserts += 1
        if self._inserts % WAL_CHECK_EVERY == 0:
            self._bound_wal()
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # a listener must never make the caller lose track of a stored event
                log.exception("event listener %r failed", fn)
        return seq

    def _insert(self, row: dict) -> int:
        # plain SQL (the outbox's hot path, on the video loop's thread): Table.insert re-checks the table and
        # rebuilds the statement each time, 42 us against 32 us per event (bench/bench_store.py)
        with self.conn as conn:
            return int(conn.execute(_INSERT, row).lastrowid)

    def _insert_when_full(self, row: dict, exc: sqlite3.Error) -> int:
        self.full = True
        if self._release_reserve():
            try:
                return self._insert(row)
            except sqlite3.OperationalError as again:
                if not _is_full(again):
                    raise StoreError(f"{self.path}: cannot store event {row['event_id']}: {again}") from None
        freed = self._delete_oldest(SETTLED if self.outbox else None, DELETE_BATCH)
        if freed:
            log.warning("%s: disk full: deleted the %d oldest delivered events to make room",
                        self.path, freed)
            try:
                return self._insert(row)
            except sqlite3.OperationalError as again:
                if not _is_full(again):
                    raise StoreError(f"{self.path}: cannot store event {row['event_id']}: {again}") from None
        if self.drop_pending_when_full:
            dropped = self._delete_oldest(PENDING, max(1, DELETE_BATCH // 10))
            if dropped:
                log.critical("%s: DISK FULL: dropped the %d oldest UNDELIVERED events to store new ones "
                             "([store] drop_pending_when_full = true); free disk space", self.path, dropped)
                try:
                    return self._insert(row)
                except sqlite3.OperationalError:
                    pass
        pending = self.count(PENDING)
        self.not_stored += 1
        raise StoreFullError(
            f"{self.path}: database or disk is full: event {row['event_id']} ({row['type']}) was not stored; "
            f"the {pending} undelivered events already stored are kept. Free disk space "
            "(or set [store] max_db_mb / drop_pending_when_full)") from exc

    def _delete_oldest(self, state: str | tuple[str, ...] | None, n: int) -> int:
        """Delete the `n` oldest events in `state` (a tuple: in any of them; None: in any state); how many
        were deleted."""
        states = (state,) if isinstance(state, str) else state
        where, params = ((f"WHERE state IN ({', '.join('?' * len(states))}) ", [*states, n]) if states
                         else ("", [n]))
        try:
            return self._delete(f"seq IN (SELECT seq FROM events {where}ORDER BY seq LIMIT ?)", params)
        except sqlite3.OperationalError as exc:
            log.error("%s: cannot delete old events: %s", self.path, exc)
            return 0

    def mark_delivered(self, event_ids: Iterable[str]) -> int:
        """Mark events delivered (after their PUBACK); returns how many changed state.

        On a full disk the oldest delivered events are deleted to make room and it is tried once more;
        then StoreFullError (the events stay pending and are published again later: at-least-once)."""
        ids = list(event_ids)
        if not ids:
            return 0
        try:
            return self._mark(ids)
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise StoreError(f"{self.path}: cannot mark events delivered: {exc}") from None
            if self._delete_oldest(SETTLED, DELETE_BATCH):
                try:
                    return self._mark(ids)
                except sqlite3.OperationalError:
                    pass
            raise StoreFullError(f"{self.path}: database or disk is full: cannot mark {len(ids)} events "
                                 "delivered; they stay pending and will be published again") from exc

    def _mark(self, ids: list[str]) -> int:
        # plain SQL: sqlite-utils' update() changes one row by primary key (seq) after reading it; this is one
        # statement per 500 event ids, in one transaction, and says how many were still pending
        now = time.time()
        changed = 0
        with self.db.atomic() as db:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                changed += db.execute(f"UPDATE events SET state = ?, delivered_at = ? WHERE state = ? "
                                      f"AND event_id IN ({marks})", (DELIVERED, now, PENDING, *chunk)).rowcount
        return changed

    def _delete(self, where: str, params: Sequence[Any]) -> int:
        """Delete the events matching `where`; how many. (Plain SQL: sqlite-utils' delete_where does not say
        how many rows it deleted, and retention stops when a step deleted none.)"""
        with self.db.atomic() as db:
            return db.execute(f"DELETE FROM events WHERE {where}", params).rowcount

    def reserve_track_ids(self, n: int) -> int:
        """Reserve `n` track ids; the first one (the rest follow it). The counter starts above every track
        id in the log. StoreError if it cannot be written."""
        # plain SQL: one read-and-increment in one transaction (sqlite-utils has no call for it)
        try:
            with self.conn as conn:
                conn.execute("INSERT OR IGNORE INTO counters (name, value) "
                             "SELECT ?, COALESCE(MAX(track_id), 0) + 1 FROM events", [TRACK_IDS])
                first = int(conn.execute("SELECT value FROM counters WHERE name = ?", [TRACK_IDS]).fetchone()[0])
                conn.execute("UPDATE counters SET value = ? WHERE name = ?", [first + int(n), TRACK_IDS])
            return first
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot reserve track ids: {exc}") from None

    def max_track_id(self) -> int:
        """The highest track id logged or reserved (0: none, or unreadable)."""
        try:
            top = self.conn.execute("SELECT MAX(track_id) FROM events").fetchone()[0] or 0
            with contextlib.suppress(sqlite3.Error):
                row = self.conn.execute("SELECT value - 1 FROM counters WHERE name = ?", [TRACK_IDS]).fetchone()
                top = max(top, row[0] if row else 0)
            return int(top)
        except sqlite3.Error:
            return 0

    # ------------------------------------------------------------------------------------------ reading

    def _rows(self, where: str | None, params: Sequence[Any] = (), order_by: str | None = None,
              limit: int | None = None) -> list[StoredEvent]:
        return [StoredEvent(**row) for row in self.table.rows_where(where, params, order_by=order_by,
                                                                    select=self._select, limit=limit)]

    def rows(self, where: str, params: Sequence[Any] = (), order_by: str | None = None,
             limit: int | None = None) -> list[StoredEvent]:
        """Events matching a WHERE clause over the columns above (the web console's visits: one track's events)."""
        return self._rows(where, params, order_by, limit)

    def pending(self, limit: int = 100, exclude: Iterable[str] = ()) -> list[StoredEvent]:
        """Up to `limit` undelivered events in insertion order, skipping the ids in `exclude` (in flight)."""
        skip = set(exclude)
        # plain SQL (the outbox's hot path: every batch the publisher sends): rows_where re-reads the table list
        # and builds a dict per row: 13 us against 6.5 for one row, 350 against 220 for 100 (bench/bench_store.py).
        # The literal 'pending' (not a parameter) lets SQLite use the partial index idx_events_pending.
        rows = [StoredEvent(*row) for row in self.conn.execute(self._pending_sql, (int(limit) + len(skip),))]
        return [r for r in rows if r.event_id not in skip][:limit]

    def expire_pending(self, older_than: float, exclude: Iterable[str] = ()) -> int:
        """Mark the pending events that happened and were queued before `older_than` (epoch seconds) expired,
        except the ids in `exclude` (in flight); how many. They stay in the log (`events`, `status`);
        `resend_expired()` undoes it."""
        skip = list(exclude)
        marks = f" AND event_id NOT IN ({', '.join('?' * len(skip))})" if skip else ""
        with self.conn as conn:
            return conn.execute(f"UPDATE events SET state = ? WHERE state = 'pending' AND t < ? AND created < ?"
                                f"{marks}", (EXPIRED, older_than, older_than, *skip)).rowcount

    def resend_expired(self, since: float | None = None) -> int:
        """Make expired events (at or after `since`, epoch seconds) pending again, queued now (`created`): published
        at the next chance however old they are; how many."""
        where, params = ("AND t >= ?", [since]) if since is not None else ("", [])
        with self.conn as conn:
            return conn.execute(f"UPDATE events SET state = ?, created = ? WHERE state = ? {where}",
                                (PENDING, time.time(), EXPIRED, *params)).rowcount

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._rows("event_id = ?", [event_id], limit=1)
        return rows[0] if rows else None

    def query(self, since: float | None = None, until: float | None = None, name: str | None = None,
              type: str | None = None, limit: int | None = 100,
              state: str | None = None, camera: str | None = None, track_id: int | None = None) -> list[StoredEvent]:
        """Events in time order; with a limit, the most recent `limit` that match. Times: epoch seconds.
        `name`: the events of a person - by id (p3), or by any name they had (a rename keeps their past),
        case-insensitively, a prefix being enough (agent.people)."""
        where, params = [], []
        for cond, value in (("t >= ?", since), ("t < ?", until), ("type = ?", type),
                            ("state = ?", state), ("camera = ?", camera), ("track_id = ?", track_id)):
            if value is not None:
                where.append(cond)
                params.append(value)
        if name is not None:
            cond, values = self._person_filter(name)
            where.append(cond)
            params.extend(values)
        rows = self._rows(" AND ".join(where) or None, params, order_by="t DESC, seq DESC",
                          limit=int(limit) if limit else None)
        return list(reversed(rows))

    def _person_filter(self, text: str) -> tuple[str, list[Any]]:
        """SQL for "events of the person `text` names": their ids, or (rows logged before events carried
        ids) any name they had, or a name starting with `text` (LIKE: ASCII case-insensitive)."""
        ids: list[str] = []
        names: list[str] = []
        try:
            with People(self.path.parent) as people:
                for person in people.find(text):
                    ids.append(person.id)
                    names.extend(person.names)
        except (StorageError, sqlite3.Error) as exc:  # no registry: names as logged
            log.debug("people registry: %s", exc)
        like = re.sub(r"([\\%_])", r"\\\1", text.strip()) + "%"
        cond = "name LIKE ? ESCAPE '\\'"
        values: list[Any] = [like]
        if names:
            cond += f" OR name IN ({', '.join('?' * len(names))})"
            values.extend(names)
        if not self._person_column:
            return f"({cond})", values
        cond = f"person_id IS NULL AND ({cond})"
        if ids:
            cond = f"person_id IN ({', '.join('?' * len(ids))}) OR ({cond})"
            values = [*ids, *values]
        return f"({cond})", values

    def current_names(self, rows: Iterable[StoredEvent]) -> dict[str, str]:
        """event_id -> the name its person has now, for the rows whose person was renamed since (by their
        person_id, or - rows logged before events carried one - by who had the name then)."""
        out: dict[str, str] = {}
        try:
            with People(self.path.parent) as people:
                for r in rows:
                    if r.name is None:
                        continue
                    now = people.current_name(r.name, r.person_id, r.t)
                    if now is not None and now != r.name:
                        out[r.event_id] = now
        except (StorageError, sqlite3.Error) as exc:
            log.debug("people registry: %s", exc)
        return out

    def count(self, state: str | None = None) -> int:
        return int(self.table.count if state is None else self.table.count_where("state = ?", [state]))

    def counts(self) -> dict[str, int]:
        """{'pending': n, 'delivered': m, 'expired': k, 'total': n + m + k}."""
        out = {PENDING: 0, DELIVERED: 0, EXPIRED: 0}
        # plain SQL: both counts from one read (two count_where calls could see a row change state between them)
        for state, n in self.db.execute("SELECT state, count(*) FROM events GROUP BY state"):
            out[state] = int(n)
        out["total"] = sum(out.values())
        return out

    def disk_bytes(self) -> int:
        """Bytes the log takes on disk: the database file plus its WAL (what max_db_mb bounds)."""
        total = 0
        for name in (self.path, Path(f"{self.path}-wal")):
            with contextlib.suppress(OSError):
                total += name.stat().st_size
        return total

    def used_bytes(self) -> int:
        """Bytes of the database holding data (file size minus free pages; the WAL not included)."""
        conn = self.conn
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def integrity_check(self) -> list[str]:
        """Problems SQLite finds in the file (empty list = healthy)."""
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check").fetchall()]
        return [] if rows == ["ok"] else rows

    # ------------------------------------------------------------------------------------------ retention

    def enforce_retention(self, now: float | None = None) -> dict[str, int]:
        """Delete delivered events older than retention_days, then, while the database file and its WAL
        are above max_db_mb, just enough of the oldest delivered ones; give the freed space back. Pending
        events are kept (a warning says how many are old) - unless MQTT is off: then every event is under
        the same retention."""
        now = time.time() if now is None else now
        cutoff = now - self.retention_days * 86400
        deletable = SETTLED if self.outbox else None  # None: any state
        by_age = self._delete("t < ?" + (" AND state IN (?, ?)" if deletable else ""),
                              [cutoff, *deletable] if deletable else [cutoff])
        old_pending = 0
        if self.outbox:
            old_pending = int(self.table.count_where("state = ? AND t < ?", [PENDING, cutoff]))
        if old_pending:
            log.warning("%s: %d undelivered events are older than %d days; kept until they are published",
                        self.path, old_pending, self.retention_days)
        by_size = 0
        if self.disk_bytes() > self.max_db_bytes:
            self._checkpoint()  # the WAL's pages go into the file first: then the file size is the truth
            target = self.max_db_bytes - self.wal_budget  # room for the WAL to grow until the next pass
            while self.used_bytes() > target:
                n = self._delete_oldest(deletable, self._rows_for(self.used_bytes() - target))
                if not n:
                    log.warning("%s: %.1f MB used, above max_db_mb = %d, but only undelivered events are left; "
                                "kept", self.path, self.used_bytes() / 2**20, self.max_db_bytes // 2**20)
                    break
                by_size += n
        if by_age or by_size:
            # give the freed pages back to the disk; executescript steps the pragma to its end (execute() steps
            # it once, which frees a single page)
            self.conn.executescript("PRAGMA incremental_vacuum;")
            self._checkpoint()
            log.info("%s: retention deleted %d events older than %d days and %d for size (%.2f MB on disk)",
                     self.path, by_age, self.retention_days, by_size, self.disk_bytes() / 2**20)
        return {"deleted_by_age": by_age, "deleted_by_size": by_size, "old_pending": old_pending}

    # ------------------------------------------------------------------------------------------ erasure

    def forget_person(self, person: str, person_id: str | None = None) -> dict[str, int]:
        """Erase `person` (and their stable `person_id`, agent.people: the events of their earlier names too)
        from the log (`face-agent forget`, issue 25): their identifications (`identified` and `reidentified`
        naming them) are deleted; every other event of their tracks (the same camera and
        track id from its track_started to its track_ended), and of the unknown tracks later re-identified as
        them, loses its thumbnail and the name; `previous_name` and `model_updated` people/counts drop the name.
        Pending events are rewritten before they go out. Deleted content is overwritten (secure_delete) and the
        WAL truncated, so nothing of it stays in the files. Returns {"deleted": n, "anonymised": n}."""
        conn = self.conn
        ours = ("name = :p OR json_extract(payload, '$.previous_name') = :p OR (type = 'model_updated' AND EXISTS "
                "(SELECT 1 FROM json_each(payload, '$.people') WHERE value = :p)) OR "
                "(:pid IS NOT NULL AND json_extract(payload, '$.person_id') = :pid)")
        rows = conn.execute(f"SELECT seq, type, camera, track_id, t, payload FROM events WHERE {ours}",
                            {"p": person, "pid": person_id}).fetchall()
        unknown_ids = {json.loads(r[5]).get("unknown_id") for r in rows if r[1] == REIDENTIFIED} - {None}
        if unknown_ids:  # the unknown tracks that were them
            marks = ",".join("?" * len(unknown_ids))
            rows += conn.execute(f"SELECT seq, type, camera, track_id, t, payload FROM events WHERE type = "
                                 f"'unknown_face' AND json_extract(payload, '$.unknown_id') IN ({marks})",
                                 sorted(unknown_ids)).fetchall()
        spans: dict[tuple[str, int], list[float]] = {}
        for _, etype, camera, track_id, t, _ in rows:
            if track_id is not None and etype != REIDENTIFIED:  # a reidentified event's track is an old one
                lo, hi = spans.get((camera, track_id), (t, t))
                spans[(camera, track_id)] = [min(lo, t), max(hi, t)]
        seqs = {r[0] for r in rows}
        for (camera, track_id), (lo, hi) in spans.items():
            start = conn.execute("SELECT MAX(t) FROM events WHERE camera = ? AND track_id = ? AND type = "
                                 "'track_started' AND t <= ?", (camera, track_id, lo)).fetchone()[0]
            end = conn.execute("SELECT MIN(t) FROM events WHERE camera = ? AND track_id = ? AND type = "
                               "'track_ended' AND t >= ?", (camera, track_id, hi)).fetchone()[0]
            seqs.update(seq for (seq,) in conn.execute(
                "SELECT seq FROM events WHERE camera = ? AND track_id = ? AND t BETWEEN ? AND ?",
                (camera, track_id, lo if start is None else start, hi if end is None else end)))
        deleted, changed = [], []
        for seq in sorted(seqs):
            found = conn.execute("SELECT type, payload FROM events WHERE seq = ?", (seq,)).fetchone()
            if found is None:
                continue
            data = json.loads(found[1])
            theirs = data.get("name") == person or (person_id is not None and data.get("person_id") == person_id)
            if found[0] in (IDENTIFIED, REIDENTIFIED) and theirs:
                deleted.append((seq,))
                continue
            data.pop("thumbnail", None)
            if theirs:
                data["name"] = None
                if "person_id" in data:
                    data["person_id"] = None
            if data.get("previous_name") == person:
                data["previous_name"] = None
            if isinstance(data.get("people"), list):
                data["people"] = [p for p in data["people"] if p != person]
            if isinstance(data.get("counts"), dict):
                data["counts"].pop(person, None)
            try:
                validate_event(data)
            except EventError:  # an event that makes no sense without the name: it goes
                deleted.append((seq,))
                continue
            changed.append((data.get("name"), data.get("person_id"),
                            json.dumps(data, ensure_ascii=False, separators=(",", ":")), seq))
        conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable in the file
        try:
            with conn:
                conn.executemany("DELETE FROM events WHERE seq = ?", deleted)
                if self._person_column:
                    conn.executemany("UPDATE events SET name = ?, person_id = ?, payload = ? WHERE seq = ?", changed)
                else:  # a previous-layout file opened degraded
                    conn.executemany("UPDATE events SET name = ?, payload = ? WHERE seq = ?",
                                     [(n, p, s) for n, _, p, s in changed])
        finally:
            conn.execute("PRAGMA secure_delete = OFF")
        self._checkpoint()
        return {"deleted": len(deleted), "anonymised": len(changed)}

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (best effort: readers may hold it)."""
        with contextlib.suppress(sqlite3.OperationalError):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _rows_for(self, excess: int) -> int:
        """How many of the oldest rows to delete to free about `excess` bytes: from the average row size,
        plus one, at most DELETE_BATCH (the loop measures again and deletes more if needed)."""
        rows = self.count()
        if not rows:
            return 0
        average = max(1.0, self.used_bytes() / rows)
        return max(1, min(DELETE_BATCH, int(excess / average) + 1))


def _create_tables(db: sqlite_utils.Database) -> None:
    """The events table and its indexes, each unless the file has it (layout DB_VERSION)."""
    events = db["events"]
    if not events.exists():
        # before the first table: lets retention give freed pages back to the file system
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")  # auto_vacuum takes effect on an empty database after VACUUM
        events.create(COLUMNS, pk="seq", not_null=REQUIRED, defaults={"state": PENDING})
    for name, (columns, unique) in INDEXES.items():
        database.ensure_index(events, name, columns, unique=unique)
    if PENDING_INDEX not in {index.name for index in events.indexes}:
        db.execute(PENDING_INDEX_SQL)
    # the agent's counters (the next track id): a row per counter, created on first use
    db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")


def _person_ids_and_nullable_camera(db: sqlite_utils.Database) -> None:
    """Layout 1 -> 2: events get `person_id` (null in the rows logged before: agent.people finds them by the
    name they were logged under), `camera` may be null (agent-wide events, schema 4), and the next track id
    starts above every track id logged (counters)."""
    events = db["events"]
    if "person_id" not in events.columns_dict:
        events.add_column("person_id", str)
    camera_required = any(c.name == "camera" and c.notnull for c in events.columns)
    if camera_required or [c.name for c in events.columns] != list(COLUMNS):
        # one copy of the table (sqlite-utils transform: indexes kept), columns in the order of a new file
        events.transform(not_null={"camera": False}, column_order=list(COLUMNS))
    db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT OR IGNORE INTO counters (name, value) SELECT ?, COALESCE(MAX(track_id), 0) + 1 FROM events",
               [TRACK_IDS])


MIGRATIONS = {1: _person_ids_and_nullable_camera}


class TrackIds:
    """Track ids that never repeat on one agent, across runs and restarts: reserved TRACK_ID_BLOCK at a time
    in the event log's `counters` table (one small write per new track, from the frame loop's thread, next to
    the track's own events; a block above 1 would leave gaps at restarts). An iterator, as
    agent.vision.tracker.Tracker takes it."""

    def __init__(self, store: EventStore, block: int = TRACK_ID_BLOCK) -> None:
        self.store = store
        self.block = block
        self._next = self._end = 0
        self._lock = threading.Lock()

    def __iter__(self) -> TrackIds:
        return self

    def __next__(self) -> int:
        with self._lock:
            if self._next >= self._end:
                try:
                    self._next = self.store.reserve_track_ids(self.block)
                except StoreError as exc:  # a full or read-only disk: go on counting here (logged)
                    self._next = max(self._next, self.store.max_track_id() + 1)
                    log.error("track ids go on from %d without being saved: %s", self._next, exc)
                self._end = self._next + self.block
            value = self._next
            self._next += 1
            return value
