"""The web console's pages and actions (Starlette + Jinja2 + htmx): Live, Events, People, Unknown people.

It reads what the agent keeps - the status file, the live frame, the event log, the gallery's folders - and
changes enrollment only through `agent.gallery.Gallery` (the same operations as `face-agent enroll`, `rename`,
`forget` and remote enrollment) and the sightings' operations in `agent.naming` (`name_cluster`, `reidentify`,
`reject`, `merge_unknowns` and `ignore_unknown`: the same as `face-agent name`, `reject` and `unknowns
merge|ignore|unignore`). The People page links the last `eval`/`tune` reports (agent.evaluation.report) and
can run `tune`. After every change it retrains through the gallery
(`ensure_trained`, SVMs in a child process) and saves the classifier in `[paths] svm`; the running agent
notices the new file at its next health check (`[service] status_interval`) and swaps it in between two
frames, as after a remote enrollment - no restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import secrets
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from agent import health
from agent.config import Config
from agent.evaluation import EvalError
from agent.evaluation.report import REPORT_KINDS, reports_folder
from agent.events import EVENT_TYPES, IDENTIFIED, REIDENTIFIED, parse_timestamp
from agent.frame_output import live_frame_name
from agent.gallery import Gallery, InvalidNameError, NameTakenError, NotEnrolledError, validate_person_name
from agent.images import ImageError, is_image_path
from agent.logsafe import escape
from agent.naming import Named, NamingError, ignore_unknown, log_reidentified, merge_unknowns, name_cluster, reject
from agent.sightings import SightingStore, cluster_label, parse_cluster
from agent.store import EventStore, StoredEvent
from agent.web.security import (
    CSRF_FIELD,
    Guard,
    Logins,
    csrf_token,
    is_loopback,
    safe_file,
    same_token,
    verify_password,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
LOGIN_DELAY = 0.5  # seconds a wrong password waits (slows guessing)
MAX_FLASH, MAX_FLASH_SESSIONS = 100, 1000  # messages kept for a session's next page; sessions with messages
MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers on top of the photos themselves
CHIPS_SHOWN = 6  # chips of an unknown person shown on its card, best first
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")


def _when(value: str) -> float | None:
    """Epoch seconds of a filter value ('2h', '2026-11-29T16:00', ...; naive = UTC), None when empty."""
    from agent.commands.events import parse_when  # the same syntax as `face-agent events --since`

    return parse_when(value) if value.strip() else None


def _utc(t: float | str | None) -> str:
    if t in (None, ""):
        return ""
    if isinstance(t, str):
        return t.replace("T", " ").replace("Z", " UTC")
    return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _track_time(type_: str, t: float, payload: dict[str, Any]) -> float:
    """When the track an event is about was seen: a `reidentified` event comes later and says when."""
    if type_ == REIDENTIFIED and isinstance(payload.get("seen_at"), str):
        with contextlib.suppress(ValueError):
            return parse_timestamp(payload["seen_at"])
    return t


def _source_line(source: dict[str, Any]) -> str | None:
    if not source:
        return None
    text = "connected" if source.get("connected") else "not connected"
    text += f", {source.get('frames_read', 0)} frames read, {source.get('dropped', 0)} dropped, " \
            f"{source.get('reconnects', 0)} reconnects"
    return text + (f"; last error: {source['last_error']}" if source.get("last_error") else "")


class Console:
    """What the pages need from the agent's storage, built once per process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.storage = cfg.path("storage")
        self.gallery = Gallery(cfg, train_in_subprocess=True)
        self.store = EventStore(cfg)
        self.sightings = SightingStore(cfg)
        self.work_dir = Path(tempfile.mkdtemp(prefix="face-agent-web-"))  # private (0700) upload copies
        self.train_lock = threading.Lock()
        self.last_training: dict[str, Any] = {}
        self.flashes: dict[str, list[str]] = {}  # CSRF token of a session -> messages for its next page

    # ---- people ---------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        clf = self.gallery.load_classifier()
        if clf is None:
            return {"trained": False}
        meta = clf.meta
        cv = meta.get("cross_validation") or {}
        return {"trained": True, "people": len(clf.people), "counts": meta.get("counts", {}),
                "trained_at": _utc(meta.get("trained_at")), "seconds": meta.get("training_seconds"),
                "cv_accuracy": cv.get("balanced_accuracy"), "cv_folds": cv.get("folds"),
                "cv_grid": cv.get("grid") or [], "kernel": (meta.get("svm") or {}).get("kernel"),
                "warnings": meta.get("warnings") or []}

    def retrain(self) -> dict[str, Any]:
        """ensure_trained through the gallery; the running agent picks the saved classifier up (module doc)."""
        with self.train_lock:
            clf, results, retrained = self.gallery.ensure_trained(progress=False)
            self.last_training = {"retrained": retrained, "people": len(clf.people), "at": time.time()}
            log.info("web: classifier %s (%d people)", "retrained" if retrained else "unchanged", len(clf.people))
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

    def person(self, name: str) -> dict[str, Any]:
        results, _, _, _ = self.gallery.scan([name], progress=False)
        photos = []
        for r in results:
            chip = self.gallery.chip_path(name, r.path, r.sha256) if r.sha256 else None
            photos.append({"name": r.path.name, "status": r.status, "reason": r.reason, "ok": r.ok,
                           "chip": chip.name if chip is not None and chip.is_file() else None})
        return {"name": name, "photos": photos}

    def first_chip(self, name: str) -> str | None:
        """The chip of the person's first photo that has one (chips are named after their photo)."""
        for photo in self.gallery.photos_of(name):
            if (self.gallery.aligned / name / f"{photo.stem}.png").is_file():
                return f"{photo.stem}.png"
        return None

    def add_uploads(self, person: str, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        max_bytes = min(self.cfg.web.max_upload_bytes, self.cfg.images.max_bytes)
        out = []
        for filename, data in files:
            try:
                added = self.gallery.add_image(person, data, filename, max_bytes, self.work_dir)
            except ImageError as exc:
                out.append({"file": filename, "ok": False, "message": str(exc)})
                continue
            out.append({"file": filename, "ok": added.accepted, "reason": added.reason,
                        "message": added.message or ("enrolled" if added.accepted else added.reason)})
            log.info("web: upload for %s: %s -> %s", escape(person), escape(filename),
                     "accepted" if added.accepted else added.reason)
        return out

    # ---- events ---------------------------------------------------------------------------------------
    def events(self, person: str, type_: str, camera: str, since: float | None, until: float | None,
               track: int | None) -> list[dict[str, Any]]:
        rows = self.store.query(since=since, until=until, name=person or None, type=type_ or None,
                                camera=camera or None, limit=self.cfg.web.events_per_page)
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
            out.append({"event_id": row.event_id, "time": _utc(row.t), "type": row.type, "name": row.name,
                        "camera": row.camera, "track_id": row.track_id, "confidence": row.confidence,
                        "thumbnail": thumb, "faces": len(faces), "unknown": self.unknown_link(payload),
                        "reason": payload.get("reason"), "votes": payload.get("votes"), "state": row.state,
                        "rejectable": rejectable,
                        "rejected": rejectable and any(r["rejected"] == row.name for r in faces)})
        return out

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
            out.append({"id": face["id"], "time": _utc(face["t"]), "quality": face["quality"], "name": face["name"],
                        "cluster": cluster_label(face["cluster"]) if face["cluster"] else None,
                        "rejected": face["rejected"], "reidentified": face["reidentified"],
                        "chip": Path(face["chip"]).parts, "context": Path(face["context"]).parts})
        return row, out

    # ---- unknown people: the sightings room's operations (`face-agent unknowns`, `name`, `reject`) -------
    def unknowns(self, ignored: bool | None = False) -> list[dict[str, Any]]:
        """`SightingStore.clusters(ignored)` with each chip as its parts under the sightings folder (for /files)."""
        clusters = self.sightings.clusters(ignored)
        for c in clusters:
            c["chips"] = [Path(chip).relative_to(self.sightings.folder).parts for chip in c["chips"][:CHIPS_SHOWN]]
        return clusters

    def merge_targets(self) -> list[dict[str, Any]]:
        """The unknown people another one can be merged into: every unnamed one, ignored ones too (a new
        cluster may be the person ignored before)."""
        return [{"id": c["id"], "ignored": c["ignored"], "sightings": c["sightings"]}
                for c in self.sightings.clusters(ignored=None) if c["name"] is None]

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

    def name_cluster(self, unknown_id: str, person: str) -> tuple[Named, int]:
        """`face-agent name UNKNOWN_ID PERSON` (agent.naming.name_cluster, retraining through the gallery)."""
        with self.train_lock:
            named = name_cluster(self.gallery, self.sightings, unknown_id, person)
            self.last_training = {"retrained": True, "people": len(named.classifier.people), "at": time.time()}
            reidentified = self._after_training(named.classifier)
        log.info("web: %s named %s (%d faces enrolled)", escape(unknown_id), escape(named.person),
                 len(named.enrolled))
        return named, reidentified

    def reject(self, event_id: str) -> tuple[Any, int]:
        """`face-agent reject EVENT_ID` (agent.naming.reject). Returns (the event, negatives recorded)."""
        stored = self.store.get(event_id.strip().upper())
        if stored is None:
            raise NamingError(f"no event {event_id!r} in the log")
        event = stored.event()
        with self.train_lock:
            count, _ = reject(self.gallery, self.sightings, event)
        log.info("web: event %s rejected (not %s)", escape(event.event_id), escape(event.name or ""))
        return event, count

    def cameras(self) -> list[str]:
        """Cameras in the log (plain SQL: sqlite-utils has no DISTINCT call)."""
        found = {r[0] for r in self.store.conn.execute("SELECT DISTINCT camera FROM events")}
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
                            "frame_time": _utc(frame_time), "fps": own.get("fps"),
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
                            f"connected since {_utc(since)}" if since else
                            "disconnected" if "broker_connected_since" in checks else "unknown"),
                    backlog=checks.get("outbox_backlog"), written=_utc(status.get("written_at")),
                    agent_id=status.get("agent_id"))
        return info

    def close(self) -> None:
        self.gallery.close()
        self.store.close()
        self.sightings.close()


def create_app(cfg: Config) -> Starlette:
    """The console for `cfg` (see the module docstring and agent/web/security.py)."""
    web = cfg.web
    console = Console(cfg)
    logins = Logins(web.session_hours * 3600)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["utc"] = _utc

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        flash = console.flashes.pop(csrf_token(request.session), [])
        return templates.TemplateResponse(request, name, {
            "csrf": csrf_token(request.session), "login": bool(web.password_hash), "flash": flash,
            "path": request.url.path, **context}, status_code=status_code)

    def flash(request: Request, *messages: str) -> None:
        """Messages for the session's next page, kept here (a cookie holds 4 kB: not enough for an upload's)."""
        key = csrf_token(request.session)
        console.flashes[key] = [*console.flashes.pop(key, []), *messages][-MAX_FLASH:]
        while len(console.flashes) > MAX_FLASH_SESSIONS:
            console.flashes.pop(next(iter(console.flashes)))

    def go(url: str) -> Response:
        """After an htmx action: load `url` as a page."""
        return Response(status_code=204, headers={"HX-Redirect": url})

    def person_url(name: str) -> str:
        from urllib.parse import quote

        return "/people/" + quote(name, safe="")

    async def retrain(request: Request) -> None:
        try:
            info = await run_in_threadpool(console.retrain)
        except Exception as exc:  # the change is on disk; training failing must say so, not lose it
            log.exception("web: retraining failed")
            flash(request, f"retraining failed: {exc}")
            return
        flash(request, f"classifier {'retrained' if info['retrained'] else 'already up to date'}: "
                       f"{info['people']} people")

    # ---- login ----------------------------------------------------------------------------------------
    async def login(request: Request) -> Response:
        if not web.password_hash:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return page(request, "login.html", error=None)
        form = await request.form()
        if not same_token(str(form.get(CSRF_FIELD, "")), request.session):
            return page(request, "login.html", 403, error="the form expired: try again")
        if not await run_in_threadpool(verify_password, str(form.get("password", "")), web.password_hash):
            await asyncio.sleep(LOGIN_DELAY)
            log.warning("web: failed login from %s", escape(request.client.host if request.client else "?"))
            return page(request, "login.html", 401, error="wrong password")
        request.session.clear()
        request.session.update(user=logins.start(), csrf=secrets.token_urlsafe(32))
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        logins.end(request.session.get("user"))
        request.session.clear()
        return go("/login" if web.password_hash else "/")

    # ---- pages ----------------------------------------------------------------------------------------
    async def home(request: Request) -> Response:
        return RedirectResponse("/live", status_code=303)

    async def live(request: Request) -> Response:
        return page(request, "live.html", live=console.live())

    async def live_panel(request: Request) -> Response:
        return templates.TemplateResponse(request, "live_panel.html", {"live": console.live()})

    async def events(request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("person", "type", "camera", "since", "until", "track")}
        error, rows = None, []
        try:
            since, until = _when(filters["since"]), _when(filters["until"])
            track = int(filters["track"]) if filters["track"] else None
            rows = await run_in_threadpool(console.events, filters["person"], filters["type"], filters["camera"],
                                           since, until, track)
        except (ValueError, argparse.ArgumentTypeError) as exc:  # a bad time or track number
            error = str(exc)
        return page(request, "events.html", rows=rows, filters=filters, error=error, types=EVENT_TYPES,
                    cameras=console.cameras(), people=console.gallery.people_on_disk())

    async def track_faces(request: Request) -> Response:
        try:
            event, faces = await run_in_threadpool(console.track_faces, request.path_params["event_id"])
        except NamingError as exc:
            return PlainTextResponse(str(exc), status_code=404)
        return page(request, "track.html", event=event, faces=faces, time=_utc(event.t), privacy=cfg.sightings.privacy)

    async def reports(request: Request) -> Response:
        found = await run_in_threadpool(console.reports)
        return page(request, "reports.html", reports=found, folder=reports_folder(cfg))

    async def run_tune(request: Request) -> Response:
        try:
            report = await run_in_threadpool(console.run_tune)
        except EvalError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        threshold = report["suggested_threshold"]
        flash(request, f"tune: {len(report['photos'])} photos of {len(report['people'])} people; suggested "
                       f"distance_threshold {'n/a' if threshold is None else f'{threshold:.3f}'}")
        return go("/reports")

    async def people(request: Request) -> Response:
        summary = await run_in_threadpool(console.gallery.summary)
        chips = {name: console.first_chip(name) for name in summary}
        return page(request, "people.html", summary=summary, chips=chips, training=console.training_state(),
                    web=web)

    async def person(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            name = validate_person_name(name)
        except InvalidNameError as exc:
            return PlainTextResponse(str(exc), status_code=404)
        if name not in console.gallery.people_on_disk():
            return PlainTextResponse(f"{name} is not enrolled", status_code=404)
        data = await run_in_threadpool(console.person, name)
        training = console.training_state()
        return page(request, "person.html", person=data, training=training,
                    trained_photos=training.get("counts", {}).get(name, 0), web=web)

    # ---- actions (htmx, CSRF header checked by the Guard) ----------------------------------------------
    async def upload(request: Request) -> Response:
        form = await request.form(max_files=web.max_upload_files, max_fields=10,
                                  max_part_size=web.max_upload_bytes + MULTIPART_OVERHEAD)
        try:
            name = validate_person_name(str(form.get("person", "")))
        except InvalidNameError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        files = []
        for item in form.getlist("photos"):
            if isinstance(item, UploadFile) and item.filename:
                files.append((item.filename, await item.read()))
        if not files:
            return PlainTextResponse("choose at least one photo", status_code=400)
        results = await run_in_threadpool(console.add_uploads, name, files)
        accepted = [r for r in results if r["ok"]]
        flash(request, *[f"{r['file']}: {'accepted' if r['ok'] else 'refused'} - {r['message']}" for r in results])
        if accepted:
            await retrain(request)
        elif not console.gallery.photos_of(name):  # a new person whose photos were all refused
            return go("/people")
        return go(person_url(name))

    async def remove_photo(request: Request) -> Response:
        name = validate_person_name(request.path_params["name"])
        form = await request.form()
        photo = console.gallery.find_photo(name, str(form.get("photo", "")))
        if photo is None:
            return PlainTextResponse("no such photo", status_code=404)
        await run_in_threadpool(console.gallery.remove_photo, name, photo)
        flash(request, f"removed {photo.name}")
        await retrain(request)
        return go(person_url(name))

    async def rename(request: Request) -> Response:
        form = await request.form()
        try:
            old = validate_person_name(request.path_params["name"])
            new = validate_person_name(str(form.get("new_name", "")))
            await run_in_threadpool(console.gallery.rename, old, new)
        except (InvalidNameError, NameTakenError, NotEnrolledError) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        flash(request, f"renamed {old} to {new}")
        await retrain(request)
        return go(person_url(new))

    async def forget(request: Request) -> Response:
        try:
            name = validate_person_name(request.path_params["name"])
            moved = await run_in_threadpool(console.gallery.forget, name)
        except (InvalidNameError, NotEnrolledError) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        flash(request, f"forgot {name}" + (f"; the photos were moved to {moved}" if moved else ""))
        await retrain(request)
        return go("/people")

    async def retrain_now(request: Request) -> Response:
        await retrain(request)
        return go("/people")

    async def unknowns(request: Request) -> Response:
        show_ignored = request.query_params.get("show") == "ignored"
        clusters = await run_in_threadpool(console.unknowns, show_ignored)
        targets = await run_in_threadpool(console.merge_targets)
        return page(request, "unknowns.html", clusters=clusters, people=console.gallery.people_on_disk(),
                    privacy=cfg.sightings.privacy, show_ignored=show_ignored, targets=targets,
                    ignored_count=sum(t["ignored"] for t in targets))

    async def merge_unknown(request: Request) -> Response:
        form = await request.form()
        source = request.path_params["unknown_id"]
        try:
            target, moved = await run_in_threadpool(console.merge, source, str(form.get("into", "")))
        except NamingError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        flash(request, f"{source} merged into {target}: {moved} sightings moved; {source} now means {target}")
        return go("/unknowns")  # no #fragment: a redirect that only changes it would not reload the page

    async def ignore_or_show(request: Request) -> Response:
        ignored = request.url.path.endswith("/ignore")
        try:
            label = await run_in_threadpool(console.set_ignored, request.path_params["unknown_id"], ignored)
        except NamingError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        flash(request, f"{label} ignored: hidden here and from naming; their next sightings join {label}"
              if ignored else f"{label} is shown again")
        return go("/unknowns")

    async def name_unknown(request: Request) -> Response:
        form = await request.form()
        unknown_id = request.path_params["unknown_id"]
        try:
            named, reidentified = await run_in_threadpool(console.name_cluster, unknown_id,
                                                          str(form.get("person", "")))
        except (InvalidNameError, NamingError) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        flash(request, f"{unknown_id} is now {named.person}: {len(named.enrolled)} of {named.offered} faces enrolled",
              *[f"not enrolled: {message}" for message in named.refused],
              *([f"classifier retrained: {len(named.classifier.people)} people"] if named.classifier else []),
              *([f"{reidentified} earlier unknown tracks re-identified (reidentified events logged)"]
                if reidentified else []))
        return go(person_url(named.person))

    async def reject_event(request: Request) -> Response:
        try:
            event, count = await run_in_threadpool(console.reject, request.path_params["event_id"])
        except NamingError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        flash(request, f"track {event.track_id} is not {event.name}: {count} faces are now known not to be "
                       f"{event.name}; classifier retrained")
        back = urlsplit(request.headers.get("hx-current-url", ""))
        return go(back.path + (f"?{back.query}" if back.query else "") if back.path == "/events" else "/events")

    # ---- files: only from the agent's own folders ------------------------------------------------------
    async def file(request: Request) -> Response:
        kind, parts = request.path_params["kind"], request.path_params["rest"].split("/")
        roots = {"photo": console.gallery.raw, "chip": console.gallery.aligned, "sighting": console.sightings.folder}
        path = None
        if kind in roots and len(parts) == 2:
            path = safe_file(roots[kind], *parts)
        elif kind == "report" and len(parts) == 1 and parts[0] in {f"{k}.png" for k in REPORT_KINDS} \
                and reports_folder(cfg) is not None:
            path = safe_file(reports_folder(cfg), parts[0])
        elif kind == "live" and len(parts) == 1 and parts[0] in console.live_frames().values():
            path = safe_file(console.storage, parts[0])
        if path is None or not is_image_path(path):
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/live", live),
        Route("/live/panel", live_panel),
        Route("/events", events),
        Route("/people", people),
        Route("/people/upload", upload, methods=["POST"]),
        Route("/people/retrain", retrain_now, methods=["POST"]),
        Route("/people/{name}", person),
        Route("/people/{name}/remove", remove_photo, methods=["POST"]),
        Route("/people/{name}/rename", rename, methods=["POST"]),
        Route("/people/{name}/forget", forget, methods=["POST"]),
        Route("/reports", reports),
        Route("/reports/tune", run_tune, methods=["POST"]),
        Route("/unknowns", unknowns),
        Route("/unknowns/{unknown_id}/name", name_unknown, methods=["POST"]),
        Route("/unknowns/{unknown_id}/merge", merge_unknown, methods=["POST"]),
        Route("/unknowns/{unknown_id}/ignore", ignore_or_show, methods=["POST"]),
        Route("/unknowns/{unknown_id}/unignore", ignore_or_show, methods=["POST"]),
        Route("/events/{event_id}/reject", reject_event, methods=["POST"]),
        Route("/events/{event_id}/faces", track_faces),
        Route("/files/{kind}/{rest:path}", file),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    hosts = ["*"] if not is_loopback(web.host) else ["127.0.0.1", "localhost", "::1", "[::1]"]
    max_body = web.max_upload_files * (web.max_upload_bytes + MULTIPART_OVERHEAD)
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts),  # loopback: no DNS rebinding from a web page
        Middleware(SessionMiddleware, secret_key=secrets.token_hex(32), session_cookie="face_agent_session",
                   max_age=int(web.session_hours * 3600), same_site="strict"),
        Middleware(Guard, password_hash=web.password_hash, max_body=max_body, logins=logins),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        yield
        console.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.console = console
    return app

