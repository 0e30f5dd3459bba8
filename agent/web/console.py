"""The web console's data layer: what the pages read from the agent's storage and the operations they run.

`Console` reads what the agent keeps - the status file, the live frame, the event log, the gallery's folders,
the sightings - and changes enrollment only through `agent.enrollment_ops` (the same operations as
`face-agent enroll`, `rename`, `forget`, `restore` and remote enrollment) and the sightings' operations in
`agent.naming` (`name_cluster`, `reidentify`, `reject`, `merge_unknowns` and `ignore_unknown`: the same as
`face-agent name`, `reject` and `unknowns merge|ignore|unignore`). It knows nothing of HTTP; the pages are in
`agent.web.routes`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from agent import enrollment_ops as ops
from agent import health
from agent.config import Config
from agent.evaluation import EvalError
from agent.events import (
    IDENTIFIED,
    REIDENTIFIED,
    TRACK_ENDED,
    TRACK_STARTED,
    UNKNOWN_FACE,
    format_timestamp,
    parse_timestamp,
)
from agent.frame_output import live_frame_name
from agent.gallery import Gallery, validate_person_name
from agent.logsafe import escape
from agent.naming import (
    Named,
    NamingError,
    Rejected,
    enrolled_text,
    find_cluster,
    ignore_unknown,
    log_reidentified,
    merge_unknowns,
    name_cluster,
    name_faces,
    reject,
)
from agent.sightings import SightingStore, cluster_label, parse_cluster
from agent.store import EventStore, StoredEvent
from agent.times import parse_when

log = logging.getLogger(__name__)

CHIPS_SHOWN = 6  # chips of an unknown person shown on its card, best first
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")
REPEAT_SECONDS = 120.0  # a naming/rejecting request repeated within this long is answered, not done again
FIRST_VISIT_SECONDS = 120.0  # a track's events are looked for this long after it started, then
MAX_VISIT_SECONDS = 6 * 3600  # this long when it had not ended by then
MAX_VISIT_EVENTS = 500  # events of one track read for its card (start, namings, unknown, end)


SURE = 0.8  # a visit named at least this surely is "sure"; under it, "worth a look"
CERTAINTIES = {  # the Visits page's certainty filter: value -> (what the page says, which visits it keeps)
    "": ("any", lambda v: True),
    "sure": (f"named, {SURE:.0%} sure or more", lambda v: bool(v["name"]) and (v["confidence"] or 0) >= SURE),
    "unsure": (f"named, under {SURE:.0%} sure", lambda v: bool(v["name"]) and (v["confidence"] or 0) < SURE),
    "unnamed": ("not named", lambda v: not v["name"]),
}
MAX_FILTERED_PAGES = 25  # pages of visits read for one page of the certainty filter


def when(value: str) -> float | None:
    """Epoch seconds of a filter value ('2h', '2026-11-29T16:00', ...; naive = UTC), None when empty;
    ValueError when it is neither (the same syntax as `face-agent events --since`)."""
    return parse_when(value) if value.strip() else None


def utc(t: float | str | None) -> str:
    if t in (None, ""):
        return ""
    if isinstance(t, str):
        return t.replace("T", " ").replace("Z", " UTC")
    return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(t: float | None) -> str:
    """An ISO time in UTC for a <time datetime>; the page shows it in the browser's time zone (console.js)."""
    return format_timestamp(float(t)) if t not in (None, "") else ""


def _track_time(type_: str, t: float, payload: dict[str, Any]) -> float:
    """When the track an event is about was seen: a `reidentified` event comes later and says when."""
    if type_ == REIDENTIFIED and isinstance(payload.get("seen_at"), str):
        with contextlib.suppress(ValueError):
            return parse_timestamp(payload["seen_at"])
    return t


def _payload(row: StoredEvent) -> dict[str, Any]:
    try:
        payload = json.loads(row.payload)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _source_line(source: dict[str, Any]) -> str | None:
    if not source:
        return None
    text = "connected" if source.get("connected") else "not connected"
    text += f", {source.get('frames_read', 0)} frames read, {source.get('dropped', 0)} dropped, " \
            f"{source.get('reconnects', 0)} reconnects"
    return text + (f"; last error: {source['last_error']}" if source.get("last_error") else "")




class Console:
    """What the pages need from the agent's storage, built once per process."""

    def __init__(self, cfg: Config, config_file: Path | None = None) -> None:
        self.cfg = cfg
        self.config_file = config_file  # the agent.toml it was started with (None: defaults, no file)
        self.storage = cfg.path("storage")
        self.gallery = Gallery(cfg, train_in_subprocess=True)
        self.store = EventStore(cfg)
        self.sightings = SightingStore(cfg)
        self.work_dir = Path(tempfile.mkdtemp(prefix="face-agent-web-"))  # private (0700) upload copies
        self.train_lock = threading.Lock()
        self.last_training: dict[str, Any] = {}
        self.recent: dict[tuple[Any, ...], tuple[float, Any]] = {}  # request -> (when, result): Console.once
        self.flashes: dict[str, list[tuple[str, str]]] = {}  # CSRF token of a session -> messages for its next page

    # ---- people ---------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        return self.training_card(ops.model(self.gallery))

    @staticmethod
    def training_card(model: ops.ClassifierSummary | None) -> dict[str, Any]:
        """What the training card shows of the saved classifier's summary (None: no usable one)."""
        if model is None:
            return {"trained": False}
        return {"trained": True, "people": len(model.people), "counts": model.counts,
                "trained_at": utc(model.trained_at), "trained_iso": model.trained_at or "",
                "seconds": model.training_seconds, "cv_accuracy": model.cv_score, "cv_folds": model.cv_folds,
                "cv_grid": list(model.cv_grid), "kernel": model.kernel, "warnings": list(model.warnings)}

    def retrain(self) -> dict[str, Any]:
        """enrollment_ops.retrain; the running agent picks the saved classifier up (module doc)."""
        with self.train_lock:
            training = ops.retrain(self.gallery)
            people = len(training.classifier.people)
            self.last_training = {"retrained": training.retrained, "people": people, "at": time.time()}
            log.info("web: classifier %s (%d people)", "retrained" if training.retrained else "unchanged", people)
            return self.last_training

    def reports(self) -> list[dict[str, Any]]:
        """The last `face-agent eval` and `tune` reports kept in `[evaluation] reports` (agent.evaluation.report)."""
        from agent.evaluation.report import last_reports

        return last_reports(self.cfg)

    def run_tune(self) -> dict[str, Any]:
        """`face-agent tune` on the enrolled photos (embeddings are cached: seconds), kept like the command's."""
        from agent.evaluation.report import format_tune, save_last
        from agent.evaluation.tune import tune_gallery

        with self.train_lock:
            report = tune_gallery(self.gallery)
        if not report["photos"]:
            raise EvalError("nobody is enrolled: there is nothing to tune")
        save_last(self.cfg, "tune", format_tune(report), report, report)
        log.info("web: tune run (%d photos)", len(report["photos"]))
        return report

    def tune_summary(self) -> dict[str, Any] | None:
        """The last kept `tune` report (tune.json) in plain figures for the Reports page, or None."""
        from agent.evaluation.report import reports_folder

        folder = reports_folder(self.cfg)
        try:
            report = json.loads((folder / "tune.json").read_text(encoding="utf-8")) if folder else None
        except (OSError, ValueError):
            return None
        if not isinstance(report, dict) or "distances" not in report:
            return None
        d = report["distances"]
        at = d.get("at") or {}
        suggested = report.get("suggested_threshold")
        return {"people": len(report.get("people") or {}), "photos": sum((report.get("people") or {}).values()),
                "accuracy": (report.get("closed_set") or {}).get("accuracy"),
                "suggested": suggested, "target_far": (report.get("settings") or {}).get("target_far"),
                "tuned_with": (report.get("settings") or {}).get("configured_threshold"),
                "now": self.cfg.recognition.distance_threshold, "configured": at.get("configured"),
                "chosen": at.get("chosen"), "warnings": report.get("warnings") or [],
                "suspect": any("mislabelled" in w for w in report.get("warnings") or []),
                "applied": suggested is not None and
                math.isclose(suggested, self.cfg.recognition.distance_threshold, abs_tol=5e-4)}

    def apply_threshold(self, posted: float) -> tuple[float, Any]:
        """Write the threshold the last `tune` suggested into `[recognition] distance_threshold` of the config
        file (agent.web.settings: comments kept, checked by the schema first); this console uses it at once,
        the agent after its next start. `posted`: the value the page showed (a stale page is refused).
        Returns (the new value, the one the file had). EvalError / SettingError say why not."""
        from agent.web.settings import write_setting

        summary = self.tune_summary()
        if summary is None or summary["suggested"] is None:
            raise EvalError("no threshold to apply: run tune first (it needs at least two people enrolled)")
        value = float(summary["suggested"])
        if not math.isclose(value, posted, abs_tol=5e-4):
            raise EvalError(f"tune now suggests {value:.3f}, not {posted:.3f}: reload the page and check again")
        old = write_setting(self.config_file, "recognition", "distance_threshold", value,
                            note=f"face-agent tune (web console, {time.strftime('%Y-%m-%d')}): false accepts "
                                 f"<= {summary['target_far']:.1%} on {summary['photos']} photos")
        self.cfg.recognition.distance_threshold = value  # this console's naming and re-identification use it now
        self.sightings.reset_model()  # the unknown people's clusters are matched by the same rule
        log.info("web: [recognition] distance_threshold set to %.3f (was %s)", value, old)
        return value, old

    def person(self, name: str) -> dict[str, Any]:
        results, _, _, _ = self.gallery.scan([name], progress=False)
        photos = []
        for r in results:
            chip = self.gallery.chip_path(name, r.path, r.sha256) if r.sha256 else None
            photos.append({"name": r.path.name, "status": r.status, "reason": r.reason, "ok": r.ok,
                           "chip": chip.name if chip is not None and chip.is_file() else None})
        return {"name": name, "photos": photos}

    def forget(self, name: str, purge: bool = False) -> str | None:
        """`face-agent forget NAME [--purge]` (enrollment_ops.forget). Returns the trash folder's name (what
        undo restores), or None when no photos were kept (none, or `purge`)."""
        moved = ops.forget(self.gallery, name, purge)
        return moved.name if moved is not None else None

    def remove_photos(self, name: str, photos: list[str]) -> ops.Removal:
        """Remove photos of a person by file name (enrollment_ops.remove_photos: the last ones forget the
        person, their photos in the trash); the caller retrains."""
        return ops.remove_photos(self.gallery, name, photos)

    def trashed(self) -> list[dict[str, Any]]:
        """The forgotten people `face-agent restore` can bring back (Gallery.trashed), newest first."""
        out = []
        for t in self.gallery.trashed():
            try:
                when = time.mktime(time.strptime(t.stamp, "%Y%m%d-%H%M%S"))  # forget names it in local time
            except ValueError:
                when = None
            out.append({"person": t.person, "folder": t.path.name, "photos": t.photos, "when": when})
        return out

    def restore(self, person: str, folder: str | None) -> tuple[str, int]:
        """`face-agent restore PERSON --from FOLDER` (Gallery.restore; the caller retrains), once: a repeated
        undo is answered, not an error. Returns (the person, photos back)."""
        def run() -> tuple[str, int]:
            entry = ops.restore(self.gallery, person, folder or None)
            return entry.person, entry.photos

        return self.once(("restore", person, folder), run)[0]

    def first_chip(self, name: str) -> str | None:
        """The chip of the person's first photo that has one (chips are named after their photo)."""
        for photo in self.gallery.photos_of(name):
            if (self.gallery.aligned / name / f"{photo.stem}.png").is_file():
                return f"{photo.stem}.png"
        return None

    def add_uploads(self, person: str, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Uploaded photos enrolled (enrollment_ops.add_images, as remote `add`); the caller retrains."""
        max_bytes = min(self.cfg.web.max_upload_bytes, self.cfg.images.max_bytes)
        added = ops.add_images(self.gallery, person, files, max_bytes, self.work_dir)
        return [{"file": filename, "ok": a.accepted, "reason": a.reason,
                 "message": a.message or ("enrolled" if a.accepted else a.reason)}
                for (filename, _), a in zip(files, added, strict=True)]

    # ---- events ---------------------------------------------------------------------------------------
    def events(self, person: str, type_: str, camera: str, since: float | None, until: float | None,
               track: int | None) -> list[dict[str, Any]]:
        rows = self.store.query(since=since, until=until, name=person or None, type=type_ or None,
                                camera=camera or None, limit=self.cfg.web.events_per_page, track_id=track)
        renamed = self.store.current_names(rows)  # a renamed person's events show the name they have now
        out = []
        for row in reversed(rows):  # newest first
            if track is not None and row.track_id != track:
                continue
            try:
                payload = json.loads(row.payload)
            except ValueError:
                payload = {}
            thumb = payload.get("thumbnail")
            if not isinstance(thumb, str) or not _B64.match(thumb):
                thumb = None
            faces = self.sightings.track_sightings(row.track_id, _track_time(row.type, row.t, payload)) \
                if row.track_id is not None else []
            rejectable = row.type in (IDENTIFIED, REIDENTIFIED) and bool(row.name) and row.track_id is not None
            out.append({"event_id": row.event_id, "time": utc(row.t), "iso": iso(row.t), "type": row.type,
                        "name": renamed.get(row.event_id, row.name), "camera": row.camera, "track_id": row.track_id,
                        "confidence": row.confidence,
                        "thumbnail": thumb, "faces": len(faces), "unknown": self.unknown_link(payload),
                        "reason": payload.get("reason"), "votes": payload.get("votes"), "state": row.state,
                        "rejectable": rejectable,
                        "rejected": rejectable and any(r["rejected"] == row.name for r in faces)})
        return out

    def visits(self, person: str, camera: str, since: float | None, until: float | None,
               before: float | None, certainty: str = "") -> tuple[list[dict[str, Any]], float | None]:
        """One card per track (a visit), newest first: the tracks that started before `before` (the cursor of
        the page before), or, with `person`, the tracks that person was named on; `certainty` (CERTAINTIES)
        keeps only the visits named that surely, or not named. Returns (visits, the cursor of the next page
        or None at the end)."""
        if certainty not in CERTAINTIES:
            raise ValueError(f"certainty: one of {', '.join(k for k in CERTAINTIES if k)}")
        if not certainty:
            return self._visits(person, camera, since, until, before)
        keep, out = CERTAINTIES[certainty][1], []
        for _ in range(MAX_FILTERED_PAGES):  # pages of visits until one page's worth passes the filter
            found, before = self._visits(person, camera, since, until, before)
            out += [v for v in found if keep(v)]
            if len(out) >= self.cfg.web.visits_per_page or before is None:
                break
        return out, before

    def _visits(self, person: str, camera: str, since: float | None, until: float | None,
                before: float | None) -> tuple[list[dict[str, Any]], float | None]:
        limit = self.cfg.web.visits_per_page
        top = until if before is None else before if until is None else min(before, until)
        anchors = self.store.query(since=since, until=top, name=person or None, camera=camera or None,
                                   type=None if person else TRACK_STARTED, limit=limit * (4 if person else 1) + 1)
        anchors.reverse()  # newest first
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, int, float]] = set()
        for row in anchors:
            if row.track_id is None or (person and row.type not in (IDENTIFIED, REIDENTIFIED)):
                continue
            start = row if row.type == TRACK_STARTED else self._start_of(row)
            key = (start.camera, start.track_id, start.t)
            if key in seen:
                continue
            if len(out) == limit:
                return out, row.t + 1e-6  # the next page starts with this one
            seen.add(key)
            out.append(self._visit(start))
        full = len(anchors) == limit * (4 if person else 1) + 1
        return out, (anchors[-1].t if full and anchors else None)

    def unknown_visits(self, unknown_id: str, before: float | None) -> tuple[list[dict[str, Any]], float | None]:
        """The visits of an unknown person (their cluster's tracks in the sightings; a merged id means the one it
        was merged into), newest first, paged like `visits`. NamingError for no such unknown person."""
        row = find_cluster(self.sightings, unknown_id)
        limit = self.cfg.web.visits_per_page
        tracks = self.sightings.cluster_tracks(row["id"], before, limit + 1)
        out = []
        for track in tracks[:limit]:
            where = "type = ? AND track_id = ? AND t <= ? AND t >= ?"
            params: list[Any] = [TRACK_STARTED, track["track_id"], track["logged_from"] + 2,
                                 track["logged_from"] - MAX_VISIT_SECONDS]
            if track["camera"]:
                where += " AND camera = ?"
                params.append(track["camera"])
            found = self.store.rows(where, params, order_by="t DESC", limit=1)
            if found:
                out.append(self._visit(found[0]))
        return out, (tracks[limit - 1]["logged_from"] if len(tracks) > limit else None)

    def _start_of(self, row: StoredEvent) -> StoredEvent:
        """The track_started event of the track `row` is about (the row itself when it was not logged)."""
        at = _track_time(row.type, row.t, _payload(row))
        found = self.store.rows("type = ? AND camera = ? AND track_id = ? AND t <= ?",
                                 [TRACK_STARTED, row.camera, row.track_id, at], order_by="t DESC", limit=1)
        return found[0] if found else row

    def _visit(self, start: StoredEvent) -> dict[str, Any]:
        """The events of one track from its start to its end (or the newest), as one card."""
        for span in (FIRST_VISIT_SECONDS, MAX_VISIT_SECONDS):  # most tracks end within the first (a short scan)
            rows = self.store.rows("camera = ? AND track_id = ? AND t >= ? AND t <= ?",
                                   [start.camera, start.track_id, start.t, start.t + span],
                                   order_by="t, seq", limit=MAX_VISIT_EVENTS)
            if any(r.type == TRACK_ENDED or (r.type == TRACK_STARTED and r.event_id != start.event_id)
                   for r in rows):
                break
        events, end = [], None
        for row in rows:
            if row.type == TRACK_STARTED and row.event_id != start.event_id:
                break  # the same id in a later run
            events.append(row)
            if row.type == TRACK_ENDED:
                end = row
                break
        if start.type != TRACK_STARTED and start not in events:
            events.insert(0, start)
        last = events[-1] if events else start
        until = end.t if end is not None else last.t
        later = self.store.rows("type = ? AND camera = ? AND track_id = ? AND t > ?",
                                 [REIDENTIFIED, start.camera, start.track_id, until], order_by="t", limit=20)
        events += [r for r in later if start.t - 2 <= _track_time(r.type, r.t, _payload(r)) <= until + 2]
        name, confidence, unknown, thumb, named_by = None, None, None, None, None
        for row in events:
            payload = _payload(row)
            if isinstance(payload.get("thumbnail"), str) and _B64.match(payload["thumbnail"]) and \
                    (thumb is None or row.type in (IDENTIFIED, UNKNOWN_FACE)):
                thumb = payload["thumbnail"]
            if row.type in (IDENTIFIED, REIDENTIFIED) and row.name:
                name, confidence, named_by = row.name, row.confidence, row
            elif row.type == UNKNOWN_FACE:
                unknown = self.unknown_link(payload) or unknown
        end_payload = _payload(end) if end is not None else {}
        if isinstance(end_payload.get("best_confidence"), (int, float)) and named_by is not None \
                and named_by.type == IDENTIFIED:
            confidence = max(confidence or 0.0, float(end_payload["best_confidence"]))
        duration = end_payload.get("duration_s") if isinstance(end_payload.get("duration_s"), (int, float)) \
            else until - start.t
        faces = self.sightings.track_sightings(start.track_id, start.t if end is None else (start.t + until) / 2)
        faces = [f for f in faces if f["logged_until"] + 2 >= start.t and f["logged_from"] - 2 <= until] or faces
        best = max(faces, key=lambda f: (f["quality"] or 0.0, -f["id"]), default=None)
        if named_by is not None:  # renamed since: the name the person has now
            name = self.store.current_names([named_by]).get(named_by.event_id, name)
        rejected = bool(name) and any(f["rejected"] == name for f in faces)
        clusters = [f["cluster"] for f in faces if f["cluster"]]
        if unknown is None and (not name or rejected) and clusters:  # a new stranger: its cluster came after the event
            unknown = self.unknown_link({"unknown_id": cluster_label(max(set(clusters), key=clusters.count))})
        return {"key": start.event_id, "event_id": (named_by or start).event_id, "camera": start.camera,
                "track_id": start.track_id, "start": start.t, "start_text": utc(start.t), "iso": iso(start.t),
                "ongoing": end is None, "duration": duration, "name": None if rejected else name,
                "rejected": name if rejected else None,
                "confidence": confidence, "unknown": unknown, "thumbnail": thumb, "faces": len(faces),
                "best_face": Path(best["chip"]).parts if best is not None else None,
                "reidentified": named_by is not None and named_by.type == REIDENTIFIED,
                "rejectable": named_by is not None and not rejected and bool(faces),
                "small": sum(self.too_small(f["chip"]) for f in faces),
                "events": len(events)}

    def unknown_link(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The unknown person an event names (`unknown_id`), as it is now: merged into another, ignored."""
        label = payload.get("unknown_id")
        try:
            cluster = parse_cluster(label) if isinstance(label, str) else None
        except ValueError:
            cluster = None
        row = self.sightings.cluster(cluster) if cluster is not None else None
        if row is None:
            return None
        now = self.sightings.cluster(row["merged_into"]) if row["merged_into"] is not None else row
        if now is None:
            return None
        return {"id": label, "now": cluster_label(now["id"]), "ignored": now["ignored"] is not None,
                "named": now["name"]}

    def track_faces(self, event_id: str) -> tuple[StoredEvent, list[dict[str, Any]]]:
        """The kept faces of the track an event is about (`SightingStore.track_sightings`), best first, each
        with its files as parts under the sightings folder; NamingError if there is no such track event."""
        row = self.store.get(event_id.strip().upper())
        if row is None or row.track_id is None:
            raise NamingError(f"no track event {event_id!r} in the log")
        try:
            payload = json.loads(row.payload)
        except ValueError:
            payload = {}
        faces = self.sightings.track_sightings(row.track_id, _track_time(row.type, row.t, payload))
        out = []
        for face in sorted(faces, key=lambda r: (-(r["quality"] or 0.0), r["id"])):
            side = self.face_side(face["chip"])  # its context crop opened once
            out.append({"id": face["id"], "time": utc(face["t"]), "iso": iso(face["t"]), "quality": face["quality"],
                        "name": face["name"],
                        "cluster": cluster_label(face["cluster"]) if face["cluster"] else None,
                        "rejected": face["rejected"], "reidentified": face["reidentified"],
                        "side": side, "small": self.small_side(side),
                        "chip": Path(face["chip"]).parts, "context": Path(face["context"]).parts})
        return row, out

    # ---- unknown people: the sightings room's operations (`face-agent unknowns`, `name`, `reject`) -------
    def unknowns(self, ignored: bool | None = False, only: str | None = None) -> list[dict[str, Any]]:
        """`SightingStore.clusters(ignored)` still to deal with (named ones leave the list), each chip as its
        parts under the sightings folder (for /files) and the wider crop around the best one; `only`: that one."""
        clusters = [c for c in self.sightings.clusters(ignored) if c["name"] is None and c["id"] == (only or c["id"])]
        for c in clusters:
            c["small"] = sum(self.too_small(chip) for chip in c["chips"][:CHIPS_SHOWN])
            c["chips"] = [Path(chip).relative_to(self.sightings.folder).parts for chip in c["chips"][:CHIPS_SHOWN]]
            c["context"] = None
            if c["chips"]:
                day, chip = c["chips"][0]
                context = self.sightings.folder / day / chip.replace("-chip.jpg", "-context.jpg")
                c["context"] = (day, context.name) if chip.endswith("-chip.jpg") and context.is_file() else None
        return clusters

    def face_side(self, chip: str | Path) -> float | None:
        """How many pixels the face of a kept chip had in the camera's picture: its context crop is
        `[sightings] context_scale` times the face's longer side (less where the frame's edge clipped it, so
        the longer side of the crop is used). None when the crop is not there."""
        context = self.sightings.folder / str(chip).replace("-chip.jpg", "-context.jpg")
        try:
            with Image.open(context) as img:
                return max(img.size) / self.cfg.sightings.context_scale
        except (OSError, ValueError):
            return None

    def too_small(self, chip: str | Path) -> bool:
        """A kept face smaller than enrollment takes (`[enrollment] min_face_size`, agent.gallery: a photo
        with a smaller face is refused as too_small): naming it adds a blurry, upscaled chip at best."""
        return self.small_side(self.face_side(chip))

    def small_side(self, side: float | None) -> bool:
        """`too_small` for a face side already measured (`face_side`; None: not known, not too small)."""
        return side is not None and side < self.cfg.enrollment.min_face_size

    def name_clusters(self, unknown_ids: list[str], person: str) -> tuple[Named, int]:
        """`face-agent name UNKNOWN_ID PERSON` for each of several unknown people (agent.naming.name_cluster
        without retraining, then one retrain through the gallery), once. Returns (what was enrolled in all,
        earlier unknown tracks re-identified)."""
        person = validate_person_name(person)
        ids = sorted({i.strip().lower() for i in unknown_ids})

        def run() -> tuple[Named, int]:
            rows = [find_cluster(self.sightings, i) for i in ids]  # every id checked before anything is enrolled
            for row in rows:
                if row["name"] is not None:
                    raise NamingError(f"{cluster_label(row['id'])} was already named {row['name']}")
            total = Named(person, 0)
            for i in ids:
                try:
                    named = name_cluster(self.gallery, self.sightings, i, person, retrain=False)
                except NamingError as exc:  # none of this one's faces usable: the others are still named
                    total.refused.append(f"{i}: {exc}")
                    continue
                total.offered += named.offered
                total.enrolled += named.enrolled
                total.refused += named.refused
            if not total.enrolled:
                raise NamingError("; ".join(total.refused))
            total.classifier = ops.retrain(self.gallery).classifier
            self.last_training = {"retrained": True, "people": len(total.classifier.people), "at": time.time()}
            log.info("web: %s named %s (%d faces enrolled)", escape(", ".join(ids)), escape(person),
                     len(total.enrolled))
            return total, self._after_training(total.classifier)

        return self.once(("name-several", tuple(ids), person), run)[0]

    def merge_targets(self) -> list[dict[str, Any]]:
        """The unknown people another one can be merged into: every unnamed one, ignored ones too (a new
        cluster may be the person ignored before), each with its best face."""
        return [{"id": c["id"], "ignored": c["ignored"], "sightings": c["sightings"],
                 "chip": Path(c["representative"]).relative_to(self.sightings.folder).parts
                 if c["representative"] else None}
                for c in self.sightings.clusters(ignored=None) if c["name"] is None]

    def once(self, key: tuple[Any, ...], run: Any) -> tuple[Any, bool]:
        """`run()` unless the same request (`key`) was done in the last REPEAT_SECONDS: a double tap, or a
        request sent again, neither enrolls nor retrains twice. Returns (the result, whether it was a repeat).
        Requests wait for each other (the training lock), so the second sees the first one's result."""
        with self.train_lock:
            now = time.monotonic()
            for old in [k for k, (t, _) in self.recent.items() if now - t > REPEAT_SECONDS]:
                del self.recent[old]
            if key in self.recent:
                log.info("web: %s repeated: done once already", escape(str(key)))
                return self.recent[key][1], True
            result = run()
            self.recent[key] = (time.monotonic(), result)
            return result, False

    def merge(self, source: str, target: str) -> tuple[str, int]:
        """`face-agent unknowns merge SOURCE TARGET` (agent.naming.merge_unknowns). Returns (target, moved)."""
        cluster, moved = merge_unknowns(self.sightings, source, target)
        log.info("web: %s merged into %s", escape(source), cluster_label(cluster))
        return cluster_label(cluster), moved

    def set_ignored(self, unknown_id: str, ignored: bool) -> str:
        """`face-agent unknowns ignore|unignore UNKNOWN_ID` (agent.naming.ignore_unknown)."""
        label = cluster_label(ignore_unknown(self.sightings, unknown_id, ignored))
        log.info("web: %s %s", label, "ignored" if ignored else "shown again")
        return label

    def _after_training(self, named_classifier: Any) -> int:
        """What `face-agent name` does after naming: recent unknown tracks the new model names become
        `reidentified` events in the log. Returns how many."""
        return log_reidentified(self.sightings, named_classifier, self.cfg, self.store)

    def name_cluster(self, unknown_id: str, person: str) -> tuple[Named, int, bool]:
        """`face-agent name UNKNOWN_ID PERSON` (agent.naming.name_cluster, retraining through the gallery), once
        (`once`: a repeated request does not enroll or retrain again). Returns (named, re-identified, repeat)."""
        person = validate_person_name(person)

        def run() -> tuple[Named, int]:
            row = find_cluster(self.sightings, unknown_id)
            if row["name"] is not None:
                raise NamingError(f"{cluster_label(row['id'])} was already named {row['name']}")
            named = name_cluster(self.gallery, self.sightings, unknown_id, person)
            self.last_training = {"retrained": True, "people": len(named.classifier.people), "at": time.time()}
            log.info("web: %s named %s (%s)", escape(unknown_id), escape(named.person), enrolled_text(named))
            return named, self._after_training(named.classifier)

        (named, reidentified), repeat = self.once(("name", unknown_id.strip().lower(), person), run)
        return named, reidentified, repeat

    def reject(self, event_id: str) -> tuple[Any, Rejected]:
        """`face-agent reject EVENT_ID` (agent.naming.reject). Returns (the event, what it did)."""
        stored = self.store.get(event_id.strip().upper())
        if stored is None:
            raise NamingError(f"no event {event_id!r} in the log")
        event = stored.event()
        done, _ = self.once(("reject", event.event_id), lambda: reject(self.gallery, self.sightings, event))
        log.info("web: event %s rejected (not %s)", escape(event.event_id), escape(event.name or ""))
        return event, done

    def visit_of(self, event_id: str) -> dict[str, Any]:
        """The visit (card) of the track an event is about; NamingError if there is no such track event."""
        row = self.store.get(event_id.strip().upper())
        if row is None or row.track_id is None:
            raise NamingError(f"no track event {event_id!r} in the log")
        return self._visit(row if row.type == TRACK_STARTED else self._start_of(row))

    def name_track(self, event_id: str, person: str) -> tuple[str, int, int]:
        """"This is PERSON" / "That was PERSON" on a visit: `face-agent name --track` on the faces kept of the
        event's track (agent.naming.name_faces, then the re-identification of `face-agent name`); when the
        track was named someone else, first `face-agent reject` of that naming (agent.naming.reject).
        Returns (the person, faces enrolled, earlier unknown tracks re-identified)."""
        visit = self.visit_of(event_id)
        person = validate_person_name(person)
        row = self.store.get(visit["event_id"])
        assert row is not None
        faces = self.sightings.track_sightings(row.track_id, _track_time(row.type, row.t, _payload(row)))
        if not faces:
            raise NamingError("no faces of this visit were kept, so there is nothing to learn from")

        def run() -> tuple[str, int, int]:
            if visit["name"] and visit["name"] != person and row.type in (IDENTIFIED, REIDENTIFIED):
                reject(self.gallery, self.sightings, row.event(), retrain=False)
            named = name_faces(self.gallery, self.sightings, faces, person)
            self.last_training = {"retrained": True, "people": len(named.classifier.people), "at": time.time()}
            log.info("web: track %s of event %s named %s (%s)", row.track_id, escape(row.event_id),
                     escape(person), enrolled_text(named))
            return named.person, named.added, self._after_training(named.classifier)

        return self.once(("name-track", visit["key"], person), run)[0]

    def name_visits(self, event_ids: list[str], person: str) -> tuple[str, int, int, int]:
        """"This is PERSON" for several visits at once: as `name_track` on each (a visit named someone else
        is first rejected: `face-agent reject`), their kept faces enrolled together (agent.naming.name_faces)
        with one retrain, once. Returns (the person, visits, faces enrolled, earlier unknown tracks
        re-identified)."""
        person = validate_person_name(person)
        visits = [self.visit_of(e) for e in dict.fromkeys(event_ids)]
        rows, faces = [], []
        for visit in visits:
            row = self.store.get(visit["event_id"])
            assert row is not None
            rows.append((visit, row))
            faces += self.sightings.track_sightings(row.track_id, _track_time(row.type, row.t, _payload(row)))
        if not faces:
            raise NamingError("no faces of these visits were kept, so there is nothing to learn from")

        def run() -> tuple[str, int, int, int]:
            for visit, row in rows:
                if visit["name"] and visit["name"] != person and row.type in (IDENTIFIED, REIDENTIFIED):
                    reject(self.gallery, self.sightings, row.event(), retrain=False)
            named = name_faces(self.gallery, self.sightings, faces, person)
            self.last_training = {"retrained": True, "people": len(named.classifier.people), "at": time.time()}
            log.info("web: %d visits named %s (%d faces)", len(rows), escape(person), len(named.enrolled))
            return named.person, len(rows), len(named.enrolled), self._after_training(named.classifier)

        return self.once(("name-visits", tuple(sorted(v["key"] for v in visits)), person), run)[0]

    def name_track_faces(self, event_id: str, face_ids: list[int], person: str) -> tuple[str, int, int]:
        """"This is PERSON" for some of a visit's kept faces (agent.naming.name_faces on those sightings, as
        `face-agent name --track` does on all of them), once. Returns (the person, faces enrolled, earlier
        unknown tracks re-identified)."""
        person = validate_person_name(person)
        row, _ = self.track_faces(event_id)
        wanted = set(face_ids)
        faces = [f for f in self.sightings.track_sightings(row.track_id, _track_time(row.type, row.t, _payload(row)))
                 if f["id"] in wanted]
        if not faces:
            raise NamingError("none of the selected faces is kept any more")

        def run() -> tuple[str, int, int]:
            named = name_faces(self.gallery, self.sightings, faces, person)
            self.last_training = {"retrained": True, "people": len(named.classifier.people), "at": time.time()}
            log.info("web: %d faces of track %s named %s", len(faces), row.track_id, escape(person))
            return named.person, len(named.enrolled), self._after_training(named.classifier)

        return self.once(("name-faces", tuple(sorted(wanted)), person), run)[0]

    def cameras(self) -> list[str]:
        """Cameras in the log (plain SQL: sqlite-utils has no DISTINCT call)."""
        found = {r[0] for r in self.store.conn.execute("SELECT DISTINCT camera FROM events WHERE camera IS NOT NULL")}
        return sorted(found | {self.cfg.agent.camera_name})

    # ---- live -----------------------------------------------------------------------------------------
    def live_frames(self) -> dict[str, str]:
        """camera name -> its live frame's file name in the storage folder (agent.frame_output)."""
        cameras = self.cfg.cameras()
        if len(cameras) == 1:
            return {cameras[0].name: live_frame_name(None)}
        return {camera.name: live_frame_name(camera.name) for camera in cameras}

    def live(self) -> dict[str, Any]:
        try:
            status = health.read_status(health.status_path(self.cfg))
        except PermissionError:
            status = None
        stats = (status or {}).get("stats") or {}
        cameras = []  # each camera's live frame (live.jpg, or live-<camera>.jpg with several) and figures
        for name, file in self.live_frames().items():
            frame = self.storage / file
            frame_time = frame.stat().st_mtime if frame.is_file() else None
            own = (stats.get("cameras") or {}).get(name) or {}
            cameras.append({"camera": name, "file": file, "frame_version": int(frame_time or 0),
                            "frame_time": utc(frame_time), "frame_iso": iso(frame_time), "fps": own.get("fps"),
                            "source": _source_line(own.get("source") or {})})
        info: dict[str, Any] = {"running": False, "camera": cameras[0]["camera"], "cameras": cameras,
                                "frame_version": cameras[0]["frame_version"], "frame_time": cameras[0]["frame_time"],
                                "live_interval": self.cfg.service.live_frame_interval}
        if status is None:
            return info
        report = status.get("health") or {}
        checks = report.get("checks") or {}
        since = checks.get("broker_connected_since")
        running = report.get("state") != "stopped" and not health.is_stale(status)
        info.update(running=running, state=report.get("state"), reasons=report.get("reasons"),
                    fps=stats.get("fps"), frames=stats.get("frames"), events=stats.get("events"),
                    tracks=stats.get("tracks"), backend=stats.get("backend"),
                    source=_source_line(stats.get("source") or {}),
                    broker=("not used" if not self.cfg.mqtt.enabled else
                            f"connected since {utc(since)}" if since else
                            "disconnected" if "broker_connected_since" in checks else "unknown"),
                    backlog=checks.get("outbox_backlog"), written=utc(status.get("written_at")),
                    written_iso=iso(status.get("written_at")) if isinstance(status.get("written_at"), (int, float))
                    else str(status.get("written_at") or ""),
                    agent_id=status.get("agent_id"))
        return info

    def close(self) -> None:
        self.gallery.close()
        self.store.close()
        self.sightings.close()
