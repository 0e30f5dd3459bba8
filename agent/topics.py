"""The MQTT topic tree, in one place (docs/events.md, docs/enrollment.md).

`<prefix>` is `[mqtt] topic_prefix` (default `faces`), `<agent>` is `[agent] id`:

    <prefix>/events                      every agent's events (QoS 1)
    <prefix>/<agent>/status              online / offline (retained, Last Will)
    <prefix>/<agent>/stats               periodic stats
    <prefix>/<agent>/health              health state (retained)
    <prefix>/<agent>/ha/...              Home Assistant state topics
    <prefix>/enroll                      enrollment requests for every agent
    <prefix>/<agent>/enroll              enrollment requests for this agent
    <prefix>/<agent>/enroll/result       enrollment replies
    <prefix>/replies/...                 MQTT v5 response topics of requests
    <discovery>/status                   Home Assistant's birth message
    <discovery>/<component>/<node>/<object>/config   Home Assistant discovery
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import Config


def _clean(prefix: str) -> str:
    return prefix.rstrip("/")


@dataclass(frozen=True)
class Topics:
    """Every topic of one agent (`agent_id`); `Topics.of(cfg)` from the config."""

    prefix: str
    agent_id: str
    discovery_prefix: str = "homeassistant"

    @classmethod
    def of(cls, cfg: Config) -> Topics:
        return cls(_clean(cfg.mqtt.topic_prefix), cfg.agent.id, _clean(cfg.mqtt.discovery_prefix))

    def _agent(self, leaf: str) -> str:
        return f"{_clean(self.prefix)}/{self.agent_id}/{leaf}"

    @property
    def events(self) -> str:
        return f"{_clean(self.prefix)}/events"

    @property
    def status(self) -> str:
        return self._agent("status")

    @property
    def stats(self) -> str:
        return self._agent("stats")

    @property
    def health(self) -> str:
        return self._agent("health")

    @property
    def ha_base(self) -> str:
        return self._agent("ha")

    @property
    def enroll_fleet(self) -> str:
        return fleet_enroll_topic(self.prefix)

    @property
    def enroll(self) -> str:
        return self._agent("enroll")

    @property
    def enroll_result(self) -> str:
        return self._agent("enroll/result")

    @property
    def ha_status(self) -> str:
        return f"{_clean(self.discovery_prefix)}/status"

    def ha_config(self, component: str, node_id: str, object_id: str) -> str:
        return f"{_clean(self.discovery_prefix)}/{component}/{node_id}/{object_id}/config"


def fleet_enroll_topic(prefix: str) -> str:
    """Enrollment requests for every agent."""
    return f"{_clean(prefix)}/enroll"


def all_results_topic(prefix: str) -> str:
    """What an operator subscribes to for the enrollment answers of every agent."""
    return f"{_clean(prefix)}/+/enroll/result"


def replies_prefix(prefix: str) -> str:
    """MQTT v5 response topics of requests must lie under this (`<prefix>/replies`), as the ACL allows."""
    return f"{_clean(prefix)}/replies"
