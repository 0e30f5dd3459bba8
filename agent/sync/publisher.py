"""The publisher thread: drains the SQLite outbox to `<prefix>/events` (QoS 1) and sends stats.

Delivery is at-least-once: an event is marked delivered only when its PUBACK arrives, so after a crash or
an outage it may be published again; consumers dedupe by `event_id`. Order: events are published in
insertion order with at most `[mqtt] max_inflight` awaiting their PUBACK. Nothing is handed to paho while
disconnected (paho would only queue it in memory); an event without a PUBACK after `[mqtt] ack_timeout`
seconds of connection is published again.

Usage (the service):
    publisher = Publisher(cfg, store, stats_fn)   # stats_fn() -> dict, e.g. {"fps": 14.2, ...}
    publisher.start()                             # never blocks on the network
    ...store.add(event)...                        # wakes the publisher (store listener)
    publisher.stop()                              # flushes for up to [mqtt] shutdown_timeout seconds

An event the log could not store (a full disk: `StoreFullError`) is handed to `publish_unstored`: it is kept
in memory (at most MEMORY_EVENTS, the oldest dropped first) and published like the outbox's events, after
them; its PUBACK only counts it (`delivered_unstored`). It is lost only if the agent stops before the broker
took it.

With `[mqtt] enabled = false` there is nothing to publish (the events stay in the log). Retention is not
the publisher's: the service runs the stores' retention on its own timer (agent.periodic).
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from agent.config import Config
from agent.events import IDENTIFIED, UNKNOWN_FACE, Event, format_timestamp, parse_timestamp
from agent.logsafe import RateLimitedLog
from agent.store import PENDING, EventStore, StoredEvent, StoreError
from agent.sync.homeassistant import HomeAssistant
from agent.sync.mqtt import MqttClient
from agent.topics import Topics

log = logging.getLogger(__name__)

MEMORY_EVENTS = 10_000  # events that could not be stored, kept in memory for publishing (oldest dropped)
REJECT_BACKOFF = 5.0  # seconds before republishing after the broker refused a message (MQTT v5 reason)
EXPIRE_EVERY = 1.0  # seconds between two looks for pending events older than [mqtt] max_event_age
IDLE_WAKE = 1.0  # seconds: the loop checks timers at least this often


@dataclass
class _InFlight:
    record: StoredEvent
    mid: int
    sent: float  # monotonic time of the publish, reset on every reconnect


class Publisher:
    """Publishes the outbox of `store` (see the module docstring); `client` may be shared with remote
    enrollment (`publisher.client` is the MqttClient either way)."""

    def __init__(self, cfg: Config, store: EventStore, stats_fn: Callable[[], dict] | None = None,
                 client: MqttClient | None = None) -> None:
        m = cfg.mqtt
        self.cfg = cfg
        self.store = store
        self.stats_fn = stats_fn
        self.enabled = m.enabled
        topics = Topics.of(cfg)
        self.topic, self.stats_topic, self.health_topic = topics.events, topics.stats, topics.health
        self.window = m.max_inflight
        self.ack_timeout = m.ack_timeout
        self.client = client if client is not None else (MqttClient(cfg) if m.enabled else None)
        self.homeassistant = HomeAssistant(cfg, self.client) if (m.enabled and m.homeassistant) else None
        self.published = 0  # publish calls made (including re-publishes)
        self.delivered = 0  # PUBACKs that marked an event delivered
        self.delivered_unstored = 0  # PUBACKs of events that only lived in memory (not stored: full disk)
        self.dropped_unstored = 0  # events not stored that were dropped from memory unpublished
        self._memory: collections.deque[StoredEvent] = collections.deque()  # not stored: published from here
        self._unmarked: set[str] = set()  # acknowledged, not yet marked delivered (the mark failed: full disk)
        self._retry_mark_at = 0.0
        self._log_errors = RateLimitedLog(log, per_period=3)  # a full disk fails every step: not a line each
        self._inflight: dict[int, _InFlight] = {}  # mid -> entry; publisher thread only
        self._acks: list[tuple[int, int, Any]] = []  # (generation, mid, reason) from the network thread
        self._acks_lock = threading.Lock()
        self._generation = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_deadline = 0.0
        self._hold_until = 0.0
        self._thread: threading.Thread | None = None
        self._next_stats = 0.0
        self._next_expiry = 0.0
        self.expired = 0  # events this publisher marked expired ([mqtt] max_event_age)
        self._error: BaseException | None = None
        self._health_sent: tuple | None = None  # (state, reasons) last published on the health topic
        store.add_listener(lambda _event: self._wake.set())

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background and start the thread (none with MQTT off: nothing to publish). Raises
        MqttConfigError on bad settings."""
        if self._thread is not None or self.client is None:
            return
        self.client.add_publish_listener(self._on_ack)
        self.client.add_connect_listener(self._on_connect)
        self.client.add_disconnect_listener(self._wake.set)
        if self.homeassistant is not None:
            self.homeassistant.attach()
        self.client.start()
        self._next_stats = time.monotonic() + self.cfg.mqtt.stats_interval
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> int:
        """Flush the outbox for up to `timeout` s ([mqtt] shutdown_timeout), then disconnect cleanly.

        Returns the number of events still pending (they stay in the log for the next start); 0 with MQTT
        off, where events are not an outbox."""
        timeout = self.cfg.mqtt.shutdown_timeout if timeout is None else timeout
        if self._thread is not None:
            self._flush_deadline = time.monotonic() + max(0.0, timeout)
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout + 5.0)
            if self._thread.is_alive():  # pragma: no cover - only if SQLite hangs
                log.error("publisher thread did not stop within %.0f s", timeout + 5.0)
            self._thread = None
        if self.client is not None:
            self.client.stop()
        if self.client is None:  # MQTT is off: nothing is waiting to be published
            return 0
        if self._memory:
            log.error("%d events that could not be stored (full disk) were not published before the stop: lost",
                      len(self._memory))
        left = self.store.count("pending")
        if left:
            log.info("publisher stopped with %d undelivered events kept in %s", left, self.store.path)
        return left

    def wake(self) -> None:
        """Look at the outbox now (the store does this on every `add`)."""
        self._wake.set()

    def publish_unstored(self, event: Event) -> bool:
        """Publish an event the log could not store (from memory, after the outbox's events); False when it
        cannot go out at all (MQTT is off)."""
        if self.client is None:
            return False
        record = StoredEvent(-1, event.event_id, parse_timestamp(event.timestamp), event.timestamp, event.type,
                             event.name, event.camera, event.track_id, event.confidence, PENDING, event.to_json())
        self._memory.append(record)
        while len(self._memory) > MEMORY_EVENTS:
            self._memory.popleft()
            self.dropped_unstored += 1
        self._wake.set()
        return True

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def backlog(self) -> dict[str, int]:
        """{'pending': events not yet acknowledged, 'inflight': awaiting PUBACK now}."""
        return {"pending": self.store.count("pending"), "inflight": len(self._inflight)}

    def publish_health(self, report: dict) -> None:
        """The health state, retained, on <prefix>/<agent id>/health whenever it changes (ok, degraded with
        its reasons, stopped) and again after each reconnect; the status topic beside it stays online/offline
        for availability. Does nothing while disconnected (the next connect sends the state then)."""
        key = (report["state"], tuple(report.get("reasons", ())))
        if self.client is None or not self.client.connected or key == self._health_sent:
            return
        payload = json.dumps({"state": report["state"], "reasons": report.get("reasons", []),
                              "timestamp": format_timestamp()})
        if self.client.publish(self.health_topic, payload, qos=1, retain=True).rc == 0:
            self._health_sent = key

    # ------------------------------------------------------------------------------------------ callbacks
    # (paho's network thread: only record and wake)

    def _on_ack(self, mid: int, reason: Any) -> None:
        with self._acks_lock:
            self._acks.append((self.client.generation, mid, reason))
        self._wake.set()

    def _on_connect(self, session_present: bool) -> None:
        self._health_sent = None  # say it again on the new connection
        self._wake.set()

    # ------------------------------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()  # before the work: a wake-up during it makes the wait below return
                stopping = self._stop.is_set()
                try:
                    self._step(stopping)
                    if stopping and (not self.client.connected or not self._outbox_busy()
                                     or time.monotonic() >= self._flush_deadline):
                        break
                except (StoreError, sqlite3.Error) as exc:  # e.g. a full disk: keep going, retry later
                    self._log_errors.log(logging.ERROR, "publisher: event log error: %s; retrying in %.0f s", exc,
                                         REJECT_BACKOFF)
                    self._hold_until = time.monotonic() + REJECT_BACKOFF
                    if stopping:
                        break
                self._wake.wait(self._sleep_time(stopping))
        except BaseException as exc:  # the service sees it through `error`; logged loudly here
            self._error = exc
            log.exception("publisher thread failed; events stay in the outbox")

    def _step(self, stopping: bool) -> None:
        now = time.monotonic()
        self._process_acks()
        self._check_connection_and_timeouts()
        if self.client.connected and now >= self._hold_until:
            self._expire_old(now)
            self._fill_window()
        if not stopping and self.client.connected and now >= self._next_stats:
            self._publish_stats()

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the thread, if any."""
        return self._error

    def _sleep_time(self, stopping: bool) -> float:
        if stopping:
            return 0.05
        wait = min(IDLE_WAKE, max(0.0, self._next_stats - time.monotonic()))
        if self._hold_until > time.monotonic():
            wait = min(wait, self._hold_until - time.monotonic())
        return max(0.01, wait)

    def _outbox_busy(self) -> bool:
        return bool(self._inflight) or bool(self._memory) or bool(self.store.pending(1, exclude=self._unmarked))

    def _check_connection_and_timeouts(self) -> None:
        gen = self.client.generation
        if gen != self._generation:  # a new paho client: message ids of the old one are void
            self._generation = gen
            self._requeue(list(self._inflight.values()))
            self._inflight.clear()
        now = time.monotonic()
        if not self.client.connected:
            for entry in self._inflight.values():  # the ack clock runs only while connected
                entry.sent = now
            return
        for mid, entry in list(self._inflight.items()):
            if now - entry.sent > self.ack_timeout:
                log.warning("no PUBACK for event %s after %.0f s; publishing it again", entry.record.event_id,
                            self.ack_timeout)
                del self._inflight[mid]
                self._requeue([entry])

    def _requeue(self, entries: list[_InFlight]) -> None:
        """Events from memory whose publish is void go back to the front of the memory queue (stored ones are
        read from the outbox again anyway)."""
        for entry in sorted(entries, key=lambda e: e.sent, reverse=True):
            if entry.record.seq < 0:
                self._memory.appendleft(entry.record)

    def _process_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        done: list[StoredEvent] = []
        for gen, mid, reason in acks:
            if gen != self._generation:
                continue
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # e.g. the online status message, or an entry that timed out
            if getattr(reason, "is_failure", False):
                log.error("broker refused event %s: %s; retrying in %.0f s", entry.record.event_id, reason,
                          REJECT_BACKOFF)
                self._hold_until = time.monotonic() + REJECT_BACKOFF
                self._requeue([entry])
                continue
            if entry.record.seq < 0:  # from memory: nothing to mark
                self.delivered_unstored += 1
            else:
                self._unmarked.add(entry.record.event_id)
            done.append(entry.record)
        if self.homeassistant is not None:
            for record in done:
                if record.type in (IDENTIFIED, UNKNOWN_FACE):
                    self.homeassistant.recognition(record.event())
        if self._unmarked and time.monotonic() >= self._retry_mark_at:
            # acknowledged events are not published again while marking them fails (a full disk): they are
            # left out of the window until the mark is written (or the agent restarts: at-least-once), and
            # the window goes on with the rest (events not stored wait behind them)
            try:
                self.delivered += self.store.mark_delivered(list(self._unmarked))
                self._unmarked.clear()
            except (StoreError, sqlite3.Error) as exc:
                self._retry_mark_at = time.monotonic() + REJECT_BACKOFF
                self._log_errors.log(logging.ERROR, "publisher: %s; retrying in %.0f s", exc, REJECT_BACKOFF)

    def _expire_old(self, now: float) -> None:
        """Pending events older than [mqtt] max_event_age become expired instead of being published late."""
        max_age = self.cfg.mqtt.max_event_age
        if max_age <= 0 or now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRE_EVERY
        busy = [e.record.event_id for e in self._inflight.values()]
        n = self.store.expire_pending(time.time() - max_age, exclude=busy)
        if n:
            self.expired += n
            log.warning("%d events older than [mqtt] max_event_age (%g s) were not published: too late for "
                        "automations; they stay in the event log as expired (face-agent events "
                        "--resend-expired publishes them anyway)", n, max_age)

    def _fill_window(self) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        busy = {e.record.event_id for e in self._inflight.values()} | self._unmarked
        records = self.store.pending(room, exclude=busy)
        while len(records) < room and self._memory:
            records.append(self._memory.popleft())
        for n, record in enumerate(records):
            info = self.client.publish(self.topic, record.payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                log.warning("publish of event %s failed: rc %s; will retry", record.event_id, info.rc)
                self._memory.extendleft(reversed([r for r in records[n:] if r.seq < 0]))
                break
            # NO_CONN: the connection dropped just now; paho resends it on reconnect and its PUBACK
            # still marks it delivered (or the ack timeout publishes it again)
            self._inflight[info.mid] = _InFlight(record, info.mid, time.monotonic())
            self.published += 1
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._memory.extendleft(reversed([r for r in records[n + 1:] if r.seq < 0]))
                break

    def _publish_stats(self) -> None:
        self._next_stats = time.monotonic() + self.cfg.mqtt.stats_interval
        stats: dict[str, Any] = {}
        if self.stats_fn is not None:
            try:
                stats.update(self.stats_fn() or {})
            except Exception:
                log.exception("stats callback failed")
        stats.update({
            "agent_id": self.cfg.agent.id,
            "timestamp": format_timestamp(),
            "outbox": {**self.store.counts(), "inflight": len(self._inflight)},
            "mqtt": {"protocol": self.client.protocol, "reconnects": self.client.reconnects,
                     "published": self.published, "delivered": self.delivered,
                     "not_stored": {"delivered": self.delivered_unstored, "waiting": len(self._memory),
                                    "dropped": self.dropped_unstored}},
        })
        try:
            payload = json.dumps(stats, separators=(",", ":"), default=str)
        except (TypeError, ValueError) as exc:
            log.error("stats are not JSON serialisable: %s", exc)
            return
        self.client.publish(self.stats_topic, payload, qos=0)
