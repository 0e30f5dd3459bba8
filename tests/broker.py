"""Test helpers around a REAL mosquitto broker: start/stop/restart on one port and data folder, optional
password file + ACL, a subscriber that collects messages, and a proxy that plays an MQTT 3.1.1-only
broker (refuses v5 CONNECTs like mosquitto 1.5 did, forwards everything else to a real mosquitto)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mqtt_ping(host: str, port: int, timeout: float = 2.0, username: str | None = None,
              password: str | None = None) -> bool:
    """True if a real MQTT connect succeeds (CONNACK accepted) within `timeout`."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ping-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    ok = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: ok.set() if not rc.is_failure else None
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return ok.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


class Broker:
    """A mosquitto process on 127.0.0.1:<port> with its config, data and log in `folder`."""

    def __init__(self, folder: Path, port: int | None = None, users: dict[str, str] | None = None,
                 acl: str | None = None, extra_conf: str = "") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.users = users or {}
        self.data_dir = self.folder / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.conf_path = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 1",
            "user root",  # as root mosquitto would otherwise switch to the mosquitto user and fail to persist
            f"log_dest file {self.log_path}",
            "log_type all",
            "max_queued_messages 100000",
        ]
        if self.users:
            pw = self.folder / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               capture_output=True)
            lines.append(f"password_file {pw}")
        if acl is not None:
            acl_path = self.folder / "acl"
            acl_path.write_text(acl)
            lines.append(f"acl_file {acl_path}")
        self.conf_path.write_text("\n".join(lines) + "\n" + extra_conf)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until a real MQTT connect succeeds."""
        if self.running:
            return self
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        user, password = next(iter(self.users.items()), (None, None))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log()}")
            if mqtt_ping(self.host, self.port, timeout=1.0, username=user, password=password):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto on port {self.port} not ready after {timeout} s\n{self.log()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop by PID: TERM (mosquitto saves its persistence file), then KILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    properties: object = None  # MQTT v5 properties (CorrelationData, ResponseTopic, ...)
    time: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return self.payload.decode()


class Collector:
    """A subscriber (persistent MQTT v5 session, QoS 1) that keeps every message it receives and
    reconnects by itself when the broker comes back."""

    def __init__(self, broker: Broker, topics: str | list[str], client_id: str | None = None,
                 username: str | None = None, password: str | None = None, persistent: bool = True) -> None:
        self.broker = broker
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.persistent = persistent
        client_id = client_id or f"collector-{uuid.uuid4().hex[:8]}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            return
        self.connected.set()
        for t in self.topics:
            client.subscribe(t, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos,
                                         getattr(msg, "properties", None)))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> Collector:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self.persistent else 0
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10,
                                  clean_start=not self.persistent, properties=props)
        self.client.loop_start()
        if self.broker.running:
            assert self.subscribed.wait(timeout), "collector did not subscribe"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if paho.topic_matches_sub(topic, m.topic)]

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:
        """Wait until predicate(messages) is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.messages)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def wait_count(self, topic: str, n: int, timeout: float = 15.0) -> list[Message]:
        self.wait_for(lambda msgs: sum(paho.topic_matches_sub(topic, m.topic) for m in msgs) >= n, timeout)
        return self.on(topic)


class V311OnlyProxy:
    """A TCP proxy in front of a real broker that refuses MQTT v5 CONNECTs with the 3.1.1 CONNACK
    'unacceptable protocol version' (0x20 0x02 0x00 0x01), as brokers without v5 support do."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.host = "127.0.0.1"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.refused_v5 = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> V311OnlyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_packet(conn: socket.socket) -> tuple[bytes, bytes]:
        head = conn.recv(1)
        length, mult, raw = 0, 1, b""
        while True:
            b = conn.recv(1)
            raw += b
            length += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                break
            body += chunk
        return head + raw + body, body

    def _handle(self, conn: socket.socket) -> None:
        try:
            packet, body = self._read_packet(conn)
            level = body[6] if len(body) > 6 else 0  # 00 04 'MQTT' <level>
            if level == 5:
                self.refused_v5 += 1
                conn.sendall(bytes([0x20, 0x02, 0x00, 0x01]))
                conn.close()
                return
            upstream = socket.create_connection((self.broker.host, self.broker.port))
            upstream.sendall(packet)
            pair = {conn: upstream, upstream: conn}
            while True:
                ready, _, _ = select.select(list(pair), [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        for x in pair:
                            x.close()
                        return
                    pair[s].sendall(data)
        except (OSError, IndexError):
            conn.close()


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stop_leftovers(monkeypatch):
    """Stop every Publisher, MqttClient and Collector a test started, even when it failed half-way, so
    no client keeps retrying in the background of later tests."""
    from agent.sync.mqtt import MqttClient
    from agent.sync.publisher import Publisher

    started: list = []
    for cls in (Publisher, MqttClient, Collector):
        original = cls.start

        def start(self, *a, _original=original, **kw):
            started.append(self)
            return _original(self, *a, **kw)

        monkeypatch.setattr(cls, "start", start)
    yield
    for obj in reversed(started):
        with contextlib.suppress(Exception):  # already stopped, or never connected
            obj.stop()
