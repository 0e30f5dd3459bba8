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

import logging
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.events import IDENTIFIED, REIDENTIFIED, Event, EventFactory, parse_timestamp
from agent.gallery import Gallery, validate_person_name
from agent.sightings import SightingStore, cluster_label, embedding_of, majority, parse_cluster
from agent.vision.classifier import Classifier, unit_rows

log = logging.getLogger(__name__)


class NamingError(ValueError):
    """A name, reject or lookup that cannot be done; the message says why."""


@dataclass
class Named:
    """What naming did: the faces offered and the ones enrolled (stored photo names)."""

    person: str
    offered: int
    enrolled: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # messages
    classifier: Classifier | None = None


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
    return row["id"], store.sightings("cluster = ?", [row["id"]])


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
    """The faces of the latest track with this id (track ids restart with every run)."""
    rows = store.sightings("track_id = ?", [track_id])
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
    """`face-agent name UNKNOWN_ID PERSON`: enroll the cluster's best faces, mark the cluster named."""
    cluster, rows = cluster_faces(store, unknown_id)
    named = name_faces(gallery, store, rows, person, progress, retrain)
    store.mark_named(cluster, named.person)
    log.info("%s named %s: %d faces enrolled", cluster_label(cluster), named.person, len(named.enrolled))
    return named


def reject(gallery: Gallery, store: SightingStore, event: Event, progress: bool = False,
           retrain: bool = True) -> tuple[int, Classifier | None]:
    """`face-agent reject EVENT_ID`: the faces of the track `event` (identified) named are not that person.
    Returns (negatives recorded for the person, the retrained classifier or None without `retrain`)."""
    if event.type not in (IDENTIFIED, REIDENTIFIED) or not event.name or event.track_id is None:
        raise NamingError(f"event {event.event_id} is a {event.type} event: only an identification "
                          "(identified, reidentified) can be rejected")
    at = parse_timestamp(event.seen_at) if event.type == REIDENTIFIED and event.seen_at else event.time
    rows = store.track_sightings(event.track_id, at)
    if not rows:
        raise NamingError(f"no faces of track {event.track_id} around {event.timestamp} were kept, so there is "
                          f"nothing to learn from ([sightings] privacy = {gallery.cfg.sightings.privacy!r}; "
                          "named tracks are kept only with \"all\")")
    embeddings = np.stack([embedding_of(r) for r in rows])
    count = gallery.add_negatives(event.name, embeddings)
    store.set_track_name([r["id"] for r in rows], None, rejected=event.name)
    cluster = store.assign_cluster(embeddings)
    store.set_cluster([r["id"] for r in rows], cluster)
    log.info("event %s: %d faces of track %d are not %s (now %s)", event.event_id, len(rows), event.track_id,
             event.name, cluster_label(cluster))
    if not retrain:
        return count, None
    classifier, _, _ = gallery.ensure_trained(progress=progress)
    return count, classifier


def reidentify(store: SightingStore, classifier: Classifier, factory: EventFactory, hours: float,
               now: float | None = None) -> list[Event]:
    """`reidentified` events for the recent unknown tracks the new classifier names (each once)."""
    now = time.time() if now is None else now
    model = classifier.meta.get("fingerprint", "")
    rows = store.sightings("name IS NULL AND reidentified IS NULL AND t >= ? AND COALESCE(model, '') != ?",
                           [now - hours * 3600, model])
    tracks: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        tracks[(r["run"], r["track_id"])].append(r)
    events = []
    for (_, track_id), faces in tracks.items():
        predictions = classifier.predict(np.stack([embedding_of(r) for r in faces]))
        name, confidence = majority(predictions)
        if name is None or any(r["rejected"] == name for r in faces):
            continue
        cluster = faces[0]["cluster"]
        events.append(factory.reidentified(track_id, name, confidence, cluster_label(cluster) if cluster else None,
                                           seen_at=min(r["first_seen"] for r in faces)))
        store.mark_reidentified([r["id"] for r in faces], name)
    if events:
        log.info("re-identified %d earlier unknown tracks", len(events))
    return events


def log_reidentified(store: SightingStore, classifier: Classifier, cfg: Any, event_log: Any) -> int:
    """After a retrain outside the agent (`face-agent name`, the web console): `reidentify` with the
    configured window, the events written to `event_log` (agent.store.EventStore). Returns how many."""
    events = reidentify(store, classifier, EventFactory.from_config(cfg), cfg.sightings.reidentify_hours)
    for event in events:
        event_log.add(event)
    return len(events)
