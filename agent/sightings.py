"""Sightings: the faces the agent saw, kept so that strangers can be grouped, named and re-identified.

For each confirmed track the best `[sightings] per_track` faces (by the tracker's quality) are kept: the
aligned 150x150 chip and a larger context crop (JPEG files under `<storage>/sightings/`), with the
embedding the pipeline already computed for the vote (nothing is embedded again) and the quality, indexed
in `<storage>/sightings.db` (SQLite, tables `sightings` and `clusters`). Which tracks: `[sightings] privacy`
= off (none), unknown (tracks that end unknown) or all (also named ones); a track that ends before its
votes settled is never kept (it may be somebody enrolled). Bounds: `max_days`, `max_count` and `max_mb`; over
a bound the oldest unknown sightings go first, then the oldest named ones. No crops are written while the
disk has less than `[store] reserve_mb` free: the event log needs that space more.

Unknown people: every unknown track joins an "unknown person" cluster (id `u<number>`, never reused). The
clustering is incremental: a track is compared with the existing clusters by the open-set rule of
`agent.vision.classifier` itself - the clusters stand in for enrolled people (their sightings are the
"photos"), and the track's unit-mean embedding joins the cluster the rule would name (distance to the
centroid, widened by the cluster's spread and the margin to the next cluster, against
`[recognition] distance_threshold`); a track the rule calls unknown starts a new cluster. Why not
`dlib.chinese_whispers_clustering`: it re-labels the whole graph on every run (randomised, ids not kept),
so a stranger's id would change between two sightings; assigning each track once keeps ids stable, costs
one prediction per track, and uses the same notion of "the same person" as naming does.

Users correct the clustering (`face-agent unknowns merge|ignore|unignore`, the web console's Unknown page;
the checks are in agent.naming): a merge moves every sighting of one cluster into another (the cluster
model is rebuilt from the sightings, so the merged person's next tracks join the merged cluster) and the
merged id keeps pointing at the cluster it joined (`clusters.merged_into`), so an event or request that
still names it reaches the right cluster. An ignored cluster (`clusters.ignored`: when) is left out of the
unknown list and of naming, but stays in the cluster model: its person's next tracks join it and stay
ignored. Their `unknown_face` events are logged and published as before (with the ignored id): ignoring is
a matter of what users look at, not of what the agent records (docs/events.md).

The frame loop only copies the candidate crops of live tracks (`observe`, a few arrays per embedded face);
JPEG encoding, files, SQLite and clustering run on a background thread when a track ends.

The table layout stays in this module: naming, the console and the commands ask `SightingStore` by name
(`of_cluster`, `by_track`, `track_sightings`, `unknown_since`, `cluster_tracks`; `mark_named`,
`mark_rejected`, `mark_reidentified`, `merge_clusters`, ...) and get rows as dicts. Reads, inserts and
deletes go through sqlite-utils (`rows_where`, `get`, `count_where`, `insert`, `delete_where`); plain SQL
only where it has no call (a join or grouping, an UPDATE of the rows a condition picks, PRAGMAs, the
AUTOINCREMENT table), each place saying so. The bounds (`enforce_bounds`) run after every stored track and
on the running agent's retention timer (agent.service).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sqlite_utils
from sqlite_utils.db import NotFoundError, quote_identifier

from agent import database
from agent.config import Config
from agent.dbcheck import DatabaseCheckError, check_database, error_hint, is_damage
from agent.files import FULL_BELOW_BYTES, StorageError, atomic_write, free_bytes, storage_hint
from agent.logsafe import RateLimitedLog
from agent.vision.classifier import Classifier, Prediction, unit_rows
from agent.vision.recognizer import QUALITY_REASONS

log = logging.getLogger(__name__)

DB_NAME = "sightings.db"
FOLDER = "sightings"
LAYOUT_VERSION = 3  # 2: clusters.merged_into and clusters.ignored; 3: sightings.camera
DIM = 128
DELETE_BATCH = 500  # sightings deleted per statement (SQLite caps the parameters of one)

SIGHTING_COLUMNS = {
    "id": int,
    "run": str,  # the agent run the track belongs to (track ids restarted with every run before schema 4)
    "track_id": int,
    "t": float,  # when this face was seen (epoch seconds)
    "first_seen": float,  # the track's first and last time
    "last_seen": float,
    "logged_from": float,  # wall-clock time of the track's first kept face and of its end: its events lie between
    "logged_until": float,
    "name": str,  # the track's final name (null: unknown)
    "cluster": int,  # unknown person cluster (null for named tracks)
    "quality": float,  # 0..1, the tracker's face quality
    "embedding": bytes,  # 128 float32
    "chip": str,  # JPEG file of the aligned chip, relative to the sightings folder
    "context": str,  # JPEG file of the context crop
    "bytes": int,  # size of both files
    "model": str,  # fingerprint of the classifier that judged the track (re-checked only by another one)
    "reidentified": str,  # name given by a later model (`reidentified` event), or null
    "rejected": str,  # name a user said this face is not (`face-agent reject`), or null
    "camera": str,  # the camera the track was seen on (null: kept before layout 3)
}


def _create_tables(db: sqlite_utils.Database) -> None:
    db["sightings"].create(SIGHTING_COLUMNS, pk="id", not_null={"run", "track_id", "t", "embedding"}, ignore=True)
    # AUTOINCREMENT: a cluster id is never given again, even after its cluster was deleted (plain SQL:
    # sqlite-utils' create() has no AUTOINCREMENT)
    # merged_into: the cluster this one's sightings moved to (merge); ignored: when it was ignored (null: shown)
    db.execute("CREATE TABLE IF NOT EXISTS clusters (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, "
               "name TEXT, merged_into INTEGER, ignored REAL)")
    database.ensure_index(db["sightings"], "sightings_t", ["t"])
    database.ensure_index(db["sightings"], "sightings_cluster", ["cluster"])
    database.ensure_index(db["sightings"], "sightings_track", ["track_id", "logged_from"])


def _add_merge_and_ignore(db: sqlite_utils.Database) -> None:
    """Layout 1 -> 2: the clusters table gets `merged_into` and `ignored`."""
    if "clusters" in db.table_names():
        columns = db["clusters"].columns_dict
        for column, kind in (("merged_into", int), ("ignored", float)):
            if column not in columns:
                db["clusters"].add_column(column, kind)


def _add_camera(db: sqlite_utils.Database) -> None:
    """Layout 2 -> 3: the sightings table gets `camera` (null for the faces kept before: not recorded)."""
    if "sightings" in db.table_names() and "camera" not in db["sightings"].columns_dict:
        db["sightings"].add_column("camera", str)


MIGRATIONS = {1: _add_merge_and_ignore, 2: _add_camera}


_CHECKED: set[str] = set()  # sightings files this process has checked (each is checked once per process)
_CHECKED_LOCK = threading.Lock()


def check_sightings_file(path: Path, again: bool = False) -> Path | None:
    """Check `path` (agent.dbcheck) the first time this process opens it, or `again`: a corrupt file is
    salvaged into a new one and kept beside it (the path it was moved to is returned; dbcheck logs it once).
    Raises StorageError when it cannot be checked (a lock, permissions)."""
    key = str(path.absolute())
    with _CHECKED_LOCK:
        if key in _CHECKED and not again:
            return None
        try:
            moved = check_database(path)
        except DatabaseCheckError as exc:
            raise StorageError(f"cannot use the sightings: {exc}") from None
        _CHECKED.add(key)
        return moved


def cluster_label(cluster: int) -> str:
    """The id users see: u<number>."""
    return f"u{cluster}"


def parse_cluster(label: str) -> int:
    """`u12` (or `12`) -> 12; ValueError otherwise."""
    text = label.strip().lower().removeprefix("u")
    if not text.isdigit():
        raise ValueError(f"{label!r} is not an unknown person's id (like u12)")
    return int(text)


@dataclass
class Candidate:
    """One face of a live track, a candidate for keeping."""

    quality: float
    t: float
    embedding: np.ndarray
    chip: np.ndarray  # RGB 150x150
    context: np.ndarray  # RGB crop around the face


@dataclass
class TrackFaces:
    """What is kept of one ended track."""

    track_id: int
    first_seen: float
    last_seen: float
    name: str | None
    unknown_id: int | None  # the cluster its unknown_face event named, if any
    faces: list[Candidate] = field(default_factory=list)
    logged_from: float = 0.0  # wall-clock times its events lie between (file sources may run faster than
    logged_until: float = 0.0  # real time, so the frame times above need not match the events' timestamps)
    model: str = ""  # fingerprint of the classifier that judged it
    camera: str | None = None  # the camera it was seen on


def context_crop(image: np.ndarray, box: Any, scale: float) -> np.ndarray:
    """A square crop `scale` times the face box's longer side, centred on it, clipped to the frame (a copy)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * scale
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = image.shape[:2]
    left, top = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    right, bottom = min(w, int(cx + side / 2)), min(h, int(cy + side / 2))
    return image[top:bottom, left:right].copy()


class SightingStore:
    """The sightings index and files of one config. Thread-safe (one connection behind a lock)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.s = cfg.sightings
        storage = cfg.path("storage")
        self.folder = storage / FOLDER
        self.path = storage / DB_NAME
        self._lock = threading.RLock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.folder}: cannot create the sightings folder: {exc.strerror} "
                               f"({storage_hint(storage)})") from None
        check_sightings_file(self.path)
        self._open()
        self._model: Classifier | None = None  # the clusters as an open-set "classifier"
        self._model_stamp: tuple = ()

    def _open(self) -> None:
        try:
            self.db = database.database(database.connect(self.path))
            database.ensure_layout(self.db, LAYOUT_VERSION, _create_tables, MIGRATIONS)
            self._sightings, self._clusters = self.db.table("sightings"), self.db.table("clusters")
        except database.LayoutError as exc:
            raise StorageError(f"{self.path}: cannot use the sightings: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"{self.path}: cannot open the sightings: {exc} ({error_hint(self.path, exc)})") \
                from None

    def salvage(self) -> Path | None:
        """The file was found damaged while in use: close it, check and salvage it (agent.dbcheck), open the
        new one. Returns where the damaged file was moved (None: the check found nothing)."""
        with self._lock:
            self.db.close()
            try:
                moved = check_sightings_file(self.path, again=True)
            finally:
                self._open()
                self._model = None
            return moved

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ---- writing ------------------------------------------------------------------------------------
    def _write_jpeg(self, rel: str, rgb: np.ndarray) -> int:
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, int(self.s.jpeg_quality)])
        if not ok:
            raise StorageError(f"{path}: cannot encode the crop")
        return atomic_write(path, data.tobytes())

    def add_track(self, run: str, track: TrackFaces) -> list[int]:
        """Store an ended track's faces (files, then rows); an unknown track joins or starts a cluster.
        Returns the new sighting ids."""
        if not track.faces:
            return []
        day = time.strftime("%Y%m%d", time.gmtime(track.first_seen))
        stems = [f"{day}/{run}-{track.track_id}-{n}" for n in range(len(track.faces))]
        try:
            return self._add_track(run, track, stems)
        except (OSError, sqlite3.Error) as exc:  # a full disk: no files left without their rows
            for stem in stems:
                for kind in ("chip", "context"):
                    (self.folder / f"{stem}-{kind}.jpg").unlink(missing_ok=True)
            hint = error_hint(self.path, exc) if isinstance(exc, sqlite3.Error) else storage_hint(self.folder)
            raise StorageError(f"{self.path}: cannot keep the faces of track {track.track_id}: {exc} "
                               f"({hint})") from exc

    def _add_track(self, run: str, track: TrackFaces, stems: list[str]) -> list[int]:
        sizes = [self._write_jpeg(f"{stem}-chip.jpg", face.chip) + self._write_jpeg(f"{stem}-context.jpg", face.context)
                 for face, stem in zip(track.faces, stems, strict=True)]  # outside the lock: the frame loop matches
        with self._lock:
            cluster = None
            if track.name is None:
                cluster = self.assign_cluster(np.stack([c.embedding for c in track.faces]), track.unknown_id)
            ids = []
            with self.db.atomic():  # the track's rows all or none
                for face, stem, size in zip(track.faces, stems, sizes, strict=True):
                    row = {"run": run, "track_id": track.track_id, "t": face.t, "first_seen": track.first_seen,
                           "last_seen": track.last_seen, "logged_from": track.logged_from,
                           "logged_until": track.logged_until, "model": track.model, "name": track.name,
                           "cluster": cluster, "camera": track.camera,
                           "quality": round(float(face.quality), 4),
                           "embedding": np.asarray(face.embedding, dtype=np.float32).tobytes(),
                           "chip": f"{stem}-chip.jpg", "context": f"{stem}-context.jpg", "bytes": size}
                    ids.append(self._sightings.insert(row).last_pk)
            self.enforce_bounds()
            return ids

    # ---- clusters -----------------------------------------------------------------------------------
    def _cluster_model(self) -> Classifier | None:
        """Every unknown cluster as a "person" of an open-set classifier (no SVM), each of its tracks one
        "photo" (the unit mean of the track's faces: faces of one track are not independent looks), so the
        rule that names enrolled people decides who is the same stranger. Rebuilt when the sightings changed,
        in this process or another one (the console): a new sighting raises MAX(id), a deleted one lowers
        COUNT(*), and a sighting moved to another cluster (merge, reject) changes SUM(cluster)."""
        stamp = tuple(self._one(self._sightings, "COALESCE(MAX(id), 0) AS top, COUNT(*) AS n, "
                                                 "COALESCE(SUM(cluster), 0) AS clusters").values())
        if self._model is not None and stamp == self._model_stamp:
            return self._model
        tracks: dict[tuple[str, int], list] = {}
        for r in self._sightings.rows_where("cluster IS NOT NULL", select="run, track_id, cluster, embedding",
                                            order_by="cluster, id"):
            tracks.setdefault((r["run"], r["track_id"]), [r["cluster"], []])[1].append(
                np.frombuffer(r["embedding"], dtype=np.float32))
        if not tracks:
            self._model, self._model_stamp = None, stamp
            return None
        clusters = sorted({c for c, _ in tracks.values()})
        index = {c: i for i, c in enumerate(clusters)}
        X = np.stack([unit_rows(np.stack(e)).mean(axis=0) for _, e in tracks.values()]).astype(np.float32)
        labels = np.array([index[c] for c, _ in tracks.values()], dtype=np.int64)
        self._model = Classifier([str(c) for c in clusters], X, labels, None, self.cfg.recognition)
        self._model_stamp = stamp
        return self._model

    def match(self, embeddings: np.ndarray) -> Prediction | None:
        """The open-set rule on the unit mean of a track's embeddings against the clusters (None: none yet)."""
        embeddings = np.asarray(embeddings, dtype=np.float64).reshape(-1, DIM)
        if not len(embeddings):
            return None
        with self._lock:
            model = self._cluster_model()
        if model is None:
            return None
        mean = unit_rows(embeddings).mean(axis=0)
        return model.predict(mean[None, :])[0]

    def assign_cluster(self, embeddings: np.ndarray, hint: int | None = None, not_named: str | None = None) -> int:
        """The cluster a track's faces join: `hint` (what its events said) - the one it was merged into, or
        the same id again if it went meanwhile (it was empty: its track had not ended yet) -, else the one the
        rule names (unless that one is named `not_named`: faces said not to be that person), else a new one."""
        with self._lock:
            if hint is not None:
                found = self._cluster_row(hint)
                if found is not None:
                    return int(found["merged_into"] or found["id"])
                self._clusters.insert({"id": hint, "created": time.time(), "name": None})  # an id once announced
                return hint  # stays that person's
            prediction = self.match(embeddings)
            if prediction is not None and prediction.name is not None:
                row = self._cluster_row(int(prediction.name))
                if not_named is None or row is None or row["name"] != not_named:
                    return int(prediction.name)
            return self.new_cluster()

    def new_cluster(self) -> int:
        """A new unknown person (an id never given before), without sightings yet."""
        with self._lock:
            return int(self._clusters.insert({"created": time.time(), "name": None}).last_pk)

    def clusters(self, ignored: bool | None = False) -> list[dict[str, Any]]:
        """Every cluster with its counts, times and best chips (best first): `ignored` False = the ones shown
        (not ignored), True = only the ignored ones, None = all."""
        shown = {False: "WHERE c.ignored IS NULL ", True: "WHERE c.ignored IS NOT NULL ", None: ""}[ignored]
        with self._lock:
            # plain SQL: a join with grouping, which sqlite-utils has no call for
            rows = list(self.db.query(
                "SELECT c.id, c.name, c.ignored, COUNT(s.id) AS sightings, "
                "COUNT(DISTINCT s.run || ':' || s.track_id) AS tracks, MIN(s.t) AS first_seen, MAX(s.t) AS last_seen "
                f"FROM clusters c JOIN sightings s ON s.cluster = c.id {shown}GROUP BY c.id ORDER BY c.id"))
            return [self._cluster_summary(r) for r in rows]

    def _cluster_summary(self, r: dict[str, Any]) -> dict[str, Any]:
        """One row of `clusters()`: its chips (best first), the ids merged into it and its cameras (the one
        seen on last first)."""
        faces = list(self._sightings.rows_where("cluster = ?", [r["id"]], select="chip, camera, t",
                                                order_by="quality DESC, id"))
        last: dict[str, float] = {}
        for face in faces:
            if face["camera"] is not None:
                last[face["camera"]] = max(last.get(face["camera"], face["t"]), face["t"])
        chips = [str(self.folder / face["chip"]) for face in faces]
        merged = [cluster_label(m["id"]) for m in self._clusters.rows_where("merged_into = ?", [r["id"]],
                                                                            select="id", order_by="id")]
        return {"id": cluster_label(r["id"]), "name": r["name"], "sightings": r["sightings"], "tracks": r["tracks"],
                "first_seen": r["first_seen"], "last_seen": r["last_seen"], "ignored": r["ignored"] is not None,
                "merged": merged, "cameras": sorted(last, key=lambda camera: -last[camera]),
                "representative": chips[0] if chips else None, "chips": chips}

    def _cluster_row(self, cluster: int) -> dict[str, Any] | None:
        try:
            return self._clusters.get(cluster)
        except NotFoundError:
            return None

    def cluster(self, cluster: int) -> dict[str, Any] | None:
        """The clusters row of `cluster` (id, created, name, merged_into, ignored) with its sighting count,
        or None."""
        with self._lock:
            row = self._cluster_row(cluster)
            if row is None:
                return None
            return {**row, "sightings": self._sightings.count_where("cluster = ?", [cluster])}

    def merge_clusters(self, source: int, target: int) -> int:
        """Every sighting of `source` moves to `target`; `source` (and what was merged into it) then points
        at `target`, and `target` is ignored if either was. One transaction. Returns the sightings moved
        (checks: agent.naming.merge_unknowns)."""
        with self._lock, self.db.atomic():
            moved = self._set(self._sightings, {"cluster": target}, "cluster = ?", [source])
            was = self._cluster_row(source)
            if was is not None and was["ignored"] is not None:
                self._set(self._clusters, {"ignored": was["ignored"]}, "id = ? AND ignored IS NULL", [target])
            self._set(self._clusters, {"merged_into": target}, "id = ? OR merged_into = ?", [source, source])
            self._model = None
        return moved

    def reset_model(self) -> None:
        """Build the clusters' model again at the next match ([recognition] changed in this process)."""
        with self._lock:
            self._model = None

    def set_ignored(self, cluster: int, ignored: bool) -> None:
        with self._lock:
            self._set(self._clusters, {"ignored": time.time() if ignored else None}, "id = ?", [cluster])

    def mark_named(self, cluster: int, person: str) -> None:
        """The unknown person `cluster` was named `person` (agent.naming.name_cluster)."""
        with self._lock:
            self._set(self._clusters, {"name": person}, "id = ?", [cluster])

    # ---- the sightings, by what naming, the console and the bounds ask for -------------------------
    def _rows(self, where: str | None = None, params: list | tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._sightings.rows_where(where, list(params), order_by="id"))

    def sightings(self) -> list[dict[str, Any]]:
        """Every sighting, oldest first."""
        return self._rows()

    def of_cluster(self, cluster: int) -> list[dict[str, Any]]:
        """The sightings of an unknown person."""
        return self._rows("cluster = ?", [cluster])

    def by_track(self, track_id: int) -> list[dict[str, Any]]:
        """The sightings of every track with this id (ids never repeat since schema 4; older logs may)."""
        return self._rows("track_id = ?", [track_id])

    def track_sightings(self, track_id: int, at: float, slack: float = 2.0) -> list[dict[str, Any]]:
        """The sightings of track `track_id` that had an event at wall-clock time `at` (track ids restart
        with every run)."""
        return self._rows("track_id = ? AND logged_from - ? <= ? AND logged_until + ? >= ?",
                          [track_id, slack, at, slack, at])

    def unknown_since(self, since: float, model: str) -> list[dict[str, Any]]:
        """The sightings of unknown tracks seen at `since` or later, not re-identified yet and judged by
        another classifier than `model` (a fingerprint): what a retrain may name now."""
        return self._rows("name IS NULL AND reidentified IS NULL AND t >= ? AND COALESCE(model, '') != ?",
                          [since, model])

    def cluster_tracks(self, cluster: int, before: float | None, limit: int) -> list[dict[str, Any]]:
        """The tracks of an unknown person, newest first (run, track_id, camera, logged_from), those whose
        faces were first kept before `before` (a page's cursor) when given."""
        with self._lock:
            # plain SQL: grouping with a condition on the groups, which sqlite-utils has no call for
            return list(self.db.query(
                "SELECT run, track_id, MAX(camera) AS camera, MIN(logged_from) AS logged_from FROM sightings "
                "WHERE cluster = ? GROUP BY run, track_id HAVING ? IS NULL OR MIN(logged_from) < ? "
                "ORDER BY logged_from DESC LIMIT ?", [cluster, before, before, limit]))

    def mark_rejected(self, ids: list[int], person: str) -> int:
        """The sightings `ids` (one track's) are not `person` (`face-agent reject`): they become unknown
        and join the unknown person the rule names - unless that one is named `person` - or a new one.
        Returns that cluster."""
        with self._lock:
            rows = self._rows(f"id IN ({_marks(ids)})", ids)
            cluster = self.assign_cluster(np.stack([embedding_of(r) for r in rows]), not_named=person)
            with self.db.atomic():
                self._set(self._sightings, {"name": None, "rejected": person, "cluster": cluster},
                          f"id IN ({_marks(ids)})", ids)
            return cluster

    def mark_reidentified(self, ids: list[int], person: str) -> None:
        """A later classifier named the sightings `ids` `person` (a `reidentified` event)."""
        with self._lock:
            self._set(self._sightings, {"reidentified": person}, f"id IN ({_marks(ids)})", ids)

    def rename_person(self, old: str, new: str) -> None:
        """A person was renamed: the faces and unknown people named after them follow."""
        with self._lock, self.db.atomic():
            for column in ("name", "reidentified", "rejected"):
                self._set(self._sightings, {column: new}, f"{column} = ?", [old])
            self._set(self._clusters, {"name": new}, "name = ?", [old])

    def _set(self, table: sqlite_utils.db.Table, values: dict[str, Any], where: str, params: list | tuple) -> int:
        """UPDATE the rows `where` picks; how many. Plain SQL: sqlite-utils' update() changes one row by its
        primary key after reading it (and fails on one that went meanwhile); these change every row a
        condition picks, in one statement."""
        sets = ", ".join(f"{quote_identifier(column)} = ?" for column in values)
        with self.db.atomic():
            return self.db.execute(f"UPDATE {quote_identifier(table.name)} SET {sets} WHERE {where}",
                                   [*values.values(), *params]).rowcount

    def _one(self, table: sqlite_utils.db.Table, select: str) -> dict[str, Any]:
        """One row of aggregates over `table` (`select`: e.g. "COUNT(*) AS n")."""
        return next(iter(table.rows_where(select=select)))

    # ---- deleting -----------------------------------------------------------------------------------
    def _delete(self, rows: list[dict[str, Any]]) -> int:
        for r in rows:
            for rel in (r["chip"], r["context"]):
                if rel:
                    (self.folder / rel).unlink(missing_ok=True)
        with self.db.atomic():
            for start in range(0, len(rows), DELETE_BATCH):
                ids = [r["id"] for r in rows[start:start + DELETE_BATCH]]
                self._sightings.delete_where(f"id IN ({_marks(ids)})", ids)
            self._drop_empty_clusters()
        return len(rows)

    def _drop_empty_clusters(self) -> None:
        """Unnamed clusters without sightings go (an ignored one too: nothing is left to match its person
        by), and merged ids whose cluster went."""
        self._clusters.delete_where("name IS NULL AND merged_into IS NULL AND id NOT IN "
                                    "(SELECT DISTINCT cluster FROM sightings WHERE cluster IS NOT NULL)")
        self._clusters.delete_where("merged_into IS NOT NULL AND merged_into NOT IN (SELECT id FROM clusters)")

    def forget(self, person: str) -> int:
        """Delete every sighting of `person` (named, re-identified, in a cluster named after them, or said
        not to be them by `reject`): rows, embeddings, chips and context crops; the rows' pages are overwritten
        (secure_delete) and the WAL truncated, so no embedding stays readable in the files."""
        with self._lock:
            rows = self._rows("name = ? OR reidentified = ? OR rejected = ? OR cluster IN "
                              "(SELECT id FROM clusters WHERE name = ?)", [person, person, person, person])
            # PRAGMAs are plain SQL: sqlite-utils has no call for them
            self.db.execute("PRAGMA secure_delete = ON")
            try:
                n = self._delete(rows)
                with self.db.atomic():
                    self._clusters.delete_where("name = ?", [person])
                    self._drop_empty_clusters()
            finally:
                self.db.execute("PRAGMA secure_delete = OFF")
            with contextlib.suppress(sqlite3.OperationalError):
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return n

    def totals(self) -> dict[str, int]:
        with self._lock:
            row = self._one(self._sightings, "COUNT(*) AS count, COALESCE(SUM(bytes), 0) AS bytes")
            return {"count": int(row["count"]), "bytes": int(row["bytes"])}

    def enforce_bounds(self, now: float | None = None) -> int:
        """Apply max_days, then max_count and max_mb (oldest unknown sightings first). Returns rows deleted.
        Runs after every stored track and on the agent's retention timer (agent.service)."""
        now = time.time() if now is None else now
        with self._lock:
            deleted = self._delete(self._rows("t < ?", [now - self.s.max_days * 86400]))
            totals = self.totals()
            excess_count = totals["count"] - self.s.max_count
            excess_bytes = totals["bytes"] - int(self.s.max_mb * 1e6)
            if excess_count <= 0 and excess_bytes <= 0:
                return deleted
            victims = []
            for r in self._sightings.rows_where(select="id, chip, context, bytes", order_by="name IS NOT NULL, t, id"):
                if excess_count <= 0 and excess_bytes <= 0:
                    break
                victims.append(r)
                excess_count -= 1
                excess_bytes -= r["bytes"] or 0
            deleted += self._delete(victims)
            log.info("sightings over their bounds: %d deleted", deleted)
            return deleted


def _marks(values: list) -> str:
    """'?, ?, ?' for an IN (...) of `values`."""
    return ", ".join("?" * len(values))


def embedding_of(row: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(row["embedding"], dtype=np.float32).copy()


class Sightings:
    """The frame loop's side: collect each live track's best faces, hand ended tracks to a writer thread."""

    def __init__(self, cfg: Config, run: str, model: str = ""):
        """`run`: an id of this agent run; `model`: the classifier's fingerprint (update it on a swap)."""
        self.cfg = cfg
        self.model = model
        self.s = cfg.sightings
        self.run = run
        self.store = SightingStore(cfg)
        self._live: dict[int, list[Candidate]] = {}  # track id -> best faces so far
        self._unknown_ids: dict[int, int] = {}  # track id -> cluster named in its unknown_face event
        self._logged_from: dict[int, float] = {}  # track id -> wall-clock time of its first kept face
        self._queue: queue.Queue[TrackFaces | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="sightings", daemon=True)
        self._broken = False  # the file is damaged beyond salvage: nothing more is written this run
        self._errors = RateLimitedLog(log, per_period=3)  # a full disk: 3 lines a minute, not one per track
        self.stored = 0  # sightings written
        self.lost = 0  # tracks whose faces could not be kept
        # crops are not written into the last free space: the event log needs it more
        self._floor = max(FULL_BELOW_BYTES, int(cfg.store.reserve_mb * 2**20))
        self._thread.start()

    def observe(self, result: Any, image: np.ndarray) -> None:
        """Keep the frame's embedded faces (agent.vision.pipeline.FrameResult) that beat a track's worst."""
        for rec in result.recognitions:
            if rec.embedding is None or rec.chip is None or rec.prediction.reason in QUALITY_REASONS:
                continue
            track = rec.track
            quality = float(track.embed_quality)
            kept = self._live.setdefault(track.id, [])
            self._logged_from.setdefault(track.id, time.time())
            if len(kept) >= self.s.per_track and quality <= kept[-1].quality:
                continue
            kept.append(Candidate(quality, float(result.timestamp), np.asarray(rec.embedding, np.float32).copy(),
                                  np.ascontiguousarray(rec.chip).copy(),
                                  context_crop(image, rec.detection.box, self.s.context_scale)))
            kept.sort(key=lambda c: -c.quality)
            del kept[self.s.per_track:]

    def unknown_id(self, track: Any) -> str | None:
        """The unknown person a track that settled unknown is (its `unknown_face` and `track_ended` events):
        the one it was given before, else the existing one the rule names, else a new one made now (its
        faces join it when the track ends), so that even a stranger's first visit is linked. None only when
        the sightings cannot be read or written."""
        if track.id in self._unknown_ids:
            return cluster_label(self._unknown_ids[track.id])
        embeddings = [c.embedding for c in self._live.get(track.id, [])] or list(track.embeddings)
        try:
            prediction = self.store.match(np.stack(embeddings)) if embeddings else None
            if prediction is not None and prediction.name is not None:
                cluster = int(prediction.name)
            else:
                cluster = self.store.new_cluster()
        except sqlite3.Error as exc:
            log.warning("cannot match the unknown face against the sightings: %s", exc)
            return None
        self._unknown_ids[track.id] = cluster
        return cluster_label(cluster)

    def unknown_id_of(self, track: Any) -> str | None:
        """The unknown person already given to a live track (None: none)."""
        cluster = self._unknown_ids.get(track.id)
        return None if cluster is None else cluster_label(cluster)

    def ended(self, track: Any, camera: str | None) -> None:
        """A track of `camera` ended: its faces are stored (by the writer thread) if the privacy setting
        allows."""
        faces = self._live.pop(track.id, [])
        unknown_id = self._unknown_ids.pop(track.id, None)
        logged_from = self._logged_from.pop(track.id, time.time())
        name = track.name if track.status == "named" else None
        if not faces or track.status not in ("named", "unknown") or (name is not None and self.s.privacy != "all"):
            return  # never settled (who it was is not known: maybe somebody enrolled), or privacy
        self._queue.put(TrackFaces(track.id, track.first_seen, track.last_seen, name, unknown_id, faces,
                                   logged_from, time.time(), self.model, camera))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._broken:
                self.lost += 1
                continue
            free = free_bytes(self.store.folder)
            if free is not None and free < self._floor:
                self.lost += 1
                self._errors.log(logging.WARNING, "the faces of track %d were not kept: %.1f MB free on the disk "
                                 "holding %s, the event log comes first ([store] reserve_mb)", item.track_id,
                                 free / 2**20, self.store.folder)
                continue
            try:
                self.stored += len(self.store.add_track(self.run, item))
            except (StorageError, OSError, sqlite3.Error) as exc:
                if is_damage(exc) or is_damage(exc.__cause__):
                    self._damaged(item)
                else:
                    self.lost += 1
                    self._errors.log(logging.ERROR, "the faces of track %d were not kept: %s", item.track_id, exc)

    def _damaged(self, item: TrackFaces) -> None:
        """sightings.db turned out damaged while running: salvage it once and retry; if that does not help,
        keep no faces for the rest of this run (one error line, not one per track)."""
        try:
            self.store.salvage()
            self.stored += len(self.store.add_track(self.run, item))
        except (StorageError, OSError, sqlite3.Error) as exc:
            self._broken = True
            self.lost += 1
            log.error("the sightings cannot be written (%s): no faces are kept for the rest of this run", exc)

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()
        self.store.close()


def majority(predictions: list[Prediction]) -> tuple[str | None, float]:
    """The name most of a track's predictions give (None if most say unknown) and its best confidence."""
    names = Counter(p.name for p in predictions)
    name, votes = names.most_common(1)[0]
    if name is None or votes * 2 <= len(predictions):
        return None, 0.0
    return name, max(p.confidence for p in predictions if p.name == name)

