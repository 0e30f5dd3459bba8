"""Home Assistant MQTT discovery (`[mqtt] homeassistant = true`): the agent appears as one device with

- an `event` entity "Recognition" (event types `identified`, `unknown_face`) fired for each recognition,
  with the name, confidence, camera, track and event id as event attributes;
- a `sensor` "Last person" whose state is the last recognised name, or `stranger` for a face that is not
  enrolled (not `unknown`: that is Home Assistant's own "no value" state, so an automation could not tell a
  stranger at the door from a sensor without data), with the same details as attributes (`name` is null
  and `known` false for a stranger; `person_id` is the person's stable id, `unknown_id` a stranger's unknown
  person); when a person is renamed, the sensor is published again under the new name (on the agent's next
  classifier swap);
- availability from the agent's status topic (`online` / `offline`, Last Will).

With several cameras ([[sources]]) the device also gets, per camera, its own "Recognition <camera>" event
entity and "Last person <camera>" sensor (topics `.../ha/<camera slug>/...`) and a "Frame rate <camera>"
sensor read from the stats topic, so an automation can act on the door camera alone; the two agent-wide
entities still fire for every camera.

Discovery configs are retained on `<discovery_prefix>/<component>/<node_id>/<object_id>/config` and sent
again on every connect and whenever Home Assistant announces itself (`<discovery_prefix>/status` =
`online`). The entities read small per-agent topics (`<prefix>/<agent_id>/ha/...`) so Home Assistant never
sees other event types or other agents. Recognitions older than `[mqtt] homeassistant_max_age` (a
backlog drained after an outage) are not fired, so automations do not react to stale sightings.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from typing import Any

from agent import __version__
from agent.config import Config, camera_slug
from agent.events import UNKNOWN_FACE, Event
from agent.files import StorageError
from agent.people import People
from agent.sync.mqtt import OFFLINE, ONLINE, MqttClient
from agent.topics import Topics

log = logging.getLogger(__name__)

EVENT_TYPES = ["identified", "unknown_face"]
STRANGER = "stranger"  # the "Last person" state for a face that is not enrolled


class HomeAssistant:
    """Announces the agent to Home Assistant and mirrors recognitions to its entities."""

    def __init__(self, cfg: Config, client: MqttClient) -> None:
        self.client = client
        self.agent_id = cfg.agent.id
        self.camera = cfg.agent.camera_name
        self.max_age = cfg.mqtt.homeassistant_max_age
        self.topics = Topics.of(cfg)
        self.discovery_prefix = self.topics.discovery_prefix
        self.node_id = "face_agent_" + re.sub(r"[^A-Za-z0-9_-]", "_", self.agent_id)
        self.recognition_topic = f"{self.topics.ha_base}/recognition"
        self.last_person_topic = f"{self.topics.ha_base}/last_person"
        self.ha_status_topic = self.topics.ha_status
        names = [camera.name for camera in cfg.cameras()]
        # several cameras: entities per camera as well (camera name -> its slug in topics and ids)
        self.cameras = {name: camera_slug(name) for name in names} if len(names) > 1 else {}
        self.stats_topic = self.topics.stats
        self.storage = cfg.path("storage")
        self._last: dict[str | None, dict[str, Any]] = {}  # camera slug (None: agent-wide) -> last person
        self.announcements = 0

    def config_topic(self, component: str, object_id: str) -> str:
        return self.topics.ha_config(component, self.node_id, object_id)

    def discovery(self) -> dict[str, dict]:
        """Config topic -> discovery payload of each entity."""
        device = {"identifiers": [self.node_id], "name": f"Face agent {self.agent_id}",
                  "manufacturer": "face-agent", "model": "face-agent", "sw_version": __version__}
        common = {"availability_topic": self.client.status_topic, "payload_available": ONLINE,
                  "payload_not_available": OFFLINE, "device": device, "qos": 1,
                  "origin": {"name": "face-agent", "sw_version": __version__}}
        event = {"name": "Recognition", "unique_id": f"{self.node_id}_recognition",
                 "state_topic": self.recognition_topic, "event_types": EVENT_TYPES,
                 "icon": "mdi:face-recognition", **common}
        sensor = {"name": "Last person", "unique_id": f"{self.node_id}_last_person",
                  "state_topic": self.last_person_topic, "value_template": "{{ value_json.state }}",
                  "json_attributes_topic": self.last_person_topic, "icon": "mdi:account", **common}
        configs = {self.config_topic("event", "recognition"): event,
                   self.config_topic("sensor", "last_person"): sensor}
        for name, slug in self.cameras.items():
            configs[self.config_topic("event", f"recognition_{slug}")] = {
                **event, "name": f"Recognition {name}", "unique_id": f"{self.node_id}_recognition_{slug}",
                "state_topic": self._camera_topic(slug, "recognition")}
            topic = self._camera_topic(slug, "last_person")
            configs[self.config_topic("sensor", f"last_person_{slug}")] = {
                **sensor, "name": f"Last person {name}", "unique_id": f"{self.node_id}_last_person_{slug}",
                "state_topic": topic, "json_attributes_topic": topic}
            configs[self.config_topic("sensor", f"fps_{slug}")] = {
                "name": f"Frame rate {name}", "unique_id": f"{self.node_id}_fps_{slug}",
                "state_topic": self.stats_topic, "unit_of_measurement": "fps", "state_class": "measurement",
                "value_template": f"{{{{ value_json.cameras[{json.dumps(name)}].fps }}}}",
                "icon": "mdi:cctv", **common}
        return configs

    def _camera_topic(self, slug: str, entity: str) -> str:
        return f"{self.topics.ha_base}/{slug}/{entity}"

    def attach(self) -> None:
        """Announce on every connect and when Home Assistant comes online (call before client.start())."""
        self.client.add_connect_listener(lambda _session: self.announce())
        self.client.subscribe(self.ha_status_topic, self._on_ha_status, qos=1)

    def announce(self) -> None:
        for topic, payload in self.discovery().items():
            self.client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)
        self.announcements += 1
        self.names_changed()
        log.info("Home Assistant discovery announced on %s/.../%s", self.discovery_prefix, self.node_id)

    def _on_ha_status(self, message: Any) -> None:
        if message.payload.strip() == ONLINE.encode():
            log.info("Home Assistant came online; announcing again")
            self.announce()

    def recognition(self, event: Event) -> bool:
        """Fire the event entity and update the last-person sensor; False if the event is too old."""
        age = time.time() - event.time
        if age > self.max_age:
            log.debug("event %s is %.0f s old; not fired in Home Assistant", event.event_id, age)
            return False
        details = {"name": event.name if event.type != UNKNOWN_FACE else None, "person_id": event.person_id,
                   "unknown_id": event.unknown_id, "confidence": event.confidence,
                   "votes": event.votes, "camera": event.camera, "track_id": event.track_id,
                   "event_id": event.event_id, "timestamp": event.timestamp}
        fired = json.dumps({"event_type": event.type, **details})
        self.client.publish(self.recognition_topic, fired, qos=1)
        slug = self.cameras.get(event.camera)
        if slug is not None:
            self.client.publish(self._camera_topic(slug, "recognition"), fired, qos=1)
        self._last[None] = details
        if slug is not None:
            self._last[slug] = details
        self._publish_last(None, details)
        if slug is not None:
            self._publish_last(slug, details)
        return True

    def _publish_last(self, slug: str | None, details: dict[str, Any]) -> None:
        last = json.dumps({"state": details["name"] or STRANGER, "known": details["name"] is not None, **details})
        topic = self.last_person_topic if slug is None else self._camera_topic(slug, "last_person")
        self.client.publish(topic, last, qos=1, retain=True)

    def restore(self, event: Event) -> None:
        """At start: the last recognition logged is what the retained "Last person" shows (not fired again);
        `names_changed` then corrects its name if the person was renamed meanwhile."""
        details = {"name": event.name if event.type != UNKNOWN_FACE else None, "person_id": event.person_id,
                   "unknown_id": event.unknown_id, "confidence": event.confidence,
                   "votes": event.votes, "camera": event.camera, "track_id": event.track_id,
                   "event_id": event.event_id, "timestamp": event.timestamp}
        self._last[None] = details
        slug = self.cameras.get(event.camera)
        if slug is not None:
            self._last[slug] = details

    def names_changed(self) -> None:
        """People may have been renamed (the agent swapped in a retrained classifier): a "Last person" whose
        person now has another name (agent.people) is published again under it."""
        if not self._last:
            return
        try:
            with People(self.storage) as people:
                for slug, details in list(self._last.items()):
                    person = details.get("person_id")
                    name = people.name_of(person) if person else None
                    if name is not None and name != details["name"]:
                        details = {**details, "name": name}
                        self._last[slug] = details
                        self._publish_last(slug, details)
                        log.info("Home Assistant: the last person is now called %s", name)
        except (StorageError, sqlite3.Error) as exc:
            log.warning("Home Assistant: cannot look up renamed people: %s", exc)
