"""Home Assistant MQTT discovery against a real mosquitto: configs, re-announce, entity updates."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest
from broker import Collector, stop_leftovers  # noqa: F401 (fixture)
from conftest import make_config
from paho.mqtt.enums import CallbackAPIVersion

from agent.events import EventFactory, format_timestamp
from agent.store import EventStore
from agent.sync.publisher import Publisher

AGENT = "porch-cam"
EVENT_CFG = "homeassistant/event/face_agent_porch-cam/recognition/config"
SENSOR_CFG = "homeassistant/sensor/face_agent_porch-cam/last_person/config"


pytestmark = pytest.mark.usefixtures("stop_leftovers")


def publish(broker, topic: str, payload: str, retain: bool = False) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_discovery_reannounce_and_entities(tmp_path, mosquitto):
    col = Collector(mosquitto, ["homeassistant/#", "faces/#"]).start()
    cfg = make_config(tmp_path, agent={"id": AGENT, "camera_name": "porch"},
                      mqtt={"port": mosquitto.port, "homeassistant": True, "reconnect_min_delay": 0.1,
                            "reconnect_max_delay": 0.5})
    store = EventStore(cfg)
    pub = Publisher(cfg, store)
    pub.start()
    event_cfg = json.loads(col.wait_count(EVENT_CFG, 1)[0].payload)
    sensor_cfg = json.loads(col.wait_count(SENSOR_CFG, 1)[0].payload)

    status = f"faces/{AGENT}/status"
    for c in (event_cfg, sensor_cfg):
        assert c["availability_topic"] == status
        assert c["payload_available"] == "online" and c["payload_not_available"] == "offline"
        assert c["device"]["identifiers"] == ["face_agent_porch-cam"]
        assert c["unique_id"].startswith("face_agent_porch-cam_")
    assert event_cfg["event_types"] == ["identified", "unknown_face"]
    assert event_cfg["unique_id"] != sensor_cfg["unique_id"]
    assert sensor_cfg["value_template"] == "{{ value_json.state }}"
    assert sensor_cfg["json_attributes_topic"] == sensor_cfg["state_topic"]

    # Home Assistant restarts and announces itself: the configs come again
    publish(mosquitto, "homeassistant/status", "online")
    assert len(col.wait_count(EVENT_CFG, 2)) == 2 and len(col.wait_count(SENSOR_CFG, 2)) == 2
    publish(mosquitto, "homeassistant/status", "offline")  # ignored

    f = EventFactory.from_config(cfg)
    store.add(f.track_started(1, (0, 0, 10, 10), (100, 100)))  # not a recognition: not mirrored
    store.add(f.identified(1, "alice", 0.93, 4, (0, 0, 10, 10), (100, 100)))
    store.add(f.unknown_face(2, 6, (0, 0, 10, 10), (100, 100)))
    stale = f.identified(3, "bob", 0.9, 3, (0, 0, 10, 10), (100, 100))
    stale.timestamp = format_timestamp(time.time() - 600)  # backlog after an outage
    store.add(stale)
    fired = col.wait_count(event_cfg["state_topic"], 2)
    assert col.wait_count("faces/events", 4)
    time.sleep(0.5)
    fired = [json.loads(m.payload) for m in col.on(event_cfg["state_topic"])]
    assert [(x["event_type"], x["name"]) for x in fired] == [("identified", "alice"), ("unknown_face", None)]
    assert fired[0]["confidence"] == 0.93 and fired[0]["camera"] == "porch" and fired[0]["event_id"]
    last = [json.loads(m.payload) for m in col.on(sensor_cfg["state_topic"])]
    # a stranger is a state of its own: "unknown" is Home Assistant's "no value"
    assert [(x["state"], x["name"], x["known"]) for x in last] == [("alice", "alice", True), ("stranger", None, False)]
    assert len(col.on(EVENT_CFG)) == 2  # 'offline' from Home Assistant did not re-announce
    pub.stop()
    col.stop()

    # retained: Home Assistant starting later still finds the device, and the last person seen
    late = Collector(mosquitto, "homeassistant/#").start()
    msgs = late.wait_count("homeassistant/+/face_agent_porch-cam/+/config", 2)
    assert all(m.retain for m in msgs)
    late.stop()
    late = Collector(mosquitto, sensor_cfg["state_topic"]).start()
    got = late.wait_count(sensor_cfg["state_topic"], 1)
    assert got[0].retain and json.loads(got[0].payload)["state"] == "stranger"
    late.stop()
