"""People: the stable id of each enrolled person (`p<number>`, never reused) and every name they had.

A person is their photo folder (agent.gallery), and a folder can be renamed; events and consumers need an id
that a rename keeps. `<storage>/people.db` (SQLite) holds

- `people`: one row per person (`id`, when created, when forgotten);
- `names`: the names each person had, each with the time it was given (`since`) and taken away (`until`,
  null for the current one).

The gallery registers the people it trains (`register`), renames (`rename`) and forgets (`forget`); the agent
stamps each event's `person_id` (`id_of`: the person who has the name now, else the last one who had it:
a running agent may still use the old name until it swaps in the classifier retrained after a rename);
readers find a person by any name they had, case-insensitively by prefix (`find`), and show the current name
(`name_of`). People registered in an existing installation (before this file existed) have had their names
"always" (`since` = 0), so events logged earlier are found under their ids.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from agent import database
from agent.config import Config
from agent.files import StorageError, storage_hint

log = logging.getLogger(__name__)

DB_NAME = "people.db"
LAYOUT_VERSION = 1


def person_label(number: int) -> str:
    """The id events carry: p<number>."""
    return f"p{number}"


def parse_person(label: str) -> int | None:
    """`p12` -> 12; None for anything else."""
    text = label.strip().lower()
    return int(text[1:]) if text.startswith("p") and text[1:].isdigit() else None


@dataclass(frozen=True)
class Person:
    """One person as a reader sees them: id, current name (None once forgotten) and every name they had."""

    id: str
    name: str | None
    names: tuple[str, ...]


def _create_tables(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: an id is never given again, even to a person enrolled again after being forgotten
    db.execute("CREATE TABLE IF NOT EXISTS people (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, "
               "forgotten REAL)")
    db.execute("CREATE TABLE IF NOT EXISTS names (person INTEGER NOT NULL REFERENCES people(id), name TEXT NOT NULL, "
               "since REAL NOT NULL, until REAL)")
    database.ensure_index(db["names"], "names_name", ["name"])
    database.ensure_index(db["names"], "names_person", ["person"])


class People:
    """The people registry of one storage folder. Thread-safe (one connection behind a lock)."""

    def __init__(self, storage: Path) -> None:
        self.path = Path(storage) / DB_NAME
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = database.database(database.connect(self.path))
            database.ensure_layout(self.db, LAYOUT_VERSION, _create_tables)
        except database.LayoutError as exc:
            raise StorageError(f"{self.path}: cannot use the people registry: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"{self.path}: cannot open the people registry: {exc} "
                               f"({storage_hint(self.path.parent)})") from None

    @classmethod
    def of(cls, cfg: Config) -> People:
        return cls(cfg.path("storage"))

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> People:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ------------------------------------------------------------------------------------
    def _current(self, name: str) -> int | None:
        row = self.db.execute("SELECT person FROM names WHERE name = ? AND until IS NULL", [name]).fetchone()
        return None if row is None else int(row[0])

    def id_of(self, name: str, at: float | None = None) -> str | None:
        """The id of the person called `name`: at time `at` (epoch seconds) if given and known, else the one
        called so now, else the last one who was."""
        with self._lock:
            if at is not None:
                row = self.db.execute("SELECT person FROM names WHERE name = ? AND since <= ? AND "
                                      "(until IS NULL OR until > ?) ORDER BY since DESC LIMIT 1",
                                      [name, at, at]).fetchone()
                if row is not None:
                    return person_label(int(row[0]))
            current = self._current(name)
            if current is None:
                row = self.db.execute("SELECT person FROM names WHERE name = ? ORDER BY until DESC LIMIT 1",
                                      [name]).fetchone()
                current = None if row is None else int(row[0])
            return None if current is None else person_label(current)

    def name_of(self, person_id: str) -> str | None:
        """The current name of a person (None: unknown id, or forgotten)."""
        number = parse_person(person_id)
        if number is None:
            return None
        with self._lock:
            row = self.db.execute("SELECT name FROM names WHERE person = ? AND until IS NULL", [number]).fetchone()
        return None if row is None else str(row[0])

    def current_name(self, name: str, person_id: str | None, at: float) -> str | None:
        """The name a person logged as `name` at time `at` (epoch seconds) has now: by `person_id`, else (logged
        before events carried one) by who had the name then. None: not known (or forgotten)."""
        person = person_id or self.id_of(name, at=at)
        return self.name_of(person) if person else None

    def find(self, text: str) -> list[Person]:
        """The people any of whose names (now or before) starts with `text`, case-insensitively (Unicode
        casefold), or whose id it is."""
        key = text.strip().casefold()
        with self._lock:
            rows = list(self.db.execute("SELECT person, name, until FROM names ORDER BY person, since"))
        names: dict[int, list[tuple[str, Any]]] = {}
        for person, name, until in rows:
            names.setdefault(int(person), []).append((name, until))
        number = parse_person(text)
        out = []
        for person, had in names.items():
            if person == number or any(n.casefold().startswith(key) for n, _ in had):
                current = next((n for n, until in had if until is None), None)
                out.append(Person(person_label(person), current, tuple(dict.fromkeys(n for n, _ in had))))
        return out

    # ---- writing ------------------------------------------------------------------------------------
    def _create(self, name: str, since: float | None = None) -> int:
        now = time.time()
        if since is None:  # a name nobody had before has always been this person's (earlier events)
            had = self.db.execute("SELECT 1 FROM names WHERE name = ?", [name]).fetchone()
            since = now if had else 0.0
        person = int(self.db.execute("INSERT INTO people (created) VALUES (?)", [now]).lastrowid)
        self.db.execute("INSERT INTO names (person, name, since) VALUES (?, ?, ?)", [person, name, since])
        log.info("%s registered as %s", name, person_label(person))
        return person

    def register(self, names: Iterable[str]) -> None:
        """Every name that nobody has now becomes a new person (enrolled, trained)."""
        with self._lock, self.db.conn:
            for name in names:
                if self._current(name) is None:
                    self._create(name)

    def ensure(self, name: str) -> str:
        """`id_of(name)`, registering the name as a new person if nobody ever had it."""
        found = self.id_of(name)
        if found is not None:
            return found
        with self._lock, self.db.conn:
            current = self._current(name)
            return person_label(current if current is not None else self._create(name))

    def rename(self, old: str, new: str) -> str:
        """The person called `old` is called `new` from now on (registered first if needed); their id."""
        now = time.time()
        with self._lock, self.db.conn:
            person = self._current(old)
            if person is None:
                person = self._create(old)
            self.db.execute("UPDATE names SET until = ? WHERE name = ? AND until IS NULL", [now, new])
            self.db.execute("UPDATE names SET until = ? WHERE person = ? AND until IS NULL", [now, person])
            self.db.execute("INSERT INTO names (person, name, since) VALUES (?, ?, ?)", [person, new, now])
        log.info("%s (%s) renamed to %s", old, person_label(person), new)
        return person_label(person)

    def forget(self, name: str) -> str | None:
        """The person called `name` is forgotten: the name is free again (a new enrollment under it is a new
        person); their id stays in the events already logged. Returns the id (None if not registered)."""
        now = time.time()
        with self._lock, self.db.conn:
            person = self._current(name)
            if person is None:
                return None
            self.db.execute("UPDATE names SET until = ? WHERE person = ? AND until IS NULL", [now, person])
            self.db.execute("UPDATE people SET forgotten = ? WHERE id = ?", [now, person])
        return person_label(person)

    def erase_names(self, person_id: str) -> int:
        """Delete every name a forgotten person had (`face-agent forget`, docs/privacy.md): only the id and
        when it was created and forgotten stay (ids are never given again). How many names were deleted."""
        number = parse_person(person_id)
        if number is None:
            return 0
        with self._lock, self.db.conn:
            return self.db.execute("DELETE FROM names WHERE person = ? AND person IN (SELECT id FROM people "
                                   "WHERE forgotten IS NOT NULL)", [number]).rowcount


class PersonIds:
    """The frame loop's `person_id(name)`: `People.ensure` behind a cache (cleared when the classifier is
    swapped, the moment names may have changed). A registry that cannot be opened gives None (logged once) and
    is not opened again until the next swap."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self._cache: dict[str, str | None] = {}
        self._failed = False
        self._logged = False

    def clear(self) -> None:
        self._cache.clear()
        self._failed = False

    def __call__(self, name: str) -> str | None:
        if self._failed:
            return None
        if name not in self._cache:
            try:
                with People(self.storage) as people:
                    self._cache[name] = people.ensure(name)
            except (StorageError, sqlite3.Error) as exc:
                if not self._logged:
                    log.error("events carry no person_id: %s", exc)
                self._logged = True
                self._failed = True
                return None
        return self._cache[name]
