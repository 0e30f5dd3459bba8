"""From sightings to enrollment: name an unknown person or a track, say "that was not X", re-identify.

- `name_faces`: the best kept faces of an unknown person (cluster) or of one track are enrolled as a
  person through the gallery (`Gallery.add_image`: the same checks and files as every other enrollment),
  best first and one per track before a second of the same track, near-identical faces once
  (`[recognition] duplicate_distance`); the context crop is enrolled (a photo
  with the face and some of its surroundings, as enrollment expects), its aligned chip when the crop is
  refused. Then the classifier retrains.
- `reject`: the faces of the track an `identified` event named are recorded as negatives of that name
  (`Gallery.add_negatives`; the classifier's gate uses them), the sightings become unknown ones (and join
  an unknown person), and the classifier retrains.
- `reidentify`: after a retrain, the unknown sightings of the last `[sightings] reidentify_hours` are
  checked against the new classifier (those a different one judged); a track the majority of whose faces
  now match a person gives a `reidentified` event (once).
- `merge_unknowns` / `ignore_unknown`: correct the clustering of unknown people (two clusters that are one
  person; a person nobody wants to see again, e.g. the postman) - `face-agent unknowns merge|ignore|
  unignore` and the web console call these; what they do to the store is in agent.sightings.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Config
from agent.events import IDENTIFIED, REIDENTIFIED, UNKNOWN_FACE, Event, EventFactory, parse_timestamp
from agent.files import StorageError
from agent.gallery import Gallery, validate_person_name
from agent.people import People, PersonIds
from agent.sightings import SightingStore, cluster_label, embedding_of, majority, parse_cluster
from agent.vision.classifier import Classifier, unit_rows

log = logging.getLogger(__name__)


class NamingError(ValueError):
    """A name, reject or lookup that cannot be done; the message says why."""


def faces(n: int) -> str:
    """'1 face', '3 faces'."""
    return f"{n} face{'' if n == 1 else 's'}"


def enrolled_text(named: Named) -> str:
    """What naming stored, counted as stored: '4 faces enrolled', '3 faces enrolled (1 was the same image
    as another, already enrolled; 1 not usable)'."""
    text = f"{faces(named.added)} enrolled"
    notes = []
    if named.already:
        notes.append(f"{named.already} {'was' if named.already == 1 else 'were'} the same image as another, "
                     "already enrolled")
    if named.refused:
        notes.append(f"{len(named.refused)} not usable")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def current_name(cfg: Config, event: Event) -> str | None:
    """The name the person an event named has now (agent.people: a rename since), else the event's."""
    if event.name is None:
        return None
    try:
        with People.of(cfg) as people:
            return people.current_name(event.name, event.person_id, event.time) or event.name
    except (StorageError, sqlite3.Error) as exc:
        log.warning("people registry: %s", exc)
        return event.name


def rejected_text(event: Event, done: Rejected) -> str:
    """What `reject` says: what it recorded, or that it had been done before."""
    person = done.person or event.name
    if done.already:
        return (f"event {event.event_id} was already rejected: the {faces(done.faces)} of track {event.track_id} "
                f"are known not to be {person} (nothing changed)")
    return (f"track {event.track_id} is not {person}: {faces(done.added)} recorded as not {person} "
            f"({done.total} in all); the faces are now {done.unknown_id}")


def people_count(n: int) -> str:
    """'1 person', '3 people'."""
    return f"{n} {'person' if n == 1 else 'people'}"


def article(word: str) -> str:
    """'an unknown_face', 'a track_ended'."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


@dataclass
class Named:
    """What naming did: the faces offered and the ones enrolled (stored photo names)."""

    person: str
    offered: int
    enrolled: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # messages
    classifier: Classifier | None = None

    added: int = 0  # new photo files stored (a face that was the same image as another one is stored once)

    @property
    def already(self) -> int:
        """Faces accepted whose image was already stored."""
        return len(self.enrolled) - self.added


def _spread_over_tracks(rows: list[dict[str, Any]], limit: int, duplicate_distance: float = 0.0
                        ) -> list[dict[str, Any]]:
    """Best first, but each track's best face before anybody's second one (varied looks), and no face nearly
    identical to one already chosen (embeddings within `duplicate_distance`: the classifier would count them as
    one view anyway, `classifier.distinct_views`)."""
    rows = sorted(rows, key=lambda r: (-(r["quality"] or 0.0), r["id"]))
    rank: dict[tuple, int] = defaultdict(int)
    keyed = []
    for r in rows:
        key = (r["run"], r["track_id"])
        keyed.append((rank[key], r))
        rank[key] += 1
    chosen: list[dict[str, Any]] = []
    kept: list[np.ndarray] = []
    for _, r in sorted(keyed, key=lambda kr: kr[0]):
        unit = unit_rows(embedding_of(r))[0]
        if any(float(np.linalg.norm(unit - k)) < duplicate_distance for k in kept):
            continue
        chosen.append(r)
        kept.append(unit)
        if len(chosen) == limit:
            break
    return chosen


def find_cluster(store: SightingStore, unknown_id: str) -> dict[str, Any]:
    """The clusters row of an unknown person with sightings (SightingStore.cluster); NamingError if the id is
    malformed, unknown, or was merged into another one (the message names it)."""
    try:
        cluster = parse_cluster(unknown_id)
    except ValueError as exc:
        raise NamingError(str(exc)) from None
    row = store.cluster(cluster)
    if row is not None and row["merged_into"] is not None:
        raise NamingError(f"{cluster_label(cluster)} was merged into {cluster_label(row['merged_into'])}: "
                          f"use {cluster_label(row['merged_into'])}")
    if row is None or not row["sightings"]:
        raise NamingError(f"no unknown person {cluster_label(cluster)} (see `face-agent unknowns`)")
    return row


def cluster_faces(store: SightingStore, unknown_id: str) -> tuple[int, list[dict[str, Any]]]:
    """The sightings of an unknown person to name; an ignored one is not offered (NamingError)."""
    row = find_cluster(store, unknown_id)
    label = cluster_label(row["id"])
    if row["ignored"] is not None:
        raise NamingError(f"{label} is ignored: `face-agent unknowns unignore {label}` first to name it")
    return row["id"], store.of_cluster(row["id"])


def merge_unknowns(store: SightingStore, source_id: str, target_id: str) -> tuple[int, int]:
    """`face-agent unknowns merge SOURCE TARGET`: the two clusters are one person; every sighting of SOURCE
    moves to TARGET (its next tracks join TARGET), SOURCE's id points at TARGET from now on, and TARGET is
    ignored if either was. Named clusters are not merged (name the other one as that person instead).
    Returns (target cluster, sightings moved)."""
    source, target = find_cluster(store, source_id), find_cluster(store, target_id)
    s_label, t_label = cluster_label(source["id"]), cluster_label(target["id"])
    if source["id"] == target["id"]:
        raise NamingError(f"{s_label} cannot be merged into itself")
    for row, label, other in ((source, s_label, t_label), (target, t_label, s_label)):
        if row["name"] is not None:
            raise NamingError(f"{label} is named {row['name']}: name {other} as {row['name']} instead of merging "
                              f"(`face-agent name {other} {row['name']}`)")
    moved = store.merge_clusters(source["id"], target["id"])
    log.info("%s merged into %s: %d sightings moved", s_label, t_label, moved)
    return target["id"], moved


def ignore_unknown(store: SightingStore, unknown_id: str, ignored: bool = True) -> int:
    """`face-agent unknowns ignore|unignore UNKNOWN_ID`: hide the cluster from the unknown list and from
    naming (its person's next tracks still join it, so it stays ignored), or show it again. Returns the
    cluster."""
    row = find_cluster(store, unknown_id)
    label = cluster_label(row["id"])
    if ignored and row["name"] is not None:
        raise NamingError(f"{label} is named {row['name']}: `face-agent forget {row['name']}` instead")
    store.set_ignored(row["id"], ignored)
    log.info("%s %s", label, "ignored" if ignored else "shown again")
    return row["id"]


def track_faces(store: SightingStore, track_id: int) -> list[dict[str, Any]]:
    """The faces of the latest track with this id (ids never repeat since schema 4; older logs may repeat)."""
    rows = store.by_track(track_id)
    if not rows:
        raise NamingError(f"no faces of track {track_id} were kept (see [sightings] privacy)")
    latest = max(r["first_seen"] for r in rows)
    return [r for r in rows if r["first_seen"] == latest]


def name_faces(gallery: Gallery, store: SightingStore, rows: list[dict[str, Any]], person: str,
               progress: bool = False, retrain: bool = True) -> Named:
    """Enroll the best of `rows` (sighting rows) as `person` and (`retrain`) retrain; NamingError if none is
    usable."""
    person = validate_person_name(person)
    limit = gallery.cfg.sightings.name_faces
    chosen = _spread_over_tracks(rows, limit, gallery.cfg.recognition.duplicate_distance)
    named = Named(person, len(chosen))
    with tempfile.TemporaryDirectory(prefix="face-agent-name-") as tmp:
        for row in chosen:
            label = f"{cluster_label(row['cluster']) if row['cluster'] else 'track'}-{row['track_id']}-{row['id']}"
            result = None
            for kind in ("context", "chip"):
                path = store.folder / row[kind]
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    named.refused.append(f"{path}: {exc.strerror or exc}")
                    continue
                result = gallery.add_image(person, data, f"{label}-{kind}.jpg", gallery.cfg.images.max_bytes,
                                           Path(tmp))
                if result.accepted:
                    named.enrolled.append(result.stored_as or "")
                    named.added += int(result.new)
                    break
            if result is not None and not result.accepted:
                named.refused.append(result.message or result.reason or "refused")
    if not named.enrolled:
        raise NamingError(f"none of the {len(chosen)} faces could be enrolled as {person}: "
                          + "; ".join(named.refused[:3]))
    if retrain:
        named.classifier, _, _ = gallery.ensure_trained(progress=progress)
    return named


def name_cluster(gallery: Gallery, store: SightingStore, unknown_id: str, person: str,
                 progress: bool = False, retrain: bool = True) -> Named:
    """`face-agent name UNKNOWN_ID PERSON`: enroll the cluster's best faces, mark the cluster named. An
    unknown person already named somebody else is refused (their faces would be enrolled under two people):
    the hint says to merge or reject instead."""
    person = validate_person_name(person)
    row = find_cluster(store, unknown_id)
    label = cluster_label(row["id"])
    if row["name"] is not None and row["name"] != person:
        raise NamingError(
            f"{label} is already named {row['name']}: its faces are enrolled as {row['name']}. If {label} is "
            f"{person} and {row['name']} is another person, reject the wrong identifications "
            f"(`face-agent reject EVENT_ID`, see `face-agent events --name {row['name']!r}`); if they are one "
            f"person, rename instead (`face-agent rename {row['name']!r} {person!r}`) or merge another unknown "
            f"person into {label} (`face-agent unknowns merge UNKNOWN_ID {label}`)")
    cluster, rows = cluster_faces(store, unknown_id)
    named = name_faces(gallery, store, rows, person, progress, retrain)
    store.mark_named(cluster, named.person)
    log.info("%s named %s: %s", cluster_label(cluster), named.person, enrolled_text(named))
    return named


@dataclass
class Rejected:
    """What `reject` did: the faces of the track, the negatives it added (0: it was rejected before)."""

    faces: int
    added: int
    total: int  # negatives recorded for the person now
    unknown_id: str | None  # the unknown person the faces are now
    person: str = ""  # the person they are not (the name they have now)
    classifier: Classifier | None = None

    @property
    def already(self) -> bool:
        return self.added == 0


def reject(gallery: Gallery, store: SightingStore, event: Event, progress: bool = False,
           retrain: bool = True) -> Rejected:
    """`face-agent reject EVENT_ID`: the faces of the track `event` (identified) named are not that person.
    Rejecting the same identification again changes nothing (`Rejected.already`)."""
    if event.type not in (IDENTIFIED, REIDENTIFIED) or not event.name or event.track_id is None:
        raise NamingError(f"event {event.event_id} is {article(event.type)} event: only an identification "
                          "(identified, reidentified) can be rejected")
    at = parse_timestamp(event.seen_at) if event.type == REIDENTIFIED and event.seen_at else event.time
    event = dataclasses.replace(event, name=current_name(gallery.cfg, event))  # renamed since: the name now
    rows = store.track_sightings(event.track_id, at)
    if not rows:
        raise NamingError(f"no faces of track {event.track_id} around {event.timestamp} were kept, so there is "
                          f"nothing to learn from ([sightings] privacy = {gallery.cfg.sightings.privacy!r}; "
                          "named tracks are kept only with \"all\")")
    if all(r["rejected"] == event.name for r in rows):
        cluster = rows[0]["cluster"]
        return Rejected(len(rows), 0, len(gallery.negatives_of(event.name)),
                        cluster_label(cluster) if cluster else None, event.name)
    embeddings = np.stack([embedding_of(r) for r in rows])
    added, total = gallery.add_negatives(event.name, embeddings)
    cluster = store.mark_rejected([r["id"] for r in rows], event.name)  # unknown now, in a cluster not named so
    log.info("event %s: %s of track %d are not %s (now %s)", event.event_id, faces(len(rows)), event.track_id,
             event.name, cluster_label(cluster))
    done = Rejected(len(rows), added, total, cluster_label(cluster), event.name)
    if retrain:
        done.classifier, _, _ = gallery.ensure_trained(progress=progress)
    return done


def reidentify(store: SightingStore, classifier: Classifier, factory: EventFactory, hours: float,
               now: float | None = None, event_log: Any = None) -> list[Event]:
    """`reidentified` events for the recent unknown tracks the new classifier names (each once), each with
    when the face was seen, and - found in `event_log` (agent.store.EventStore) - the track's `unknown_face`
    event (its id and camera; its thumbnail, else the best kept face, when thumbnails are on)."""
    now = time.time() if now is None else now
    model = classifier.summary.fingerprint
    rows = store.unknown_since(now - hours * 3600, model)
    tracks: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        tracks[(r["run"], r["track_id"])].append(r)
    events = []
    for (_, track_id), faces_ in tracks.items():
        predictions = classifier.predict(np.stack([embedding_of(r) for r in faces_]))
        name, confidence = majority(predictions)
        if name is None or any(r["rejected"] == name for r in faces_):
            continue
        cluster = faces_[0]["cluster"]
        original = _unknown_face_event(event_log, track_id, faces_) if event_log is not None else None
        chip = None
        if factory.thumbnails and (original is None or original.thumbnail is None):
            best = max(faces_, key=lambda r: r["quality"] or 0.0)
            try:
                chip = (store.folder / best["chip"]).read_bytes()
            except OSError:
                chip = None
        events.append(factory.reidentified(track_id, name, confidence, cluster_label(cluster) if cluster else None,
                                           seen_at=min(r["first_seen"] for r in faces_), original=original,
                                           chip=chip))
        store.mark_reidentified([r["id"] for r in faces_], name)
    if events:
        log.info("re-identified %d earlier unknown tracks", len(events))
    return events


def _unknown_face_event(event_log: Any, track_id: int, rows: list[dict[str, Any]], slack: float = 2.0
                        ) -> Event | None:
    """The unknown_face event of a kept track: its track id, logged while the track was kept (track ids of
    logs from before they were unique may repeat)."""
    start = min(r["logged_from"] or r["first_seen"] for r in rows) - slack
    end = max(r["logged_until"] or r["last_seen"] for r in rows) + slack
    try:
        found = event_log.query(since=start, until=end, type=UNKNOWN_FACE, track_id=track_id, limit=1)
        return found[0].event() if found else None
    except Exception as exc:  # the log is optional here: the event is made without the link
        log.warning("cannot look up the unknown_face event of track %d: %s", track_id, exc)
        return None


def log_reidentified(store: SightingStore, classifier: Classifier, cfg: Config, event_log: Any) -> int:
    """After a retrain outside the agent (`face-agent name`, the web console): `reidentify` with the
    configured window, the events written to `event_log` (agent.store.EventStore). Returns how many."""
    events = reidentify(store, classifier, EventFactory.agent_wide(cfg, PersonIds(cfg.path("storage"))),
                        cfg.sightings.reidentify_hours, event_log=event_log)
    for event in events:
        event_log.add(event)
    return len(events)
