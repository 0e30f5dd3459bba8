"""One MQTT client for the agent (paho-mqtt 2.x), configured from `[mqtt]`.

- MQTT v5 with a persistent session (clean_start = false, SessionExpiryInterval = [mqtt] session_expiry);
  when the broker refuses v5 (CONNACK "unsupported protocol version") or `protocol = "v311"`, MQTT 3.1.1
  with clean_session = false.
- Never blocks on the network: `start()` returns at once, paho's network thread connects and reconnects
  with a doubling backoff between [mqtt] reconnect_min_delay and reconnect_max_delay, and logs failures.
- Status: Last Will `offline` (retained, QoS 1) on `<prefix>/<agent_id>/status`, `online` (retained) on
  every connect, `offline` on a clean `stop()`.
- `subscribe(topic, callback)` is remembered and repeated on every (re)connect; callbacks run in paho's
  network thread and must return quickly.
- Known trap: publishing while disconnected returns MQTT_ERR_NO_CONN and paho keeps QoS >= 1 messages
  only in memory. So the SQLite outbox is the source of truth: the publisher publishes only while
  `connected`, and marks an event delivered only on its PUBACK (`add_publish_listener`).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import Config, ConfigError
from agent.topics import Topics

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
UNSUPPORTED_PROTOCOL = 132  # CONNACK reason (paho maps a 3.1.1 broker's "refused: protocol version" to it)
CONNECT_TIMEOUT = 10.0  # seconds for the TCP/TLS connect of one attempt


class MqttConfigError(ConfigError):
    """The [mqtt] settings cannot work (e.g. an unreadable TLS file); raised by `MqttClient.start()`."""


MessageCallback = Callable[[paho.MQTTMessage], None]


def _adapt(callback: MessageCallback) -> Callable[[paho.Client, Any, paho.MQTTMessage], None]:
    def on_message(_client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            callback(message)
        except Exception:  # one bad message must not kill the network thread
            log.exception("MQTT: handler for %s failed", message.topic)
    return on_message


def paho_client(cfg: Config, client_id: str, protocol: str, persistent: bool = False,
                username: str | None = None, password: str | None = None) -> paho.Client:
    """A paho client (callback API 2) set up from `[mqtt]`: the protocol ("v5" or "v311"; `persistent`: a 3.1.1
    session the broker keeps, clean_session = false; v5 asks for it at connect), the credentials (`username`,
    `password` override [mqtt]'s when not None) and TLS. The agent's MqttClient and the operator's `face-agent
    remote` build theirs here. MqttConfigError when the TLS files cannot be loaded."""
    m = cfg.mqtt
    if protocol == "v5":
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                             clean_session=not persistent)
    username = m.username if username is None else username
    password = m.password if password is None else password
    if username:
        client.username_pw_set(username, password or None)
    if m.tls:
        # the files were checked when the config loaded (agent.config): present, key_file with cert_file
        files = {key: str(cfg.resolve(getattr(m, key))) if getattr(m, key) else None
                 for key in ("ca_file", "cert_file", "key_file")}
        try:
            client.tls_set(ca_certs=files["ca_file"], certfile=files["cert_file"], keyfile=files["key_file"],
                           cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError, ValueError) as exc:
            named = ", ".join(f"{k}={v}" for k, v in files.items() if v)
            raise MqttConfigError(f"mqtt TLS files ({named or 'system CAs'}) cannot be loaded: {exc}") from None
    return client


class MqttClient:
    """The agent's connection to the broker; thread-safe `publish`, `subscribe`, state and listeners."""

    def __init__(self, cfg: Config, client_id: str | None = None) -> None:
        m = cfg.mqtt
        self.cfg = cfg
        self.settings = m
        self.agent_id = cfg.agent.id
        self.client_id = client_id or f"face-agent-{self.agent_id}"
        self.status_topic = Topics.of(cfg).status
        self.protocol = "v311" if m.protocol == "v311" else "v5"
        self.reconnects = 0  # successful connects after the first
        self.connects = 0
        self._connected = threading.Event()
        self._lock = threading.RLock()
        self._subscriptions: dict[str, tuple[int, MessageCallback]] = {}
        self._connect_listeners: list[Callable[[bool], None]] = []
        self._disconnect_listeners: list[Callable[[], None]] = []
        self._publish_listeners: list[Callable[[int, Any], None]] = []
        self._client: paho.Client | None = None
        self._started = False
        self._stopping = False
        self._failures = 0  # connect attempts that failed since the last success
        self.generation = 0  # bumps when the paho client is replaced (v5 -> 3.1.1): old message ids are void

    # ------------------------------------------------------------------------------------------ setup

    def _build(self) -> paho.Client:
        m = self.settings
        client = paho_client(self.cfg, self.client_id, self.protocol, persistent=True)
        if log.isEnabledFor(logging.DEBUG):  # paho's own messages are noisy during outages: debug only
            client.enable_logger(logging.getLogger(__name__ + ".paho"))
        client.connect_timeout = CONNECT_TIMEOUT
        client.reconnect_delay_set(min_delay=m.reconnect_min_delay, max_delay=m.reconnect_max_delay)
        client.max_inflight_messages_set(m.max_inflight)
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        for topic, (_qos, callback) in self._subscriptions.items():
            client.message_callback_add(topic, _adapt(callback))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect_async(self, client: paho.Client) -> None:
        m = self.settings
        if self.protocol == "v5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = max(0, int(m.session_expiry))
            client.connect_async(m.host, m.port, keepalive=m.keepalive, clean_start=False, properties=props)
        else:
            client.connect_async(m.host, m.port, keepalive=m.keepalive)
        client.loop_start()

    def start(self) -> None:
        """Validate the settings (MqttConfigError) and start connecting in the background."""
        with self._lock:
            if self._started:
                return
            self._client = self._build()
            self._started = True
            self._stopping = False
            log.info("MQTT: connecting to %s:%d as %s (MQTT %s)", self.settings.host, self.settings.port,
                     self.client_id, self.protocol)
            self._connect_async(self._client)

    def stop(self, timeout: float = 2.0) -> None:
        """Publish `offline` (retained), disconnect cleanly (no Last Will) and stop the network thread."""
        with self._lock:
            client, self._client = self._client, None
            if not self._started or client is None:
                return
            self._stopping = True
            self._started = False
        if self._connected.is_set():
            info = client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:  # connection lost meanwhile
                log.debug("MQTT: offline status not confirmed: %s", exc)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        log.info("MQTT: disconnected from %s:%d", self.settings.host, self.settings.port)

    def _switch_to_v311(self, old: paho.Client) -> None:
        """The broker refused MQTT v5: replace the client by a 3.1.1 one (persistent session)."""
        old.loop_stop()
        with self._lock:
            if self._client is not old or self._stopping:
                return
            self.protocol = "v311"
            self.generation += 1
            self._client = self._build()
            self._connect_async(self._client)

    # ------------------------------------------------------------------------------------------ callbacks

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._failures += 1
            if reason.value == UNSUPPORTED_PROTOCOL and self.protocol == "v5":
                log.warning("MQTT: broker %s:%d refused MQTT v5; falling back to 3.1.1 "
                            "(set [mqtt] protocol = \"v311\" to skip this)", self.settings.host, self.settings.port)
                threading.Thread(target=self._switch_to_v311, args=(client,), name="mqtt-fallback",
                                 daemon=True).start()
                return
            hint = " (check [mqtt] username/password)" if reason.value in (134, 135, 4, 5) else ""
            log.error("MQTT: broker %s:%d refused the connection: %s%s; retrying", self.settings.host,
                      self.settings.port, reason, hint)
            return
        session_present = bool(getattr(flags, "session_present", False))
        self._failures = 0
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        log.info("MQTT: connected to %s:%d (MQTT %s, session %s)", self.settings.host, self.settings.port,
                 self.protocol, "resumed" if session_present else "new")
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        with self._lock:
            subs = list(self._subscriptions.items())
        for topic, (qos, _cb) in subs:
            client.subscribe(topic, qos=qos)
        self._connected.set()
        for fn in list(self._connect_listeners):
            try:
                fn(session_present)
            except Exception:
                log.exception("MQTT connect listener %r failed", fn)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._failures += 1
        n = self._failures
        if n == 1 or n % 10 == 0:  # first failure and then every tenth: no log flood during long outages
            hint = ("; events are kept in the event log and published once it answers. No broker yet? Start one "
                    "(Debian: apt install mosquitto) or set [mqtt] enabled = false in agent.toml") if n == 1 else ""
            log.warning("MQTT: cannot reach broker %s:%d (attempt %d); retrying with backoff up to %g s%s",
                        self.settings.host, self.settings.port, n, self.settings.reconnect_max_delay, hint)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            log.warning("MQTT: connection to %s:%d lost (%s); reconnecting", self.settings.host,
                        self.settings.port, reason)
        for fn in list(self._disconnect_listeners):
            try:
                fn()
            except Exception:
                log.exception("MQTT disconnect listener %r failed", fn)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        for fn in list(self._publish_listeners):
            try:
                fn(mid, reason)
            except Exception:
                log.exception("MQTT publish listener %r failed", fn)

    # ------------------------------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def add_connect_listener(self, fn: Callable[[bool], None]) -> None:
        """`fn(session_present)` after every successful connect (network thread)."""
        self._connect_listeners.append(fn)

    def add_disconnect_listener(self, fn: Callable[[], None]) -> None:
        self._disconnect_listeners.append(fn)

    def add_publish_listener(self, fn: Callable[[int, Any], None]) -> None:
        """`fn(mid, reason_code)` when the broker acknowledged a message (PUBACK for QoS 1); network thread.

        A failure reason (`reason_code.is_failure`, MQTT v5 only) means the broker refused the message."""
        self._publish_listeners.append(fn)

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False,
                properties: Properties | None = None) -> paho.MQTTMessageInfo:
        """Publish; check `info.rc` (MQTT_ERR_NO_CONN when not connected) and wait with `info.mid` +
        a publish listener, or `wait_published(info, timeout)`. `properties` (MQTT v5 PUBLISH properties,
        e.g. CorrelationData) are dropped when connected with 3.1.1."""
        with self._lock:
            client = self._client
            v5 = self.protocol == "v5"
        if client is None:
            info = paho.MQTTMessageInfo(0)
            info.rc = MQTTErrorCode.MQTT_ERR_NO_CONN
            return info
        return client.publish(topic, payload, qos=qos, retain=retain, properties=properties if v5 else None)

    def subscribe(self, topic: str, callback: MessageCallback, qos: int = 1) -> None:
        """Subscribe now (if connected) and again after every reconnect; `callback(message)`."""
        with self._lock:
            self._subscriptions[topic] = (qos, callback)
            client = self._client
        if client is not None:
            client.message_callback_add(topic, _adapt(callback))
            if self.connected:
                client.subscribe(topic, qos=qos)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._subscriptions.pop(topic, None)
            client = self._client
        if client is not None:
            client.message_callback_remove(topic)
            if self.connected:
                client.unsubscribe(topic)

    def wait_published(self, info: paho.MQTTMessageInfo, timeout: float) -> bool:
        """True once the broker acknowledged `info` (QoS >= 1) within `timeout` seconds."""
        return wait_published(info, timeout)


def wait_published(info: paho.MQTTMessageInfo, timeout: float) -> bool:
    """True once the broker acknowledged `info` (QoS >= 1) within `timeout` seconds (paho's
    `wait_for_publish`); False when it did not, or the message was never sent (not connected, queue full)."""
    try:
        info.wait_for_publish(timeout)
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
