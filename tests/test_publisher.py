"""Outbox -> real mosquitto: delivery, outages, a killed agent process, status/Last Will, bad settings."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from broker import Collector, V311OnlyProxy, mqtt_ping, stop_leftovers  # noqa: F401 (fixture)
from conftest import ROOT, make_config, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import ConfigError
from agent.events import EventFactory
from agent.store import EventStore
from agent.sync.mqtt import MqttClient, MqttConfigError
from agent.sync.publisher import Publisher

AGENT = "edge-1"
FAST = {"reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5, "stats_interval": 0.5, "keepalive": 5}


pytestmark = pytest.mark.usefixtures("stop_leftovers")


def config(tmp_path: Path, broker, **mqtt):
    return make_config(tmp_path, agent={"id": AGENT, "camera_name": "door"},
                       mqtt={"host": "127.0.0.1", "port": broker.port, **FAST, **mqtt})


def add_events(store: EventStore, cfg, n: int, start: int = 0) -> list:
    f = EventFactory.from_config(cfg)
    events = [f.identified(start + i, "alice", 0.9, 3, (0, 0, 10, 10), (100, 100)) for i in range(n)]
    for e in events:
        store.add(e)
    return events


def event_ids(collector: Collector) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in collector.on("faces/events")]


def subscriber_session(broker, topics="faces/#") -> Collector:
    """A persistent subscriber registered on the broker, then disconnected: the broker queues for it."""
    col = Collector(broker, topics, client_id="test-sub").start()
    col.stop()
    return col


def test_delivers_events_exactly_as_logged_with_stats_and_status(tmp_path, mosquitto):
    col = Collector(mosquitto, "faces/#").start()
    cfg = config(tmp_path, mosquitto)
    store = EventStore(cfg)
    pub = Publisher(cfg, store, stats_fn=lambda: {"fps": 12.5, "latency_ms": {"detect": 40.0}, "tracks": 1})
    pub.start()
    events = add_events(store, cfg, 30)
    msgs = col.wait_count("faces/events", 30)
    assert [json.loads(m.payload)["event_id"] for m in msgs] == [e.event_id for e in events]  # in order
    for m, e in zip(msgs, events, strict=True):
        assert m.payload.decode() == store.get(e.event_id).payload == e.to_json()
        assert m.qos == 1
    assert wait_for(lambda: store.counts()["pending"] == 0)
    stats = col.wait_count(f"faces/{AGENT}/stats", 1)
    s = json.loads(stats[0].payload)
    assert s["fps"] == 12.5 and s["latency_ms"] == {"detect": 40.0} and s["tracks"] == 1
    assert s["agent_id"] == AGENT and "pending" in s["outbox"] and s["mqtt"]["protocol"] == "v5"
    assert [m.text for m in col.on(f"faces/{AGENT}/status")] == ["online"]
    assert pub.stop() == 0
    assert col.wait_for(lambda msgs: [m.payload for m in msgs if m.topic.endswith("/status")][-1] == b"offline")
    col.stop()
    # both status messages are retained: a late subscriber sees the last one
    late = Collector(mosquitto, f"faces/{AGENT}/status").start()
    got = late.wait_count(f"faces/{AGENT}/status", 1)
    assert got[0].text == "offline" and got[0].retain
    late.stop()


def test_broker_down_at_start_then_outage_mid_run_loses_nothing(tmp_path, mosquitto, caplog):
    subscriber_session(mosquitto)
    mosquitto.stop()
    cfg = config(tmp_path, mosquitto)
    store = EventStore(cfg)
    pub = Publisher(cfg, store)
    with caplog.at_level(logging.WARNING, logger="agent.sync.mqtt"):
        pub.start()
        first = add_events(store, cfg, 20)
        assert wait_for(lambda: "cannot reach broker" in caplog.text)  # a failed connect, retried
    assert not pub.connected and store.counts()["pending"] == 20
    assert "cannot reach broker" in caplog.text  # retried with backoff, logged
    mosquitto.start()
    col = Collector(mosquitto, "faces/#", client_id="test-sub").start()
    assert col.wait_for(lambda m: len(event_ids(col)) >= 20)
    assert set(event_ids(col)) == {e.event_id for e in first}
    assert wait_for(lambda: store.counts()["pending"] == 0)
    # outage in the middle of a run: events logged while the broker is gone arrive after it returns
    mosquitto.stop()
    assert wait_for(lambda: not pub.connected)
    second = add_events(store, cfg, 25, start=100)
    time.sleep(0.5)
    assert store.counts()["pending"] == 25
    mosquitto.start()
    everything = {e.event_id for e in first + second}
    assert col.wait_for(lambda m: set(event_ids(col)) >= everything, timeout=20)
    assert set(event_ids(col)) == everything  # none lost (duplicates would be allowed, none expected here)
    assert wait_for(lambda: store.counts() == {"pending": 0, "delivered": 45, "expired": 0, "total": 45})
    assert pub.client.reconnects >= 1
    pub.stop()
    col.stop()


AGENT_SCRIPT = """
import sys, time
from agent.config import load_config
from agent.events import EventFactory
from agent.store import EventStore
from agent.sync.publisher import Publisher

cfg = load_config(sys.argv[1])
store = EventStore(cfg)
publisher = Publisher(cfg, store)
publisher.start()
factory = EventFactory.from_config(cfg)
for i in range(int(sys.argv[2])):
    store.add(factory.identified(i, "alice", 0.9, 3, (0, 0, 10, 10), (100, 100)))
print("LOGGED", flush=True)
while True:
    time.sleep(0.1)
"""


def start_agent(tmp_path: Path, cfg_path: Path, n: int) -> subprocess.Popen:
    script = tmp_path / "agent_script.py"
    script.write_text(AGENT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_path), str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    line = proc.stdout.readline().decode().strip()
    if line != "LOGGED":
        proc.kill()
        raise AssertionError(f"agent script failed: {line}\n{proc.stderr.read().decode()}")
    return proc


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def test_agent_killed_while_broker_down_publishes_everything_on_restart(tmp_path, mosquitto):
    subscriber_session(mosquitto)
    mosquitto.stop()
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(f"""
[agent]
id = "{AGENT}"
[paths]
storage = "agent-storage"
[mqtt]
port = {mosquitto.port}
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5
""")
    proc = start_agent(tmp_path, cfg_path, 25)
    time.sleep(0.3)
    sigkill(proc)  # no clean shutdown, no flush: the events exist only in events.db
    cfg = make_config(tmp_path, paths={"storage": "agent-storage"})
    store = EventStore(cfg)
    logged = [r.event_id for r in store.pending(100)]
    assert len(logged) == 25 and store.integrity_check() == []

    mosquitto.start()
    col = Collector(mosquitto, "faces/#", client_id="test-sub").start()
    proc = start_agent(tmp_path, cfg_path, 0)  # a new process over the same database
    try:
        assert col.wait_for(lambda m: set(event_ids(col)) >= set(logged), timeout=20)
        assert wait_for(lambda: store.counts()["pending"] == 0)
        assert sorted(set(event_ids(col))) == sorted(logged)
        payloads = {json.loads(m.payload)["event_id"]: m.payload.decode() for m in col.on("faces/events")}
        assert all(payloads[eid] == store.get(eid).payload for eid in logged)  # exactly as logged
        assert col.wait_for(lambda m: any(x.text == "online" for x in col.on(f"faces/{AGENT}/status")))
        sigkill(proc)  # the broker publishes the Last Will
        assert col.wait_for(lambda m: col.on(f"faces/{AGENT}/status")[-1].text == "offline", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    late = Collector(mosquitto, f"faces/{AGENT}/status").start()
    got = late.wait_count(f"faces/{AGENT}/status", 1)
    assert got[0].text == "offline" and got[0].retain
    late.stop()
    col.stop()
    store.close()


def test_flush_on_shutdown_and_bounded_window(tmp_path, mosquitto):
    col = Collector(mosquitto, "faces/events").start()
    cfg = config(tmp_path, mosquitto, max_inflight=3)
    store = EventStore(cfg)
    add_events(store, cfg, 200)  # a backlog before the publisher starts
    pub = Publisher(cfg, store)
    peak = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(pub.inflight)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    pub.start()
    assert pub.client.wait_connected(10)
    assert pub.stop(timeout=20) == 0  # the clean shutdown drained the whole backlog
    stop.set()
    sampler.join()
    assert max(peak) <= 3
    col.wait_count("faces/events", 200)
    assert len(set(event_ids(col))) == 200
    col.stop()


def test_protocol_v311_and_fallback_from_v5(tmp_path, mosquitto, caplog):
    # configured 3.1.1
    col = Collector(mosquitto, "faces/events").start()
    cfg = config(tmp_path, mosquitto, protocol="v311")
    store = EventStore(cfg)
    pub = Publisher(cfg, store)
    pub.start()
    add_events(store, cfg, 5)
    assert len(col.wait_count("faces/events", 5)) == 5
    assert pub.client.protocol == "v311"
    pub.stop()
    # a broker that refuses v5: the client falls back to 3.1.1 by itself
    proxy = V311OnlyProxy(mosquitto).start()
    cfg2 = make_config(tmp_path / "b", agent={"id": "edge-2"},
                       mqtt={"port": proxy.port, **FAST})
    store2 = EventStore(cfg2)
    pub2 = Publisher(cfg2, store2)
    with caplog.at_level(logging.WARNING, logger="agent.sync.mqtt"):
        pub2.start()
        ids = {e.event_id for e in add_events(store2, cfg2, 5)}
        assert col.wait_for(lambda m: ids <= set(event_ids(col)))
    assert proxy.refused_v5 >= 1 and pub2.client.protocol == "v311"
    assert "refused MQTT v5; falling back to 3.1.1" in caplog.text
    assert wait_for(lambda: store2.counts()["pending"] == 0)
    pub2.stop()
    proxy.stop()
    col.stop()


def test_username_password_and_acl_refusal(tmp_path, mosquitto_factory, caplog):
    acl = "user agent\ntopic readwrite faces/+/status\ntopic readwrite faces/+/stats\n" \
          "user reader\ntopic read faces/#\n"
    broker = mosquitto_factory("auth", users={"agent": "s3cret", "reader": "r3ad"}, acl=acl).start()
    col = Collector(broker, "faces/#", username="reader", password="r3ad").start()
    # wrong password: refused, logged, retried
    bad = config(tmp_path / "bad", broker, username="agent", password="wrong")
    client = MqttClient(bad)
    with caplog.at_level(logging.ERROR, logger="agent.sync.mqtt"):
        client.start()
        assert not client.wait_connected(1.5)
    client.stop()
    assert "refused the connection" in caplog.text and "username/password" in caplog.text
    # right password, but the ACL does not allow faces/events: the v5 PUBACK says "not authorized",
    # so the event must stay pending (never marked delivered on a refusal)
    cfg = config(tmp_path, broker, username="agent", password="s3cret")
    store = EventStore(cfg)
    pub = Publisher(cfg, store)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="agent.sync.publisher"):
        pub.start()
        assert pub.client.wait_connected(10)
        add_events(store, cfg, 2)
        assert wait_for(lambda: "broker refused event" in caplog.text, timeout=10)
    assert store.counts()["pending"] == 2
    assert col.wait_for(lambda m: any(x.text == "online" for x in col.on(f"faces/{AGENT}/status")))
    assert not col.on("faces/events")
    assert pub.stop(timeout=0.5) == 2
    col.stop()


def test_unreachable_broker_retries_and_keeps_events(tmp_path, caplog):
    from broker import free_port

    port = free_port()  # nothing listens here
    cfg = make_config(tmp_path, agent={"id": AGENT}, mqtt={"port": port, **FAST})
    store = EventStore(cfg)
    pub = Publisher(cfg, store)
    with caplog.at_level(logging.WARNING, logger="agent.sync.mqtt"):
        pub.start()  # returns at once
        add_events(store, cfg, 3)
        assert wait_for(lambda: "cannot reach broker" in caplog.text)
    assert not pub.connected
    assert f"cannot reach broker 127.0.0.1:{port}" in caplog.text
    first = [r.getMessage() for r in caplog.records if "cannot reach broker" in r.getMessage()][0]
    assert "apt install mosquitto" in first and "[mqtt] enabled = false" in first, first  # what to do
    assert pub.stop(timeout=0.5) == 3  # nothing lost: still pending for the next start
    assert pub.error is None


def test_bad_tls_files_fail_clearly_at_start(tmp_path, mosquitto):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    cfg = config(tmp_path, mosquitto, tls=True, ca_file=str(garbage))
    client = MqttClient(cfg)
    with pytest.raises(MqttConfigError, match=r"TLS files \(ca_file=.*ca.pem\) cannot be loaded"):
        client.start()
    with pytest.raises(ConfigError, match="mqtt.cert_file: .*missing.pem does not exist"):
        config(tmp_path, mosquitto, tls=True, cert_file=str(tmp_path / "missing.pem"))
    pub = Publisher(cfg, EventStore(cfg))
    with pytest.raises(MqttConfigError):
        pub.start()


def test_tls_with_a_real_certificate(tmp_path, mosquitto_factory):
    """A TLS listener with a self-made CA (openssl): the agent verifies the broker and delivers."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    ca_key, ca, key, csr, crt = (tmp_path / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))
    from broker import free_port

    tls_port = free_port()
    broker = mosquitto_factory("tls", extra_conf=f"listener {tls_port} 127.0.0.1\ncafile {ca}\n"
                                                 f"certfile {crt}\nkeyfile {key}\n").start()
    col = Collector(broker, "faces/events").start()  # plain listener
    cfg = make_config(tmp_path, agent={"id": AGENT},
                      mqtt={"port": tls_port, "tls": True, "ca_file": str(ca), **FAST})
    store = EventStore(cfg)
    pub = Publisher(cfg, store)
    pub.start()
    assert pub.client.wait_connected(10), broker.log()
    add_events(store, cfg, 3)
    assert len(col.wait_count("faces/events", 3)) == 3
    pub.stop()
    col.stop()


def test_subscribe_helper_resubscribes_after_broker_restart(tmp_path, mosquitto):
    cfg = config(tmp_path, mosquitto)
    client = MqttClient(cfg)
    got: list[bytes] = []
    client.subscribe("faces/edge-1/enroll/#", lambda msg: got.append(msg.payload))
    client.start()
    assert client.wait_connected(10)
    sender = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)

    def send_until_received(payload: bytes) -> bool:
        """Publish until it arrives (the SUBSCRIBE may still be on its way); True once received."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            sender.connect(mosquitto.host, mosquitto.port)
            sender.loop_start()
            sender.publish("faces/edge-1/enroll/req", payload, qos=1).wait_for_publish(5)
            sender.disconnect()
            sender.loop_stop()
            if wait_for(lambda: payload in got, timeout=1.0):
                return True
        return False

    try:
        assert send_until_received(b"one")
        mosquitto.stop()
        for f in mosquitto.data_dir.iterdir():  # the broker forgets every session and subscription
            f.unlink()
        assert wait_for(lambda: not client.connected)
        mosquitto.start()
        assert wait_for(lambda: client.connected, timeout=10)
        assert send_until_received(b"two")  # only works because the client subscribed again
        assert set(got) == {b"one", b"two"}
    finally:
        client.stop()
    assert mqtt_ping(mosquitto.host, mosquitto.port)


def test_mqtt_disabled_keeps_events_and_leaves_retention_to_the_stores(tmp_path):
    """With MQTT off the publisher has nothing to do: no thread, the events stay in the log, old ones too
    (retention is the stores', on the service's timer: tests/test_retention.py)."""
    cfg = make_config(tmp_path, mqtt={"enabled": False}, store={"retention_days": 1})
    store = EventStore(cfg)
    old = add_events(store, cfg, 2)
    store.conn.execute("UPDATE events SET t = t - 3 * 86400")  # make them old
    store.conn.commit()
    pub = Publisher(cfg, store)
    assert pub.client is None
    pub.start()
    add_events(store, cfg, 3, start=10)
    assert pub._thread is None and store.count() == 5 and store.get(old[0].event_id) is not None
    assert pub.stop() == 0 and pub.error is None  # nothing is waiting to be published


def test_client_publish_with_v5_properties_and_wait(tmp_path, mosquitto):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    col = Collector(mosquitto, "faces/edge-1/replies").start()
    client = MqttClient(config(tmp_path, mosquitto))
    client.start()
    assert client.wait_connected(10)
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = b"req-42"
    info = client.publish("faces/edge-1/replies", b"done", qos=1, properties=props)
    assert client.wait_published(info, 5)
    got = col.wait_count("faces/edge-1/replies", 1)
    assert got[0].payload == b"done" and got[0].properties.CorrelationData == b"req-42"
    client.stop()
    # not connected: rc says so, nothing to wait for
    info = client.publish("faces/edge-1/replies", b"late")
    assert info.rc != 0 and not client.wait_published(info, 0.1)
    col.stop()


def test_events_too_old_are_not_published_late_but_kept_and_can_be_resent(tmp_path, mosquitto, caplog):
    """MQTT was off (or the broker down) for days: when a broker comes, events older than [mqtt]
    max_event_age are not sent (automations would fire on stale arrivals); they stay in the log as expired,
    counted in the stats, and `face-agent events --resend-expired` sends them anyway."""
    cfg = config(tmp_path, mosquitto, max_event_age=3600.0)
    store = EventStore(cfg)
    events = add_events(store, cfg, 5)
    old = [e.event_id for e in events[:3]]
    two_hours_ago = time.time() - 7200
    with store.conn as conn:  # three of them happened (and were queued) two hours ago
        conn.execute(f"UPDATE events SET t = ?, created = ? WHERE event_id IN ({', '.join('?' * 3)})",
                     (two_hours_ago, two_hours_ago, *old))
    col = Collector(mosquitto, "faces/#").start()
    pub = Publisher(cfg, store, lambda: {})
    with caplog.at_level(logging.WARNING, logger="agent.sync.publisher"):
        pub.start()
        assert col.wait_for(lambda m: len(event_ids(col)) >= 2)
        assert wait_for(lambda: store.counts()["pending"] == 0)
        assert col.wait_for(lambda m: any(json.loads(x.payload).get("outbox", {}).get("expired") == 3
                                          for x in col.on(f"faces/{AGENT}/stats")))
    assert sorted(event_ids(col)) == sorted(e.event_id for e in events[3:])
    assert store.counts() == {"pending": 0, "delivered": 2, "expired": 3, "total": 5}
    assert pub.expired == 3
    assert "3 events older than [mqtt] max_event_age (3600 s) were not published" in caplog.text
    assert "--resend-expired" in caplog.text

    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text('[paths]\nstorage = "storage"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg_path), "events", "--expired"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert listed.stdout.count(" expired ") == 3 and "3 event(s)" in listed.stdout, listed.stdout + listed.stderr
    resend = subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg_path), "events", "--resend-expired"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert resend.returncode == 0 and "3 expired event(s) made pending" in resend.stdout, resend.stderr
    pub.wake()  # the running publisher sends them now, however old
    assert col.wait_for(lambda m: set(event_ids(col)) >= {e.event_id for e in events}, timeout=20)
    assert wait_for(lambda: store.counts()["delivered"] == 5)
    pub.stop()
    col.stop()
    store.close()
