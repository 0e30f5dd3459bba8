"""The agent's SQLite files, opened one way: `events.db` (store.py), `embeddings.db` (gallery.py) and
`remote_enroll.db` (sync/enrollment.py).

    conn = connect(path, synchronous="FULL")      # busy timeout, WAL; raises sqlite3.Error
    db = database(conn)                            # the connection as a sqlite-utils Database
    ensure_layout(db, VERSION, create_tables)      # tables/indexes created, PRAGMA user_version checked

Tables, indexes, inserts and reads go through sqlite-utils (`db[table].create/create_index/insert/rows_where/
count_where`), so the files stay what Datasette and the `sqlite-utils` CLI read: plain tables with typed
columns. Plain SQL only where a module says why (the event log's outbox path, measured in
bench/bench_store.py; statements sqlite-utils has no call for).

Each file's table layout has a version in `PRAGMA user_version`; a file written by a newer face-agent is
refused (LayoutError), an older one is brought up to date by `ensure_layout` (its `migrations` steps, e.g. a
`db[table].transform(...)`), then stamped.

On a full or read-only disk a WAL file cannot be opened the usual way: `open_degraded` keeps what it holds
readable. Connections are `Connection`s: a COMMIT that fails as the disk fills always raises sqlite3's
OperationalError, never the SystemError CPython 3.11 can give for it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

import sqlite_utils

from agent.files import storage_state

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000  # a writer waits this long for another connection's transaction


class LayoutError(sqlite3.DatabaseError):
    """The file's table layout is newer than this face-agent knows (written by a newer version)."""


class Connection(sqlite3.Connection):
    """sqlite3's connection, less one CPython 3.11 fault: when COMMIT fails and SQLite has already cleared the
    error (seen on a disk filling up at that moment), `commit()` and leaving a `with conn:` block raise
    SystemError ("error return without exception set") with the transaction rolled back. Here that is the
    sqlite3.OperationalError it stands for: "database or disk is full" when the file's disk is full (so the
    callers' full-disk handling takes over), else "commit failed"."""

    folder: Path | None = None  # the database file's folder (set by connect/open_degraded)

    def commit(self) -> None:
        try:
            super().commit()
        except SystemError as exc:
            raise self._lost_commit(exc) from None

    def __exit__(self, *exc_info):  # type: ignore[override]
        try:
            return super().__exit__(*exc_info)
        except SystemError as exc:
            raise self._lost_commit(exc) from None

    def _lost_commit(self, exc: SystemError) -> sqlite3.OperationalError:
        state = storage_state(self.folder) if self.folder is not None else None
        return sqlite3.OperationalError("database or disk is full" if state == "full"
                                        else f"commit failed ({state or exc})")


def _open(path: Path, **kwargs) -> Connection:
    conn = sqlite3.connect(path, factory=Connection, check_same_thread=False, **kwargs)
    conn.folder = Path(path).parent
    return conn


def connect(path: Path, synchronous: str | None = None, wal_bytes: int | None = None) -> sqlite3.Connection:
    """A read-write connection usable from any thread: busy timeout BUSY_TIMEOUT_MS, WAL journal (a warning
    if the file system cannot have one), `synchronous` (None: SQLite's default), and with `wal_bytes` the WAL
    truncated back to that size after checkpoints and checkpointed once it holds about that much. Raises
    sqlite3.Error (the connection closed: a failed open must not keep a lock)."""
    conn = _open(path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if synchronous is not None:
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        if wal_bytes is not None:
            conn.execute(f"PRAGMA journal_size_limit = {wal_bytes}")
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, wal_bytes // page)}")
    except sqlite3.Error:
        conn.close()
        raise
    if mode.lower() != "wal":
        log.warning("%s: WAL journal not available (got %s); readers may block the writer", path, mode)
    return conn


def open_degraded(path: Path, state: str, timeout: float = BUSY_TIMEOUT_MS / 1000) -> tuple[sqlite3.Connection, str]:
    """A connection to an existing SQLite file on a full or read-only disk: (connection, how it is open).

    A WAL database normally needs its shared-memory index (<name>-shm), which a full or read-only file
    system cannot give. On a full disk the file is opened in exclusive locking mode (the index is kept in
    this process's memory: other processes cannot read the file meanwhile); on a read-only one, or if that
    fails, as immutable (read only). Raises sqlite3.Error."""
    if state == "full":
        conn = _open(path, timeout=timeout)
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn, "exclusive"
        except sqlite3.Error:
            conn.close()
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?immutable=1", uri=True, check_same_thread=False)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn, "read-only"


def database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """`conn` as a sqlite-utils Database (no plugins, no pragmas of its own)."""
    return sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)


def ensure_index(table: sqlite_utils.db.Table, name: str, columns: list[str], unique: bool = False) -> None:
    """Create the index `name` on `table` unless the file has one by that name (nothing written if it has)."""
    if name not in {index.name for index in table.indexes}:
        table.create_index(columns, index_name=name, unique=unique)


def ensure_layout(db: sqlite_utils.Database, version: int, create: Callable[[sqlite_utils.Database], None],
                  migrations: Mapping[int, Callable[[sqlite_utils.Database], None]] | None = None,
                  writable: bool = True) -> int:
    """Bring the file's tables to layout `version`; returns the version the file had (0: new or unversioned).

    A file with tables at an older version gets `migrations[v](db)` for each version v from its own up to
    `version` - 1 (v = 0: a file written before layouts had a version), all in one transaction with the new
    version stamp: a failing step leaves the file as it was. Then `create(db)` makes every table and index
    that is missing (it runs on every open, so an index added later reaches old files too; outside a
    transaction, so a new file may be VACUUMed first). Nothing is written when the file is up to date; with
    `writable=False` (a degraded open on a full or read-only disk) the layout is only checked and the file
    read as it is. Raises LayoutError for a newer layout, sqlite3.Error otherwise."""
    conn = db.conn
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > version:
        raise LayoutError(f"written by a newer face-agent (table layout {found} > {version})")
    if not writable:
        return found
    if found < version and db.table_names():
        with db.atomic():
            for step in range(found, version):
                if migrations and step in migrations:
                    migrations[step](db)
            conn.execute(f"PRAGMA user_version = {int(version)}")
    create(db)
    if conn.execute("PRAGMA user_version").fetchone()[0] != version:  # a new file
        conn.execute(f"PRAGMA user_version = {int(version)}")
    conn.commit()
    return found
