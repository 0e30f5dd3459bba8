"""Start-up check of the SQLite event log and the sightings index: a corrupt file is moved aside (never
deleted) so the agent can start with a fresh database while the damaged one stays available for recovery.

    moved = check_database(cfg.path("storage") / "events.db")
    if moved: ...  # the service starts with the salvaged rows; `moved` is kept for the operator

`events.db` is checked by the service at start (agent.service); `sightings.db` whenever a process first opens
it (agent.sightings: the service, `unknowns`, `name`, the web console).

The file and its -wal/-shm/-journal companions are renamed together to
`<name>.corrupt-<UTC timestamp>` (+ the same suffixes), so the moved set is still a consistent database.

Before that, every row that can still be read is salvaged into a new file that takes the old one's place
(same tables, indexes and user_version; rows in the `SALVAGE_FIRST` order, e.g. undelivered events first,
so a read that gives up late has saved what matters most); the log says how many rows were saved. A file cut
short (shorter than its header says) is read as far as it goes.

Plain sqlite3 here, not sqlite-utils: a damaged file is read chunk by chunk with each failure caught, and its
tables and indexes are recreated from the file's own CREATE statements, whatever they are; AUTOINCREMENT
counters (sqlite_sequence) are carried over so an id is still never given twice.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from agent.database import open_degraded
from agent.files import storage_hint, storage_state

log = logging.getLogger(__name__)

COMPANIONS = ("-wal", "-shm", "-journal")
SALVAGE_FIRST = {"events": "state = 'pending'"}  # table -> rows to salvage before the others
SALVAGE_CHUNK = 200  # rows read per query; a failing chunk is retried row by row


class DatabaseCheckError(RuntimeError):
    """The database could not be checked (locked, unreadable): not evidence of corruption."""


def is_damage(exc: BaseException) -> bool:
    """A SQLite error that means the file is damaged ("file is not a database", "database disk image is
    malformed"), not a lock, a full disk or permissions (those are OperationalError)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def error_hint(path: str | os.PathLike, exc: BaseException) -> str:
    """What to do about an error using the SQLite file `path`: a damaged file is checked and salvaged at the
    next start; anything else is about the disk (full, read-only) or permissions."""
    path = Path(path)
    if is_damage(exc):
        return (f"{path.name} is damaged: it is checked and its readable rows salvaged at the next start "
                "(the damaged file is kept beside it)")
    return storage_hint(path.parent)


def check_database(path: str | os.PathLike, full: bool = False, timeout: float = 10.0,
                   salvage: bool = True) -> Path | None:
    """Check an existing SQLite file; move it aside when corrupt and return the new path.

    Returns None when the file is missing, empty or healthy. `full=True` runs `PRAGMA integrity_check`
    (slower, also checks index contents) instead of `PRAGMA quick_check`. Raises DatabaseCheckError when
    the file cannot be opened for reasons other than corruption (permissions, locks, I/O errors);
    `timeout` is how long to wait for another process's lock. With `salvage` the readable rows of a corrupt
    file are copied into a new file at `path` first (see the module docstring).
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise DatabaseCheckError(f"{path}: not a regular file")
    problem = _problem(path, full, timeout)
    if problem is None:
        return None
    rescued, counts = _salvage(path) if salvage else (None, {})
    try:
        moved = _move_aside(path)
        if rescued is not None:
            os.replace(rescued, path)
    except OSError as exc:
        raise DatabaseCheckError(f"{path} is corrupt ({problem}) but cannot be moved aside: {exc.strerror} "
                                 f"({storage_hint(path.parent)})") from None
    finally:
        if rescued is not None and rescued.exists():
            rescued.unlink()
    if rescued is None:
        log.error("%s is corrupt (%s); moved it to %s; nothing could be salvaged: starting with an empty "
                  "database", path, problem, moved)
    else:
        saved = ", ".join(f"{n} {label}" for label, n in counts.items())
        log.error("%s is corrupt (%s); salvaged %s into a new %s and moved the damaged file to %s",
                  path, problem, saved or "no rows", path.name, moved)
    return moved


def _problem(path: Path, full: bool, timeout: float) -> str | None:
    """None if the database is fine, else a one-line description of the damage.

    Read-only first, so a damaged file and its WAL stay exactly as found (a read-write connection would
    checkpoint the WAL into the file on close); read-write only when read-only cannot open it (a hot
    rollback journal needs writing back first, as the store would do anyway).
    """
    pragma = "integrity_check" if full else "quick_check"
    error: sqlite3.OperationalError | None = None
    for uri in (f"{path.absolute().as_uri()}?mode=ro", f"{path.absolute().as_uri()}?mode=rw"):
        conn = None
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout)
            rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
            break
        except sqlite3.OperationalError as exc:  # locked, busy, cannot open, I/O error: not corruption
            error = exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            return str(exc)
        finally:
            if conn is not None:
                conn.close()
    else:
        rows = _rows_on_a_broken_disk(path, pragma, timeout)
        if rows is None:
            raise DatabaseCheckError(f"{path}: cannot check the database: {error} ({storage_hint(path.parent)})")
    if rows == ["ok"]:
        return None
    shown = "; ".join(" ".join(str(r).replace("*** in database main ***", "").split()) for r in rows[:3])
    more = f" (+{len(rows) - 3} more)" if len(rows) > 3 else ""
    return f"{pragma}: {shown}{more}"


def _rows_on_a_broken_disk(path: Path, pragma: str, timeout: float) -> list | None:
    """The check's rows when the disk is full or read-only (a WAL file then cannot be opened the usual way),
    or None when that is not the reason (a lock, permissions: not for us to work around)."""
    state = storage_state(path.parent)
    if state is None:
        return None
    try:
        conn, _how = open_degraded(path, state, timeout)
    except sqlite3.Error:
        return None
    try:
        return [r[0] for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
    except sqlite3.OperationalError:
        return None
    except sqlite3.DatabaseError as exc:  # damaged
        return [str(exc)]
    finally:
        conn.close()


def _salvage(path: Path) -> tuple[Path | None, dict[str, int]]:
    """Copy every readable row of a damaged database into a new file beside it: (new file, counts), with
    counts like {"rows of events": 240, "of them state = 'pending'": 59}; (None, {}) if not even the schema
    can be read."""
    target = path.with_name(f"{path.name}.salvage-tmp")
    target.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        # a file cut short (power loss while it grew) is shorter than its header says: SQLite refuses all of
        # it unless the schema is "writable", then it reads the pages that are there (read-only: nothing is
        # written)
        src.execute("PRAGMA writable_schema = ON")
    except sqlite3.Error:
        return None, {}
    counts: dict[str, int] = {}
    dst = None
    try:
        try:
            schema = src.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                                 "AND name NOT LIKE 'sqlite_%'").fetchall()
            version = src.execute("PRAGMA user_version").fetchone()[0]
            auto_vacuum = src.execute("PRAGMA auto_vacuum").fetchone()[0]
        except sqlite3.DatabaseError:
            return None, {}
        tables = [(name, sql) for kind, name, _t, sql in schema if kind == "table"]
        if not tables:
            return None, {}
        dst = sqlite3.connect(target)
        dst.execute(f"PRAGMA auto_vacuum = {int(auto_vacuum)}")
        for _name, sql in tables:
            dst.execute(sql)
        for name, _sql in tables:
            columns = [r[1] for r in dst.execute(f'PRAGMA table_info("{name}")')]
            first = SALVAGE_FIRST.get(name)
            saved_first = _copy_rows(src, dst, name, columns, first) if first else 0
            total = saved_first + _copy_rows(src, dst, name, columns, None)
            counts[f"rows of {name}"] = total
            if first:
                counts[f"of them {first}"] = saved_first
        for kind, _name, _table, sql in schema:
            if kind == "index":
                dst.execute(sql)
        _copy_sequences(src, dst)
        dst.execute(f"PRAGMA user_version = {int(version)}")
        dst.commit()
    except sqlite3.Error as exc:  # the new file itself failed (disk): start empty rather than not at all
        log.error("%s: salvaging rows failed: %s", path, exc)
        if dst is not None:
            dst.close()
            dst = None
        target.unlink(missing_ok=True)
        return None, {}
    finally:
        src.close()
        if dst is not None:
            dst.close()
    return target, counts


def _copy_rows(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, columns: list[str],
               where: str | None) -> int:
    """Rows of `table` (matching `where`) readable in `src`, inserted into `dst` unless already there, read
    in rowid chunks; a chunk that fails is read row by row, a row that fails is skipped."""
    cols = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT OR IGNORE INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(columns))})'
    cond = f" AND ({where})" if where else ""
    try:
        top = src.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top = 0
    if not top:  # the table's last page is damaged: look further than any rowid this file can hold
        top = src.execute("PRAGMA page_count").fetchone()[0] * 1024
    saved = 0
    for lo in range(1, top + 1, SALVAGE_CHUNK):
        hi = lo + SALVAGE_CHUNK - 1
        try:
            rows = src.execute(f'SELECT {cols} FROM "{table}" WHERE rowid BETWEEN ? AND ?{cond}',
                               (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            rows = []
            for rowid in range(lo, hi + 1):
                try:
                    rows += src.execute(f'SELECT {cols} FROM "{table}" WHERE rowid = ?{cond}', (rowid,)).fetchall()
                except sqlite3.DatabaseError:
                    continue
        saved += sum(dst.execute(insert, row).rowcount for row in rows)
    return saved


def _copy_sequences(src: sqlite3.Connection, dst: sqlite3.Connection) -> None:
    """The AUTOINCREMENT counters (a table made with AUTOINCREMENT gets sqlite_sequence on creation)."""
    try:
        rows = src.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
        dst.execute("SELECT 1 FROM sqlite_sequence LIMIT 1")
    except sqlite3.DatabaseError:  # no such table (no AUTOINCREMENT), or its page is damaged
        return
    tables = {r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for name, seq in rows:
        if name in tables:
            dst.execute("DELETE FROM sqlite_sequence WHERE name = ?", (name,))
            dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, max(?, (SELECT COALESCE(max(rowid), 0) "
                        f'FROM "{name}")))', (name, seq))


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or any(Path(f"{target}{s}").exists() for s in COMPANIONS):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.rename(path, target)
    for suffix in COMPANIONS:
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            os.rename(companion, Path(f"{target}{suffix}"))
    return target
