"""Remote enrollment over MQTT: the agent side (protocol in enrollment_protocol.py, docs/enrollment.md).

    intake = EnrollmentIntake(cfg, gallery, mqtt_client, on_model_updated)
    intake.start()   # False (and nothing subscribed) when [remote_enroll] key_file is unset or unusable
    ...
    intake.stop()

Threads: the MQTT network thread only checks the message size and queues the message; one worker thread
(at a lower priority, `[remote_enroll] worker_nice`) authenticates, validates, analyses images, writes the
enrollment folders and retrains. Retraining is debounced: it starts once no request changed the gallery
for `[remote_enroll] debounce` seconds, so a burst of images trains once. After a retrain the worker calls
`on_model_updated(classifier, info)`, info = {"people", "counts", "training_s", "cv_score",
"trained_at" (ClassifierSummary.model_info), "total_s", "request_ids", "retrained"}; the service swaps the
classifier between frames and logs `model_updated`.

This module is the wire: queue, authentication, nonces, debounce, replies. The operations themselves (add,
remove photos, forget, rename, list, retrain) are agent.enrollment_ops', the same the CLI and the web console
call; naming and rejecting are agent.naming's.

An image is written into the person's folder only after it passed every check (size, decode, pixel cap,
format, exactly one usable face): it is analysed from a private temporary folder inside `[paths] storage`
first. A refused request writes nothing; the nonces of authenticated requests are kept in
`<storage>/remote_enroll.db` so a replay is refused even after a restart.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from agent import database
from agent import enrollment_ops as ops
from agent.config import Config
from agent.enrollment_ops import InvalidNameError, NameTakenError, NotEnrolledError, validate_person_name
from agent.gallery import Gallery
from agent.logsafe import RateLimitedLog, escape
from agent.naming import NamingError, enrolled_text, name_cluster, name_faces, reject, track_faces
from agent.sightings import SightingStore
from agent.store import EventStore
from agent.sync import enrollment_protocol as proto
from agent.sync.enrollment_protocol import ProtocolError
from agent.topics import Topics, replies_prefix
from agent.vision.classifier import Classifier

log = logging.getLogger(__name__)

NONCE_DB = "remote_enroll.db"
TMP_DIR = ".enroll-tmp"
MAX_NONCES = 100_000  # authenticated requests remembered at once (only key holders can add any)
MAX_QUEUED = 1000  # requests waiting for the worker; more are answered "busy"
MAX_CORRELATION_BYTES = 1024
REJECTION_LOGS_PER_MINUTE = 20  # rejected requests logged per minute (the rest are counted)
# Pillow format -> the suffix the photo is stored under (formats the CLI enrollment also reads)
ModelCallback = Callable[[Classifier, dict], None]


NONCE_VERSION = 1  # PRAGMA user_version of the nonce table layout (0: written before layouts had one)


def _create_nonce_tables(db: sqlite_utils.Database) -> None:
    nonces = db["nonces"]
    nonces.create({"nonce": str, "key_id": str, "keep_until": float}, pk="nonce", ignore=True)
    database.ensure_index(nonces, "nonces_keep", ["keep_until"])


class NonceStore:
    """Nonces of accepted-for-processing requests until they could no longer pass the freshness check."""

    def __init__(self, path: Path):
        self.path = path
        self._db = database.database(database.connect(path))
        try:
            database.ensure_layout(self._db, NONCE_VERSION, _create_nonce_tables)
        except BaseException:
            self._db.close()
            raise
        self._nonces = self._db["nonces"]
        self._inserts = 0

    def remember(self, nonce: str, key_id: str, keep_until: float, now: float | None = None) -> None:
        """Record a nonce, or raise ProtocolError(REPLAYED) if it was seen."""
        now = time.time() if now is None else now
        self._inserts += 1
        if self._inserts % 100 == 1:
            self._nonces.delete_where("keep_until < ?", [now])
            if self._nonces.count >= MAX_NONCES:
                raise ProtocolError(proto.BUSY, "too many recent requests; try again later")
        try:
            self._nonces.insert({"nonce": nonce, "key_id": key_id, "keep_until": keep_until})
        except sqlite3.IntegrityError:
            raise ProtocolError(proto.REPLAYED, f"nonce {nonce[:24]} was already used (replayed request)") from None

    def close(self) -> None:
        self._db.close()


def _lower_thread_priority(increment: int) -> None:
    """Nice only the calling thread (Linux: PRIO_PROCESS with a thread id applies to that thread)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError as exc:
        log.debug("cannot lower the enrollment worker's priority: %s", exc)


class EnrollmentIntake:
    """Serves remote enrollment requests for one agent. `start()`/`stop()`; thread-safe `stats()`."""

    def __init__(self, cfg: Config, gallery: Gallery, client: Any,
                 on_model_updated: ModelCallback | None = None):
        self.cfg = cfg
        self.settings = cfg.remote_enroll
        self.gallery = gallery
        self.client = client
        self.on_model_updated = on_model_updated
        self.agent_id = cfg.agent.id
        topics = Topics.of(cfg)
        self.prefix = topics.prefix
        self.fleet_topic, self.own_topic, self.result_topic = topics.enroll_fleet, topics.enroll, topics.enroll_result
        self.enabled = False
        self.keys: dict[str, bytes] = {}
        self._key_path: Path | None = None
        self._key_stamp: tuple[int, int] | None = None
        self._queue: queue.Queue = queue.Queue()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._nonces: NonceStore | None = None
        self._tmp = cfg.path("storage") / TMP_DIR
        self._retrain_at: float | None = None
        self._pending_ids: list[str] = []
        self._pending_key: str | None = None  # key of the last request that changed the gallery
        self._counts: Counter = Counter()
        self._rejections = RateLimitedLog(log, REJECTION_LOGS_PER_MINUTE, 60.0)
        self.retrains = 0

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Load the keys and subscribe; False (logged once) when remote enrollment is off."""
        if self.enabled:
            return True
        if not self.settings.key_file:
            log.info("remote enrollment is off ([remote_enroll] key_file is not set)")
            return False
        self._key_path = self.cfg.resolve(self.settings.key_file)
        try:
            self.keys = proto.load_keys(self._key_path)
            self._key_stamp = self._stamp()
        except proto.KeyFileError as exc:
            log.error("remote enrollment is off: %s", exc)
            return False
        storage = self.cfg.path("storage")
        storage.mkdir(parents=True, exist_ok=True)
        if self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)  # leftovers of a crash: never enrolled
        self._tmp.mkdir(mode=0o700)
        self._nonces = NonceStore(storage / NONCE_DB)
        _ = self.gallery.cache  # open the embedding cache now (not in the middle of a request)
        self.enabled = True
        self._thread = threading.Thread(target=self._run, name="remote-enroll", daemon=True)
        self._thread.start()
        if getattr(self.client, "connected", False):
            log.warning("remote enrollment started after the MQTT client connected: requests the broker "
                        "queued while the agent was down may have been dropped (start the intake first)")
        for topic in (self.fleet_topic, self.own_topic):
            self.client.subscribe(topic, self._on_message, qos=1)
        log.info("remote enrollment on: requests on %s and %s (keys: %s), results on %s", self.fleet_topic,
                 self.own_topic, ", ".join(sorted(self.keys)), self.result_topic)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker after the request in progress. The broker-side subscriptions stay in the
        persistent session, so requests sent while the agent is down are served at the next start: stop the
        MQTT client first (anything still arriving on a live connection after this is not served). Requests
        still queued here are dropped unanswered; a pending debounced retrain is left to the next start (the
        service's ensure_trained sees the changed photos)."""
        if not self.enabled:
            return
        self.enabled = False
        self._queue.put(None)
        if self._thread is not None:
            busy = False
        if self._thread is not None:
            self._thread.join(timeout)
            busy = self._thread.is_alive()
            if busy:
                log.warning("remote enrollment worker still busy after %.0f s; leaving it", timeout)
        self._thread = None
        if self._nonces is not None and not busy:
            self._nonces.close()
            self._nonces = None
            shutil.rmtree(self._tmp, ignore_errors=True)

    def stats(self) -> dict:
        """Counters: requests by outcome, images accepted/rejected, retrains, queue length."""
        with self._lock:
            out = dict(self._counts)
            out.update(retrains=self.retrains, queued=self._queue.qsize(), queued_bytes=self._queued_bytes)
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # ------------------------------------------------------------------------------------------ network thread

    def _on_message(self, message: Any) -> None:
        """Paho's network thread: cheap checks only, then hand over to the worker."""
        if not self.enabled:
            log.warning("remote enrollment: request on %s arrived while stopping; not served",
                        escape(message.topic))
            return
        payload = bytes(message.payload)
        props = getattr(message, "properties", None)
        cap = self.settings.max_message_bytes
        if len(payload) > cap:
            self._reject_now(message.topic, props, ProtocolError(
                proto.TOO_LARGE, f"message is {len(payload)} bytes, over the {cap}-byte limit"))
            return
        with self._lock:
            busy = (self._queue.qsize() >= MAX_QUEUED
                    or self._queued_bytes + len(payload) > self.settings.max_queued_bytes)
            if not busy:
                self._queued_bytes += len(payload)
        if busy:
            self._reject_now(message.topic, props, ProtocolError(proto.BUSY, "too many requests waiting; retry"))
            return
        self._queue.put((message.topic, payload, props, time.time()))

    def _reject_now(self, topic: str, props: Any, error: ProtocolError) -> None:
        self._rejections.warning("remote enrollment: refused a message on %s: %s (%s)", escape(topic),
                                 error.code, escape(error.message))
        self._count(f"rejected_{error.code}")
        self._reply(proto.make_result(self.agent_id, None, None, proto.REJECTED, error), None, props)

    # ------------------------------------------------------------------------------------------ worker

    def _run(self) -> None:
        _lower_thread_priority(self.settings.worker_nice)
        while True:
            timeout = None if self._retrain_at is None else max(0.0, self._retrain_at - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._retrain_safely(force=False)
                continue
            if item is None:
                return
            topic, payload, props, _received = item
            with self._lock:
                self._queued_bytes -= len(payload)
            try:
                self._handle(topic, payload, props)
            except Exception:  # never let one request kill the worker
                log.exception("remote enrollment: request on %s failed", escape(topic))

    def _handle(self, topic: str, payload: bytes, props: Any) -> None:
        fields: dict | None = None
        auth: proto.Authenticated | None = None
        trusted = False  # signed, fresh, for us and not a replay: its v5 response topic is honoured
        try:
            user_props = getattr(props, "UserProperty", None) if props is not None else None
            binary = proto.binary_props(user_props)
            if binary is not None:
                fields = dict(binary)
                signed = proto.binary_signed_form(binary, payload)
            else:
                fields = proto.parse_json(payload, self.settings.max_message_bytes)
                signed = proto.signed_form(fields)
            self._reload_keys()
            auth = proto.authenticate(fields, signed, self.keys, self.settings.max_age,
                                      self.settings.max_validity, binary=binary is not None)
            expected = proto.FLEET if topic == self.fleet_topic else self.agent_id
            if fields.get("target") != expected:
                raise ProtocolError(proto.WRONG_TARGET, f"request for {str(fields.get('target'))[:64]!r} "
                                    f"arrived on {topic} (expected target {expected!r})")
            assert self._nonces is not None
            self._nonces.remember(auth.nonce, auth.key_id, auth.valid_until + self.settings.max_age)
            trusted = True
            request = proto.validate(fields, self.settings.max_image_bytes,
                                     payload if binary is not None else None)
            result = self._execute(request)
        except ProtocolError as exc:
            rid = proto.safe_request_id(fields)
            command = fields.get("command") if fields and isinstance(fields.get("command"), str) else None
            self._rejections.warning("remote enrollment: rejected request %s (%s) on %s: %s: %s", escape(rid),
                                     escape(command, 40), escape(topic), escape(exc.code), escape(exc.message))
            self._count(f"rejected_{exc.code}")
            result = proto.make_result(self.agent_id, rid, command and command[:40], proto.REJECTED, exc)
        except Exception as exc:
            log.exception("remote enrollment: request on %s failed", escape(topic))
            result = proto.make_result(self.agent_id, proto.safe_request_id(fields), None, proto.ERROR,
                                       ProtocolError(proto.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:300]))
        self._reply(result, auth, props, trusted)

    def _reply(self, result: dict, auth: proto.Authenticated | None, props: Any, trusted: bool = False) -> None:
        """Publish a result: signed with the request's key when it authenticated; to the request's v5
        response topic only when it passed every check (a mere publisher, or one replaying a captured
        request, cannot steer the agent's messages to a topic of its choice)."""
        topic = self.result_topic
        out_props = None
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        secret = self.keys.get(auth.key_id) if auth is not None else None
        if auth is not None and secret is not None:
            result = proto.sign_result(result, auth.key_id, secret)
        if trusted and response_topic:
            if proto.response_topic_ok(self.prefix, response_topic):
                topic = response_topic
            else:
                log.warning("remote enrollment: response topic %s is not under %s/; answering on %s",
                            escape(response_topic), replies_prefix(self.prefix), topic)
        if correlation is not None and len(correlation) <= MAX_CORRELATION_BYTES:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            out_props = Properties(PacketTypes.PUBLISH)
            out_props.CorrelationData = bytes(correlation)
        try:
            info = self.client.publish(topic, proto.encode(result), qos=1, properties=out_props)
            if getattr(info, "rc", 0):
                log.warning("remote enrollment: result %s not sent (broker unreachable, rc %s)",
                            result.get("request_id"), info.rc)
        except (ValueError, RuntimeError) as exc:
            log.warning("remote enrollment: cannot publish result to %s: %s", topic, exc)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._key_path.stat() if self._key_path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def _reload_keys(self) -> None:
        """Key rotation without a restart: re-read the key file when it changed."""
        stamp = self._stamp()
        if stamp == self._key_stamp or stamp is None:
            return
        self._key_stamp = stamp
        try:
            self.keys = proto.load_keys(self._key_path)
            log.info("remote enrollment: key file reloaded (keys: %s)", ", ".join(sorted(self.keys)))
        except proto.KeyFileError as exc:
            log.error("remote enrollment: keeping the previous keys: %s", exc)

    # ------------------------------------------------------------------------------------------ commands

    def _person(self, name: str | None) -> str:
        try:
            return validate_person_name(name)
        except InvalidNameError as exc:
            raise ProtocolError(proto.INVALID_NAME, str(exc)) from None

    def _execute(self, req: proto.Request) -> dict:
        self._count(f"command_{req.command}")
        handler = {proto.ADD: self._add, proto.REMOVE_IMAGES: self._remove_images, proto.FORGET: self._forget,
                   proto.RENAME: self._rename, proto.RETRAIN: self._retrain_now, proto.LIST: self._list,
                   proto.NAME: self._name, proto.UNKNOWNS: self._unknowns, proto.REJECT: self._reject}
        return handler[req.command](req)

    def _changed(self, req: proto.Request) -> None:
        """The gallery changed: (re)start the debounce timer."""
        self._pending_ids.append(req.request_id)
        self._pending_key = req.key_id
        self._retrain_at = time.monotonic() + self.settings.debounce

    def _result(self, req: proto.Request, status: str, error: ProtocolError | None = None, **extra: Any) -> dict:
        return proto.make_result(self.agent_id, req.request_id, req.command, status, error, **extra)

    def _add(self, req: proto.Request) -> dict:
        person = self._person(req.person)
        images = self._add_images(person, req.images, req.request_id)
        accepted = [i for i in images if i["status"] == proto.ACCEPTED]
        self._count("images_accepted", len(accepted))
        self._count("images_rejected", len(images) - len(accepted))
        new = any(i.pop("new", False) for i in images)
        if new:
            self._changed(req)
        log.info("remote enrollment: %s: %d of %d image(s) for %r accepted", req.request_id, len(accepted),
                 len(images), person)
        retrain = f"in {self.settings.debounce:g} s" if new else None
        if not accepted:
            return self._result(req, proto.REJECTED, ProtocolError(proto.NO_USABLE_IMAGE, "no image was accepted"),
                                person=person, images=images)
        status = proto.OK if len(accepted) == len(images) else proto.PARTIAL
        return self._result(req, status, person=person, images=images, retrain=retrain)

    def _add_images(self, person: str, images: list[proto.Image], request_id: str) -> list[dict]:
        """The images of an `add`, as the reply lists them; the enrollment itself is enrollment_ops' (which logs
        each image it is offered). An image the protocol refused already (bad base64, hash mismatch...) is not
        offered: logged here."""
        usable = [img for img in images if img.data is not None]
        for img in images:
            if img.data is None:
                log.warning("remote enrollment: %s: image %s for %r rejected: %s (%s)", escape(request_id),
                            escape(img.name), person, escape(img.reason), escape(img.message))
        added = ops.add_images(self.gallery, person, [(img.name, img.data or b"") for img in usable],
                               self.settings.max_image_bytes, self._tmp)
        done = {img.index: a for img, a in zip(usable, added, strict=True)}
        out = []
        for img in images:
            item: dict[str, Any] = {"index": img.index, "name": img.name, "sha256": None, "status": "rejected",
                                    "reason": img.reason or None, "message": img.message or None}
            a = done.get(img.index)
            if a is not None:
                item.update(sha256=a.sha256 or None, reason=a.reason, message=a.message)
                if a.accepted:
                    item.update(status=proto.ACCEPTED, stored_as=a.stored_as)
                    if a.new:
                        item["new"] = True
            out.append(item)
        return out

    def _remove_images(self, req: proto.Request) -> dict:
        person = self._person(req.person)
        try:
            removal = ops.remove_photos(self.gallery, person, req.refs)
        except NotEnrolledError as exc:
            raise ProtocolError(proto.NOT_FOUND, str(exc)) from None
        images = [{"ref": ref, "status": proto.REMOVED if photo is not None else proto.NOT_FOUND,
                   "stored_as": photo.name if photo is not None else None} for ref, photo in removal.found]
        removed = removal.removed
        if removed:
            self._changed(req)
        status = proto.OK if removed == len(req.refs) else (proto.PARTIAL if removed else proto.REJECTED)
        error = None if removed else ProtocolError(proto.NOT_FOUND, "none of the images is enrolled")
        log.info("remote enrollment: %s: removed %d image(s) of %r%s", req.request_id, removed, person,
                 "; none left: forgotten" if removal.forgotten else "")
        extra: dict[str, Any] = {"forgotten": True, "moved_to": self._moved_to(removal.trash)} \
            if removal.forgotten else {}
        return self._result(req, status, error, person=person, images=images, photos_left=removal.photos_left,
                            **extra)

    def _moved_to(self, trash: Path | None) -> str | None:
        return str(trash.relative_to(self.gallery.root.parent)) if trash else None

    def _forget(self, req: proto.Request) -> dict:
        person = self._person(req.person)
        try:
            trash = ops.forget(self.gallery, person, purge=req.purge)
        except NotEnrolledError as exc:
            raise ProtocolError(proto.NOT_FOUND, str(exc)) from None
        self._changed(req)
        log.info("remote enrollment: %s: forgot %r%s", req.request_id, person,
                 f"; photos moved to {trash}" if trash else "")
        return self._result(req, proto.OK, person=person, moved_to=self._moved_to(trash), purged=trash is None)

    def _rename(self, req: proto.Request) -> dict:
        old, new = self._person(req.person), self._person(req.new_name)
        try:
            changed = ops.rename(self.gallery, old, new)
        except NotEnrolledError as exc:
            raise ProtocolError(proto.NOT_FOUND, str(exc)) from None
        except NameTakenError as exc:
            raise ProtocolError(proto.NAME_TAKEN, str(exc)) from None
        if changed:
            self._changed(req)
            log.info("remote enrollment: %s: renamed %r to %r", req.request_id, old, new)
        return self._result(req, proto.OK, person=old, new_name=new)

    def _retrain_now(self, req: proto.Request) -> dict:
        self._pending_ids.append(req.request_id)
        self._pending_key = req.key_id
        info = self._retrain_safely(force=True)
        if info is None:
            raise ProtocolError(proto.INTERNAL_ERROR, "retraining failed (see the agent's log)")
        return self._result(req, proto.OK, model=info)

    def _list(self, req: proto.Request) -> dict:
        people, summary = ops.people_and_model(self.gallery)
        model = None if summary is None else {  # the keys docs/enrollment.md gives `list`'s model
            "people": list(summary.people), "counts": dict(summary.counts), "trained_at": summary.trained_at,
            "cv_score": summary.cv_score}
        return self._result(req, proto.OK, people=people, model=model,
                            retrain_pending=self._retrain_at is not None)

    def _name(self, req: proto.Request) -> dict:
        """Enroll an unknown person's (or a track's) kept faces; the debounced retrain follows."""
        person = self._person(req.person)
        store = SightingStore(self.cfg)
        try:
            if req.unknown_id is not None:
                named = name_cluster(self.gallery, store, req.unknown_id, person, retrain=False)
            else:
                assert req.track_id is not None
                named = name_faces(self.gallery, store, track_faces(store, req.track_id), person, retrain=False)
        except NamingError as exc:
            raise ProtocolError(proto.NOT_FOUND, str(exc)) from None
        finally:
            store.close()
        self._changed(req)
        log.info("remote enrollment: %s: %s named %r: %s", req.request_id,
                 req.unknown_id or f"track {req.track_id}", person, enrolled_text(named))
        return self._result(req, proto.OK, person=person, unknown_id=req.unknown_id, track_id=req.track_id,
                            enrolled=list(dict.fromkeys(named.enrolled)), added=named.added, offered=named.offered,
                            retrain=f"in {self.settings.debounce:g} s")

    def _unknowns(self, req: proto.Request) -> dict:
        """The unknown people seen, with their counts, times and best chip (base64 JPEG)."""
        import base64

        store = SightingStore(self.cfg)
        try:
            clusters = store.clusters()
        finally:
            store.close()
        out = []
        for c in clusters:
            chip = None
            if c["representative"]:
                try:
                    chip = base64.b64encode(Path(c["representative"]).read_bytes()).decode("ascii")
                except OSError:
                    chip = None
            out.append({k: c[k] for k in ("id", "name", "sightings", "tracks", "first_seen", "last_seen")}
                       | {"chip_jpeg": chip})
        return self._result(req, proto.OK, unknowns=out)

    def _reject(self, req: proto.Request) -> dict:
        """An identification was wrong: the track's faces become negatives of that name; retrain follows."""
        with EventStore(self.cfg) as events:
            stored = events.get(req.event_id or "")
        if stored is None:
            raise ProtocolError(proto.NOT_FOUND, f"no event {req.event_id} in this agent's log")
        event = stored.event()
        store = SightingStore(self.cfg)
        try:
            done = reject(self.gallery, store, event, retrain=False)
        except NamingError as exc:
            raise ProtocolError(proto.NOT_FOUND, str(exc)) from None
        finally:
            store.close()
        if not done.already:
            self._changed(req)
        log.info("remote enrollment: %s: track %s is not %r%s", req.request_id, event.track_id, event.name,
                 " (already rejected)" if done.already else "")
        return self._result(req, proto.OK, person=event.name, event_id=req.event_id, negatives=done.total,
                            already=done.already, retrain="none" if done.already else
                            f"in {self.settings.debounce:g} s")

    # ------------------------------------------------------------------------------------------ retraining

    def _retrain_safely(self, force: bool) -> dict | None:
        """Retrain now; hand a new classifier to on_model_updated. The info dict, or None on failure."""
        self._retrain_at = None
        ids, self._pending_ids = self._pending_ids, []
        try:
            training = ops.retrain(self.gallery, force=force)
        except Exception:
            log.exception("remote enrollment: retraining failed; the previous classifier stays in use")
            self._count("retrain_failures")
            return None
        clf, retrained = training.classifier, training.retrained
        info = {**training.summary.model_info(), "total_s": training.seconds, "request_ids": ids,
                "retrained": retrained}
        if retrained:
            with self._lock:
                self.retrains += 1
            log.info("remote enrollment: retrained for %d people in %.1f s (cv %s)", len(clf.people),
                     info["total_s"], info["cv_score"])
            if self.on_model_updated is not None:
                try:
                    self.on_model_updated(clf, info)
                except Exception:
                    log.exception("remote enrollment: on_model_updated callback failed")
        else:
            log.info("remote enrollment: classifier already up to date")
        notice = proto.make_result(self.agent_id, None, "model_updated", proto.OK, model=info)
        key_id = self._pending_key if self._pending_key in self.keys else None
        self._reply(notice, proto.Authenticated(key_id, "", 0.0, 0.0) if key_id else None, None)
        return info
