"""Start-up check of the SQLite event log: a corrupt file is moved aside (never deleted) so the agent can
start with a fresh database while the damaged one stays available for recovery.

    moved = check_database(cfg.path("storage") / "events.db")
    if moved: ...  # the service starts with an empty log; `moved` is kept for the operator

The file and its -wal/-shm/-journal companions are renamed together to
`<name>.corrupt-<UTC timestamp>` (+ the same suffixes), so the moved set is still a consistent database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from agent.files import open_degraded, storage_hint, storage_state

log = logging.getLogger(__name__)

COMPANIONS = ("-wal", "-shm", "-journal")


class DatabaseCheckError(RuntimeError):
    """The database could not be checked (locked, unreadable): not evidence of corruption."""


def check_database(path: str | os.PathLike, full: bool = False, timeout: float = 10.0) -> Path | None:
    """Check an existing SQLite file; move it aside when corrupt and return the new path.

    Returns None when the file is missing, empty or healthy. `full=True` runs `PRAGMA integrity_check`
    (slower, also checks index contents) instead of `PRAGMA quick_check`. Raises DatabaseCheckError when
    the file cannot be opened for reasons other than corruption (permissions, locks, I/O errors);
    `timeout` is how long to wait for another process's lock.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise DatabaseCheckError(f"{path}: not a regular file")
    problem = _problem(path, full, timeout)
    if problem is None:
        return None
    try:
        moved = _move_aside(path)
    except OSError as exc:
        raise DatabaseCheckError(f"{path} is corrupt ({problem}) but cannot be moved aside: {exc.strerror} "
                                 f"({storage_hint(path.parent)})") from None
    log.error("%s is corrupt (%s); moved it to %s and starting with an empty database",
              path, problem, moved)
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
