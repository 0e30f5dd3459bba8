"""`face-agent remote ...`: enroll, remove, forget, rename, list and retrain on agents over MQTT.

The operator's side of docs/enrollment.md: builds a signed request (key from `--key-file`, default
`[remote_enroll] key_file`), publishes it to one agent (`--agent ID`) or to every agent, and prints each
agent's answer that arrives within `--timeout` seconds. Broker settings come from `[mqtt]`, or --host,
--port, --username, --password.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from agent.commands._common import config_of, fail
from agent.config import Config, ConfigError
from agent.logsafe import shown
from agent.sync import enrollment_protocol as proto
from agent.topics import Topics, all_results_topic

NO_ANSWER = 3  # exit code when no agent answered in time


def add_parser(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--agent", metavar="ID", help="send to this agent only (default: every agent)")
    common.add_argument("--key-file", help="HMAC key file (default: [remote_enroll] key_file)")
    common.add_argument("--key-id", help="key to sign with (default: the first in the key file)")
    common.add_argument("--host", help="broker host (default: [mqtt] host)")
    common.add_argument("--port", type=int, help="broker port (default: [mqtt] port)")
    common.add_argument("--username", help="broker user (default: [mqtt] username)")
    common.add_argument("--password", help="broker password (default: [mqtt] password or "
                        "$FACE_AGENT_MQTT_PASSWORD)")
    common.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for answers (default 10; with --agent: until it answers)")
    common.add_argument("--expect", type=int, default=0, metavar="N",
                        help="stop waiting once N agents answered (default: wait the whole timeout)")
    common.add_argument("--valid-for", type=float, default=0.0, metavar="SECONDS",
                        help="let agents that are offline now serve the request when they return within "
                        "SECONDS (capped by the agents' [remote_enroll] max_validity)")
    common.add_argument("--json", action="store_true", help="print the raw results as JSON lines")

    p = sub.add_parser("remote", help="enroll/forget/rename/list people on agents over MQTT (signed requests)",
                       description="Send a signed remote-enrollment request over MQTT and print each agent's "
                       "answer. See docs/enrollment.md.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("enroll", parents=[common], help="add photos of PERSON")
    a.add_argument("person")
    a.add_argument("images", nargs="+", help="photo files")
    a.add_argument("--wait-trained", action="store_true",
                   help="also wait until the agents retrained with the new photos")
    a = actions.add_parser("remove", parents=[common], help="remove photos of PERSON by sha256 or stored name")
    a.add_argument("person")
    a.add_argument("refs", nargs="+", metavar="SHA256_OR_NAME")
    a = actions.add_parser("forget", parents=[common], help="forget PERSON everywhere on the agents (docs/privacy.md)")
    a.add_argument("person")
    a.add_argument("--purge", action="store_true", help="delete their photos now instead of keeping them in "
                   "the agents' trash for [enrollment] trash_days")
    a = actions.add_parser("rename", parents=[common], help="rename a person")
    a.add_argument("old")
    a.add_argument("new")
    # `people`, as the local command that lists the same; `list` (the protocol's command name) still works
    actions.add_parser("people", aliases=["list"], parents=[common], help="enrolled people and the model of each agent")
    a = actions.add_parser("name", parents=[common], help="enroll an unknown person (or --track) as PERSON")
    a.add_argument("unknown_id", nargs="?", help="the unknown person, e.g. u3 (see `remote unknowns`)")
    a.add_argument("person")
    a.add_argument("--track", type=int, metavar="TRACK_ID", help="name this track instead")
    a.add_argument("--wait-trained", action="store_true", help="also wait until the agents retrained")
    actions.add_parser("unknowns", parents=[common], help="the unknown people each agent has seen")
    a = actions.add_parser("reject", parents=[common], help="an identification (EVENT_ID) was wrong")
    a.add_argument("event_id")
    a.add_argument("--wait-trained", action="store_true", help="also wait until the agents retrained")
    actions.add_parser("retrain", parents=[common], help="retrain now and report the model")
    k = actions.add_parser("keygen", help="print a new 'key_id:secret' line for the key files")
    k.add_argument("key_id")
    p.set_defaults(func=run)


def _load_keys(cfg: Config, args: argparse.Namespace) -> tuple[str, bytes, dict[str, bytes]]:
    path = args.key_file or cfg.remote_enroll.key_file
    if not path:
        raise proto.KeyFileError("no key file: pass --key-file or set [remote_enroll] key_file")
    keys = proto.load_keys(cfg.resolve(path) if not args.key_file else Path(path))
    key_id = args.key_id or next(iter(keys))
    if key_id not in keys:
        raise proto.KeyFileError(f"key id {key_id!r} is not in the key file (has: {', '.join(keys)})")
    return key_id, keys[key_id], keys


def build(args: argparse.Namespace, cfg: Config, key_id: str, secret: bytes) -> dict:
    """The signed request for the command line."""
    target = args.agent or proto.FLEET
    common: dict[str, Any] = {"target": target, "valid_for": args.valid_for or None}
    if args.action == "enroll":
        limits = cfg.remote_enroll
        images = []
        for name in args.images:
            path = Path(name)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
            if len(data) > limits.max_image_bytes:
                raise ValueError(f"{path}: {len(data)} bytes, over the {limits.max_image_bytes}-byte limit "
                                 "([remote_enroll] max_image_bytes)")
            images.append((path.name, data))
        fields = proto.build_request(proto.ADD, key_id, secret, person=args.person, images=images, **common)
        size = len(proto.encode(fields))
        if size > limits.max_message_bytes:
            raise ValueError(f"the request would be {size} bytes, over the {limits.max_message_bytes}-byte limit "
                             "([remote_enroll] max_message_bytes): send fewer photos at a time")
        return fields
    if args.action == "remove":
        return proto.build_request(proto.REMOVE_IMAGES, key_id, secret, person=args.person, refs=args.refs,
                                   **common)
    if args.action == "forget":
        return proto.build_request(proto.FORGET, key_id, secret, person=args.person, purge=args.purge, **common)
    if args.action == "rename":
        return proto.build_request(proto.RENAME, key_id, secret, person=args.old, new_name=args.new, **common)
    if args.action == "name":
        if (args.unknown_id is None) == (args.track is None):
            raise ValueError("give either UNKNOWN_ID or --track TRACK_ID")
        return proto.build_request(proto.NAME, key_id, secret, person=args.person, unknown_id=args.unknown_id,
                                   track_id=args.track, **common)
    if args.action == "reject":
        return proto.build_request(proto.REJECT, key_id, secret, event_id=args.event_id.strip().upper(), **common)
    command = "list" if args.action == "people" else args.action  # the protocol's name for it
    return proto.build_request(command, key_id, secret, **common)  # list, retrain, unknowns


class Exchange:
    """Publish one request and collect the answers (paho client of its own, clean session)."""

    def __init__(self, cfg: Config, args: argparse.Namespace):
        from agent.sync.mqtt import paho_client

        m = cfg.mqtt
        self.host = args.host or m.host
        self.port = args.port or m.port
        self.prefix = m.topic_prefix.rstrip("/")
        # a clean session of its own: answers are waited for while connected, nothing is kept for later
        self.client = paho_client(cfg, f"face-agent-remote-{uuid.uuid4().hex[:10]}",
                                  "v311" if m.protocol == "v311" else "v5", username=args.username,
                                  password=args.password)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.refused: str | None = None
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.refused = str(reason)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            data = json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        if isinstance(data, dict):
            with self.cond:
                self.messages.append(data)
                self.cond.notify_all()

    def open(self, agent: str | None, timeout: float) -> None:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from None
        self.client.loop_start()
        if not self.connected.wait(timeout) or self.refused:
            raise ConnectionError(f"broker {self.host}:{self.port} "
                                  + (f"refused the connection: {self.refused}" if self.refused else "did not answer"))
        topic = Topics(self.prefix, agent).enroll_result if agent else all_results_topic(self.prefix)
        self.client.subscribe(topic, qos=1)
        if not self.subscribed.wait(timeout):
            raise ConnectionError(f"broker {self.host}:{self.port} did not confirm the subscription to {topic}")

    def send(self, topic: str, payload: bytes, timeout: float) -> None:
        from agent.sync.mqtt import wait_published

        if not wait_published(self.client.publish(topic, payload, qos=1), timeout):
            raise ConnectionError(f"broker did not acknowledge the request on {topic}")

    def wait(self, done, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.2))
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _print_result(r: dict, verified: bool) -> None:
    """One agent's reply: every line escaped (a reply is outside data, possibly not even signed)."""

    def say(line: str) -> None:
        print(shown(line))

    agent = r.get("agent_id")
    error = r.get("error") or {}
    head = f"{agent}: {r.get('status')}"
    if error:
        head += f" - {error.get('code')}: {error.get('message')}"
    if not verified:
        head += "  [UNVERIFIED: not signed with your key]"
    say(head)
    for img in r.get("images") or []:
        if "ref" in img:
            say(f"  {img['status']:9s} {img['ref']}" + (f" ({img['stored_as']})" if img.get("stored_as") else ""))
            continue
        line = f"  {img['status']:9s} {img.get('name')}"
        if img["status"] == proto.ACCEPTED:
            line += f" -> {img.get('stored_as')}" + (f" ({img['message']})" if img.get("message") else "")
        else:
            line += f": {img.get('reason')} ({img.get('message')})"
        say(line)
    if r.get("retrain"):
        say(f"  retraining {r['retrain']}")
    if r.get("new_name"):
        say(f"  {r.get('person')} -> {r['new_name']}")
    if r.get("moved_to"):
        say(f"  {r.get('person')}'s photos moved to <faces>/{r['moved_to']} on the agent (its trash)")
    elif r.get("purged"):
        say(f"  {r.get('person')}'s photos deleted on the agent")
    if r.get("enrolled") is not None:
        say(f"  {r.get('unknown_id') or 'track ' + str(r.get('track_id'))} -> {r.get('person')}: "
              f"{len(r['enrolled'])} of {r.get('offered')} faces enrolled")
    if r.get("negatives") is not None:
        say(f"  {r.get('event_id')}: {r['negatives']} faces now known not to be {r.get('person')}")
    for u in r.get("unknowns") or []:
        say(f"  {u['id']}: {u['sightings']} sightings in {u['tracks']} tracks"
              + (f", named {u['name']}" if u.get("name") else ""))
    if r.get("unknowns") == []:
        say("  no unknown people seen")
    if r.get("people") is not None:
        people = r["people"]
        if not people:
            say("  nobody enrolled")
        for name, info in sorted(people.items()):
            say(f"  {name}: {info.get('photos')} photo(s), {info.get('trained_photos')} in the model")
    model = r.get("model")
    if model and r.get("command") in (proto.RETRAIN, proto.LIST):
        cv = model.get("cv_score")
        say(f"  model: {len(model.get('people') or [])} people, trained {model.get('trained_at')}"
              + (f", cross-validated accuracy {cv:.3f}" if isinstance(cv, (int, float)) else ""))


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "action", None):
        return fail("give an action: enroll, remove, forget, rename, list, retrain, name, unknowns, reject "
                    "or keygen", 2)
    if args.action == "keygen":
        try:
            print(proto.new_secret_line(args.key_id))
        except ValueError as exc:
            return fail(str(exc), 2)
        return 0
    cfg = config_of(args)
    try:
        key_id, secret, keys = _load_keys(cfg, args)
        fields = build(args, cfg, key_id, secret)
    except (proto.KeyFileError, ValueError) as exc:
        return fail(str(exc), 2)
    rid = fields["request_id"]
    try:
        exchange = Exchange(cfg, args)
    except ConfigError as exc:  # the TLS files cannot be loaded (agent.sync.mqtt.MqttConfigError)
        return fail(str(exc))
    try:
        exchange.open(args.agent, args.timeout)
        exchange.send(proto.request_topic(exchange.prefix, args.agent), proto.encode(fields), args.timeout)
        wanted = 1 if args.agent else args.expect

        def answers(msgs: list[dict]) -> list[dict]:
            return [m for m in msgs if m.get("type") == "enroll_result" and m.get("request_id") == rid]

        msgs = exchange.wait(lambda ms: wanted > 0 and len({m.get("agent_id") for m in answers(ms)}) >= wanted,
                             args.timeout)
        results = answers(msgs)
        trained: list[dict] = []
        if results and getattr(args, "wait_trained", False):
            accepted = {r.get("agent_id") for r in results if r.get("retrain")}

            def notices(ms: list[dict]) -> list[dict]:
                return [m for m in ms if m.get("command") == "model_updated"
                        and rid in ((m.get("model") or {}).get("request_ids") or [])]

            ms = exchange.wait(lambda ms: {m.get("agent_id") for m in notices(ms)} >= accepted,
                               args.timeout + cfg.remote_enroll.debounce)
            trained = notices(ms)
    except ConnectionError as exc:
        return fail(str(exc))
    finally:
        exchange.close()
    seen = set()
    code = 0
    for r in results:
        if r.get("agent_id") in seen:  # QoS 1 may deliver twice
            continue
        seen.add(r.get("agent_id"))
        verified = proto.result_verified(r, keys)
        if args.json:
            print(json.dumps(dict(r, verified=verified), ensure_ascii=False))
        else:
            _print_result(r, verified)
        if r.get("status") != proto.OK or not verified:
            code = 1
    for n in trained:
        model = n.get("model") or {}
        if args.json:
            print(json.dumps(dict(n, verified=proto.result_verified(n, keys)), ensure_ascii=False))
        else:
            print(f"{n.get('agent_id')}: retrained: {len(model.get('people') or [])} people in "
                  f"{model.get('total_s')} s, cross-validated accuracy {model.get('cv_score')}")
    if not results:
        where = f"agent {args.agent!r}" if args.agent else "any agent"
        print(f"face-agent: no answer from {where} within {args.timeout:g} s (request {rid}). Is the agent running "
              f"with remote enrollment on ([remote_enroll] key_file) and the key {key_id!r}, and connected to "
              f"{exchange.host}:{exchange.port}?", file=sys.stderr)
        return NO_ANSWER
    if wanted and len(seen) < wanted:
        print(f"face-agent: only {len(seen)} of {wanted} agents answered within {args.timeout:g} s",
              file=sys.stderr)
        code = code or NO_ANSWER
    return code
