"""Remote enrollment end to end: a REAL mosquitto (password file + ACL), the agent's MqttClient, the real
models on real photos, the intake's worker thread and the `face-agent remote` CLI."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from conftest import COMPREFACE, DLIB, FR, ROOT, SHARED, make_config, wait_for
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.gallery import Gallery
from agent.images import load_image
from agent.sync import enrollment_protocol as proto
from agent.sync.enrollment import EnrollmentIntake
from agent.sync.mqtt import MqttClient

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")

TRAIN = FR / "examples" / "knn_examples" / "train"
TEST = FR / "examples" / "knn_examples" / "test"
IMGTOOLS = COMPREFACE / "embedding-calculator" / "src" / "services" / "imgtools" / "test" / "files"
JOHNS = DLIB / "examples" / "johns"
KEY = bytes.fromhex("5e" * 32)
USERS = {"agent-1": "pw-agent-1", "agent-2": "pw-agent-2", "operator": "pw-operator", "intruder": "pw-intruder"}


def acl() -> str:
    """The example ACL of deploy/mosquitto/acl (so the test checks it fits the enrollment topics), with
    its agent-1 block repeated for agent-2, plus an intruder who may publish requests but holds no key."""
    text = (ROOT / "deploy" / "mosquitto" / "acl").read_text()
    block = text[text.index("user agent-1\n"):]
    block = block[:block.index("\n\n")]
    intruder = "user intruder\ntopic write faces/enroll\ntopic write faces/+/enroll\n"
    return f"{text}\n{block.replace('agent-1', 'agent-2')}\n\n{intruder}"


@pytest.fixture
def broker(mosquitto_factory):
    return mosquitto_factory(users=USERS, acl=acl()).start()


@pytest.fixture
def keyfile(tmp_path) -> Path:
    path = tmp_path / "enroll.keys"
    path.write_text(f"# operators\nops:{KEY.hex()}\n")
    path.chmod(0o600)
    return path


def agent_config(tmp: Path, broker, keyfile: Path, agent_id: str = "agent-1", **remote):
    settings = {"key_file": str(keyfile), "debounce": 1.0, "max_message_bytes": 3_000_000,
                "max_image_bytes": 1_000_000}
    settings.update(remote)
    return make_config(tmp / agent_id, agent={"id": agent_id},
                       mqtt={"host": broker.host, "port": broker.port, "username": agent_id,
                             "password": USERS[agent_id], "reconnect_min_delay": 0.1, "reconnect_max_delay": 1.0},
                       remote_enroll=settings)


class Agent:
    """What the service wires together: gallery, MQTT client, intake; records on_model_updated calls."""

    def __init__(self, cfg, analyzer):
        self.cfg = cfg
        self.gallery = Gallery(cfg, analyzer)
        self.client = MqttClient(cfg)
        self.updates: list[tuple] = []
        self.updated = threading.Event()
        self.callback_threads: set[str] = set()
        self.intake = EnrollmentIntake(cfg, self.gallery, self.client, self._on_model_updated)

    def _on_model_updated(self, classifier, info) -> None:
        self.callback_threads.add(threading.current_thread().name)
        self.updates.append((classifier, info))
        self.updated.set()

    def start(self) -> Agent:
        assert self.intake.start()  # before the client: requests queued while offline need the callback
        self.client.start()
        assert self.client.wait_connected(10)
        return self

    def stop(self) -> None:
        self.client.stop()  # first: nothing arrives for a stopped intake
        self.intake.stop()
        self.gallery.close()


@pytest.fixture
def agents(analyzer):
    made: list[Agent] = []

    def make(cfg) -> Agent:
        made.append(Agent(cfg, analyzer))
        return made[-1]

    yield make
    for a in made:
        a.stop()


class Operator:
    """A plain paho MQTT v5 client (operator or intruder) keeping every message with its properties."""

    def __init__(self, broker, user: str = "operator", topics=("faces/+/enroll/result", "faces/replies/#")):
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}",
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set(user, USERS[user])
        self.messages: list[tuple[str, dict, object]] = []
        self.cond = threading.Condition()
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, json.loads(msg.payload), msg.properties))
            self.cond.notify_all()

    def send(self, payload: bytes | dict, topic: str = "faces/agent-1/enroll", properties=None) -> None:
        if isinstance(payload, dict):
            payload = proto.encode(payload)
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(10)

    def wait(self, predicate, timeout: float = 60.0) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if predicate(m)]
                if found or time.monotonic() > deadline:
                    return found
                self.cond.wait(0.2)

    def result(self, request_id: str | None, timeout: float = 60.0, n: int = 1) -> dict:
        """The result for request_id (or the n-th result without a request id: unparseable requests)."""
        def match(m):
            return m[1].get("type") == "enroll_result" and m[1].get("request_id") == request_id \
                and m[1].get("command") != "model_updated"
        deadline = time.monotonic() + timeout
        while True:
            found = self.wait(match, max(0.1, deadline - time.monotonic()))
            if len(found) >= n or time.monotonic() > deadline:
                assert len(found) >= n, f"no result for {request_id}"
                return found[n - 1][1]
            time.sleep(0.1)

    def notices(self) -> list[dict]:
        with self.cond:
            return [m[1] for m in self.messages if m[1].get("command") == "model_updated"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def operators():
    made: list[Operator] = []

    def make(*args, **kw) -> Operator:
        made.append(Operator(*args, **kw))
        return made[-1]

    yield make
    for o in made:
        o.close()


def req(command="add", key=KEY, key_id="ops", target="agent-1", **kw) -> dict:
    if command == "add" and "images" in kw:
        kw["images"] = [(Path(p).name, Path(p).read_bytes()) if not isinstance(p, tuple) else p
                        for p in kw["images"]]
    return proto.build_request(command, key_id, key, target=target, **kw)


def listing(cfg) -> list[str]:
    """Every file and folder under faces/, storage/ and svm/ (names only)."""
    out = []
    for name in ("faces", "storage", "svm"):
        root = cfg.path(name)
        out += sorted(str(p.relative_to(cfg.base_dir)) for p in root.rglob("*")) if root.exists() else []
    return out


def names_in(agent: Agent, classifier, photo: Path) -> list[str | None]:
    rgb = load_image(photo)
    detections = agent.gallery.analyzer.detect(rgb)
    _, emb = agent.gallery.analyzer.embed(rgb, detections)
    return [p.name for p in classifier.predict(emb)]


# ---------------------------------------------------------------------------------------------------------


def test_off_without_a_key_file(tmp_path, broker, analyzer, caplog):
    cfg = agent_config(tmp_path, broker, tmp_path / "unused", key_file="")
    agent = Agent(cfg, analyzer)
    with caplog.at_level("INFO"):
        assert not agent.intake.start()
    assert "remote enrollment is off" in caplog.text
    assert agent.client._subscriptions == {}  # nothing subscribed
    bad = tmp_path / "bad.keys"
    bad.write_text("ops:tooshort\n")
    agent2 = Agent(agent_config(tmp_path, broker, bad), analyzer)
    with caplog.at_level("ERROR"):
        assert not agent2.intake.start()
    assert "at least 16" in caplog.text and agent2.client._subscriptions == {}


def test_bad_requests_are_rejected_with_a_reason_and_write_nothing(tmp_path, broker, keyfile, agents, operators,
                                                                  caplog):
    agent = agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    intruder = operators(broker, "intruder", topics=())
    # a first valid request proves the subscription is in place
    first = req("list")
    op.send(first)
    assert op.result(first["request_id"])["status"] == "ok"
    before = listing(agent.cfg)
    face = (TRAIN / "obama" / "obama.jpg").read_bytes()

    unsigned = req(images=[TRAIN / "obama" / "obama.jpg"], person="Mallory")
    del unsigned["signature"]
    forged = req(images=[TRAIN / "obama" / "obama.jpg"], person="Mallory", key=os.urandom(32))
    unknown = req("list", key_id="someone")
    stale = req("list", now=time.time() - 1000)
    future = req("list", now=time.time() + 1000)
    wrong_target = req("list", target="agent-2")
    bad_name = req(images=[TRAIN / "obama" / "obama.jpg"], person="../../etc")
    hidden_name = req(images=[TRAIN / "obama" / "obama.jpg"], person=".hidden")
    corrupt = req(images=[IMGTOOLS / "truncated.jpg", IMGTOOLS / "corrupted.png", IMGTOOLS / "empty.png"],
                  person="Corrupt")
    no_face = req(images=[DLIB / "examples" / "faces" / "dogs.jpg"], person="Dog")
    several = req(images=[FR / "examples" / "two_people.jpg"], person="Pair")
    big_image = req(images=[("big.jpg", face + os.urandom(1_100_000))], person="Big")
    not_an_image = req(images=[("notes.txt", b"hello, not an image")], person="Text")
    cases = [  # (sender, payload, expected error code): all to faces/agent-1/enroll
        (intruder, unsigned, "unsigned"),
        (intruder, forged, "bad_signature"),
        (intruder, unknown, "unknown_key"),
        (op, stale, "stale"),
        (op, future, "future"),
        (op, first, "replayed"),
        (intruder, wrong_target, "wrong_target"),
        (intruder, req("list", target="*"), "wrong_target"),
        (op, bad_name, "invalid_name"),
        (op, hidden_name, "invalid_name"),
        (op, corrupt, "no_usable_image"),
        (op, no_face, "no_usable_image"),
        (op, several, "no_usable_image"),
        (op, big_image, "no_usable_image"),
        (op, not_an_image, "no_usable_image"),
        (op, req("explode"), "unknown_command"),
        (op, req("forget", person="Nobody"), "not_found"),
    ]
    for sender, payload, _code in cases:
        sender.send(payload)
    for _sender, payload, code in cases:
        result = op.result(payload["request_id"], n=2 if payload is first else 1)
        assert result["status"] == "rejected", (code, result)
        assert result["error"]["code"] == code, (code, result)
        # answers are signed only when the request's signature held and it was fresh
        assert proto.result_verified(result, {"ops": KEY}) == (code not in (
            "unsigned", "bad_signature", "unknown_key", "stale", "future"))
    reasons = {i["name"]: i["reason"] for i in op.result(corrupt["request_id"])["images"]}
    assert reasons == {"truncated.jpg": "unreadable", "corrupted.png": "unreadable", "empty.png": "unreadable"}
    assert op.result(no_face["request_id"])["images"][0]["reason"] == "no_face"
    assert op.result(several["request_id"])["images"][0]["reason"] == "several_faces"
    assert op.result(big_image["request_id"])["images"][0]["reason"] == "too_large"
    assert op.result(not_an_image["request_id"])["images"][0]["reason"] == "unreadable"

    # messages the agent cannot even parse: answered without a request id, in order
    raw = [(b"x" * 3_100_000, "too_large"), (b"{not json", "malformed"),
           (json.dumps({"schema_version": 99, "request_id": "v99"}).encode(), "unsupported_version")]
    for payload, _ in raw:
        intruder.send(payload)
    anonymous = op.wait(lambda m: m[1].get("request_id") in (None, "v99"), timeout=30)
    deadline = time.monotonic() + 30
    while len(anonymous) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        anonymous = op.wait(lambda m: m[1].get("request_id") in (None, "v99"), timeout=1)
    assert sorted(m[1]["error"]["code"] for m in anonymous) == sorted(c for _, c in raw)

    assert listing(agent.cfg) == before  # nothing written for any of them
    assert not agent.updates
    assert agent.intake.stats().get("images_accepted", 0) == 0
    assert "rejected request" in caplog.text and "bad_signature" in caplog.text


def test_add_new_person_is_stored_trained_and_recognised(tmp_path, broker, keyfile, agents, operators):
    agent = agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    kit = req(person="kit_harington", images=sorted((TRAIN / "kit_harington").iterdir()))
    obama = req(person="obama", images=sorted((TRAIN / "obama").iterdir()), target="*")
    op.send(kit)
    op.send(obama, topic="faces/enroll")  # the fleet topic
    for r in (op.result(kit["request_id"]), op.result(obama["request_id"])):
        assert r["status"] == "ok", r
        assert all(i["status"] == "accepted" and i["stored_as"] for i in r["images"])
        assert proto.result_verified(r, {"ops": KEY})
    stored = sorted(p.name for p in agent.gallery.photos_of("kit_harington"))
    assert stored == sorted(i["stored_as"] for i in op.result(kit["request_id"])["images"])
    assert agent.updated.wait(60)
    time.sleep(1.5)  # one debounce period: no second retrain for this burst
    assert len(agent.updates) == 1
    classifier, info = agent.updates[0]
    assert agent.callback_threads == {"remote-enroll"}  # the worker, never the MQTT network thread
    assert set(info) >= {"people", "counts", "training_s", "cv_score", "request_ids"}
    assert info["people"] == ["kit_harington", "obama"] and info["counts"] == {"kit_harington": 2, "obama": 2}
    assert sorted(info["request_ids"]) == sorted([kit["request_id"], obama["request_id"]])
    assert names_in(agent, classifier, TEST / "johnsnow_test1.jpg") == ["kit_harington"]
    assert names_in(agent, classifier, TEST / "obama1.jpg") == ["obama"]
    assert names_in(agent, classifier, TEST / "alex_lacamoire1.jpg") == [None]
    notice = op.wait(lambda m: m[1].get("command") == "model_updated")[0][1]
    assert notice["model"]["people"] == ["kit_harington", "obama"]
    assert proto.result_verified(notice, {"ops": KEY})
    # the same photos again: accepted as already enrolled, no retrain
    again = req(person="kit_harington", images=sorted((TRAIN / "kit_harington").iterdir()))
    op.send(again)
    assert [i["message"] for i in op.result(again["request_id"])["images"]] == ["already enrolled"] * 2
    # another person's photo under a new name is refused
    thief = req(person="impostor", images=[TRAIN / "obama" / "obama.jpg"])
    op.send(thief)
    assert op.result(thief["request_id"])["images"][0]["reason"] == "enrolled_as_other"
    assert not (agent.gallery.raw / "impostor").exists() and not (agent.gallery.aligned / "impostor").exists()
    time.sleep(1.5)
    assert len(agent.updates) == 1


def test_a_burst_of_20_images_trains_once(tmp_path, broker, keyfile, agents, operators):
    agent = agents(agent_config(tmp_path, broker, keyfile, debounce=1.5)).start()
    op = operators(broker)
    people = sorted(JOHNS.iterdir())[:2]
    photos = [(p.name, f) for p in people for f in sorted(p.iterdir())[:10]]
    assert len(photos) == 20
    requests = [req(person=person, images=[f]) for person, f in photos]
    for r in requests:
        op.send(r)
    for r in requests:
        assert op.result(r["request_id"], timeout=120)["status"] == "ok"
    assert agent.updated.wait(60)
    time.sleep(2.5)  # well past the debounce: still one retrain
    assert len(agent.updates) == 1 and agent.intake.retrains == 1
    classifier, info = agent.updates[0]
    assert info["counts"] == {people[0].name: 10, people[1].name: 10}
    assert sorted(info["request_ids"]) == sorted(r["request_id"] for r in requests)
    assert info["cv_score"] is not None
    test_photo = sorted(people[0].iterdir())[10]  # the 11th photo was not enrolled
    assert names_in(agent, classifier, test_photo) == [people[0].name]


def test_offline_agent_serves_queued_requests_after_reconnecting(tmp_path, broker, keyfile, agents, operators):
    cfg = agent_config(tmp_path, broker, keyfile)
    first = agents(cfg).start()
    op = operators(broker)
    hello = req("list")
    op.send(hello)
    assert op.result(hello["request_id"])["status"] == "ok"  # subscribed in a persistent session
    first.stop()  # the agent goes away (clean disconnect; the broker keeps its session)

    queued = req(person="alex_lacamoire", images=[TRAIN / "alex_lacamoire" / "img1.jpg"], valid_for=3600)
    op.send(queued)
    time.sleep(1.0)
    assert not op.wait(lambda m: m[1].get("request_id") == queued["request_id"], timeout=0.5)

    second = agents(cfg).start()  # a restarted agent process: same client id, same storage
    result = op.result(queued["request_id"])
    assert result["status"] == "ok"
    assert [p.parent.name for p in second.gallery.photos_of("alex_lacamoire")] == ["alex_lacamoire"]
    assert second.updated.wait(60)
    assert second.updates[0][1]["people"] == ["alex_lacamoire"]
    # the nonce memory survived the restart: the first request replayed is refused
    op.send(hello)
    assert op.result(hello["request_id"], n=2)["error"]["code"] == "replayed"


def test_v5_response_topic_correlation_data_and_binary_requests(tmp_path, broker, keyfile, agents, operators):
    agent = agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    intruder = operators(broker, "intruder", topics=())
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "faces/replies/op-1"
    props.CorrelationData = b"corr-42"
    listed = req("list")
    op.send(listed, properties=props)
    topic, result, rprops = op.wait(lambda m: m[1].get("request_id") == listed["request_id"])[0]
    assert topic == "faces/replies/op-1"
    assert rprops.CorrelationData == b"corr-42"
    assert result["status"] == "ok" and proto.result_verified(result, {"ops": KEY})
    # the worker thread alone runs at a lower priority (Linux: per-thread nice)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, agent.intake._thread.native_id) == min(19, base + 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base

    # binary MQTT v5 add: the image is the payload, the fields are user properties
    image = (TRAIN / "biden" / "biden.jpg").read_bytes()
    fields = proto.build_binary_request("ops", KEY, "biden", image, name="biden.jpg", target="agent-1")
    bprops = Properties(PacketTypes.PUBLISH)
    bprops.UserProperty = list(fields.items())
    bprops.ResponseTopic = "faces/replies/op-1"
    bprops.CorrelationData = b"corr-43"
    op.send(image, properties=bprops)
    topic, result, rprops = op.wait(lambda m: m[1].get("request_id") == fields["request_id"])[0]
    assert (topic, rprops.CorrelationData) == ("faces/replies/op-1", b"corr-43")
    assert result["status"] == "ok" and result["images"][0]["name"] == "biden.jpg"
    assert len(agent.gallery.photos_of("biden")) == 1
    # the same properties over another image: refused (the payload hash is signed)
    bprops2 = Properties(PacketTypes.PUBLISH)
    bprops2.UserProperty = list({**fields, "nonce": "f" * 32}.items())
    intruder.send((TRAIN / "obama" / "obama.jpg").read_bytes(), properties=bprops2)
    r = op.result(fields["request_id"], n=2)
    assert r["error"]["code"] == "bad_signature"

    # an unauthenticated request cannot steer the agent's answer to a topic of its choice
    spoof = Properties(PacketTypes.PUBLISH)
    spoof.ResponseTopic = "faces/replies/victim"
    unsigned = req("list")
    del unsigned["signature"]
    intruder.send(unsigned, properties=spoof)
    topic, result, _ = op.wait(lambda m: m[1].get("request_id") == unsigned["request_id"])[0]
    assert topic == "faces/agent-1/enroll/result" and result["error"]["code"] == "unsigned"
    # nor can a replay of a captured signed request
    intruder.send(listed, properties=spoof)
    topic, result, _ = op.wait(lambda m: m[1].get("request_id") == listed["request_id"]
                               and m[1]["status"] == "rejected")[0]
    assert topic == "faces/agent-1/enroll/result" and result["error"]["code"] == "replayed"


def test_cli_round_trip(tmp_path, broker, keyfile, agents, capsys):
    from agent.cli import main

    agent = agents(agent_config(tmp_path, broker, keyfile)).start()
    agents(agent_config(tmp_path, broker, keyfile, agent_id="agent-2")).start()
    toml = tmp_path / "operator.toml"
    toml.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "operator"\n'
                    f'password = "{USERS["operator"]}"\n[remote_enroll]\nkey_file = "{keyfile}"\n'
                    'max_image_bytes = 1000000\n')

    def cli(*argv) -> tuple[int, str, str]:
        code = main(["-q", "-c", str(toml), "remote", *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli("list", "--expect", "2", "--timeout", "20")
    assert code == 0 and "agent-1: ok" in out and "agent-2: ok" in out and "nobody enrolled" in out
    photos = [str(p) for p in sorted((TRAIN / "biden").iterdir())]
    code, out, _ = cli("enroll", "biden", *photos, str(DLIB / "examples" / "faces" / "dogs.jpg"),
                       "--agent", "agent-1", "--wait-trained", "--timeout", "60")
    assert code == 1, out  # partial: the dog photo was refused
    assert "agent-1: partial" in out and out.count("accepted") == 2 and "no_face" in out
    assert "agent-1: retrained: 1 people" in out
    assert "agent-2" not in out
    assert len(agent.gallery.photos_of("biden")) == 2
    sent = {Path(p).stem for p in photos}  # stored as <sent name>-<sha8>: traceable to the sender's file
    assert {p.stem.rsplit("-", 1)[0] for p in agent.gallery.photos_of("biden")} == sent
    chips = {p.stem for p in (agent.gallery.aligned / "biden").iterdir()}  # one chip a photo, named after it
    assert chips == {p.stem for p in agent.gallery.photos_of("biden")}
    code, out, _ = cli("rename", "biden", "Joe Biden", "--agent", "agent-1")
    assert code == 0 and "biden -> Joe Biden" in out
    stored = sorted(p.name for p in agent.gallery.photos_of("Joe Biden"))
    code, out, _ = cli("remove", "Joe Biden", stored[0], "--agent", "agent-1")
    assert code == 0 and "removed" in out
    code, out, _ = cli("people", "--agent", "agent-1", "--json")  # named like the local `people`
    data = json.loads(out)
    assert data["verified"] and data["people"]["Joe Biden"]["photos"] == 1
    code, out, _ = cli("forget", "Joe Biden", "--agent", "agent-1")
    assert code == 0 and not agent.gallery.photos_of("Joe Biden")
    assert "Joe Biden's photos moved to <faces>/train/trash/Joe Biden-" in out  # kept, not deleted
    assert len([p for d in agent.gallery.trash.iterdir() for p in d.iterdir()]) == 1
    code, out, _ = cli("retrain", "--agent", "agent-1", "--timeout", "60")
    assert code == 0 and "model: 0 people" in out
    code, out, err = cli("list", "--agent", "agent-9", "--timeout", "1")
    assert code == 3 and "no answer from agent 'agent-9' within 1 s" in err
    code, out, err = cli("forget", "x", "--key-file", str(tmp_path / "nope"))
    assert code == 2 and "no such key file" in err
    wrong = tmp_path / "wrong.keys"
    wrong.write_text(f"ops:{os.urandom(32).hex()}\n")
    wrong.chmod(0o600)
    code, out, _ = cli("list", "--agent", "agent-1", "--key-file", str(wrong))
    assert code == 1 and "bad_signature" in out and "UNVERIFIED" in out
    code, out, _ = cli("keygen", "ops2")
    assert code == 0 and len(proto.parse_keys(out.strip())["ops2"]) == 32
    big = tmp_path / "big.jpg"
    big.write_bytes(base64.b64encode(os.urandom(1_100_000)))
    code, out, err = cli("enroll", "x", str(big))
    assert code == 2 and "max_image_bytes" in err


def test_signed_remote_forget_with_purge_erases_the_person_on_every_agent(tmp_path, broker, keyfile, agents,
                                                                         capsys):
    """Issue 25: `remote forget PERSON --purge` to the fleet: on each agent the photos are deleted (no trash),
    and the person's identifications and face thumbnails leave its event log."""
    import numpy as np

    from agent.cli import main
    from agent.events import EventFactory
    from agent.store import EventStore

    fleet = [agents(agent_config(tmp_path, broker, keyfile, agent_id=a)).start() for a in ("agent-1", "agent-2")]
    for agent in fleet:
        raw = agent.gallery.raw / "biden"
        raw.mkdir(parents=True)
        for photo in (TRAIN / "biden").iterdir():
            (raw / photo.name).write_bytes(photo.read_bytes())
        factory = EventFactory(agent.cfg.agent.id, "door", thumbnails=True)
        face = np.full((120, 160, 3), 90, dtype=np.uint8)
        store = EventStore(agent.cfg)
        for event in (factory.track_started(1, (10, 10, 60, 70), (160, 120), image=face),
                      factory.identified(1, "biden", 0.9, 3, (10, 10, 60, 70), (160, 120), image=face)):
            store.add(event)
        store.close()
    toml = tmp_path / "operator.toml"
    toml.write_text(f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "operator"\n'
                    f'password = "{USERS["operator"]}"\n[remote_enroll]\nkey_file = "{keyfile}"\n')
    code = main(["-q", "-c", str(toml), "remote", "forget", "biden", "--purge", "--expect", "2", "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("biden's photos deleted on the agent") == 2
    for agent in fleet:
        assert not agent.gallery.photos_of("biden")
        assert not agent.gallery.trash.exists() or not list(agent.gallery.trash.iterdir())
        store = EventStore(agent.cfg)
        rows = store.query(limit=None)
        store.close()
        assert [r.type for r in rows] == ["track_started"] and "thumbnail" not in rows[0].payload


def test_a_forged_reply_cannot_write_terminal_escapes_or_extra_lines(capsys):
    from agent.commands.remote import _print_result

    forged = "x\nagent-2: ok\x1b[2J"
    _print_result({"agent_id": forged, "status": "ok", "images": [{"ref": forged, "status": "removed"}],
                   "people": {forged: {"photos": 1}}, "purged": True, "person": forged}, verified=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out and not [line for line in out.splitlines() if line.startswith("agent-2")]
    assert "x\\nagent-2: ok\\x1b[2J: ok  [UNVERIFIED" in out


def test_removing_the_last_photos_forgets_the_person(tmp_path, broker, keyfile, agents, operators):
    """Issue 28.2: `remove_images` goes through agent.enrollment_ops as the CLI's `remove` and the web's Remove:
    a photo removed, the person kept; the last one removed, the person forgotten (photos in the trash, their
    identifications erased from the event log), never an error after the photos were already gone."""
    from agent.events import EventFactory
    from agent.gallery import file_sha256
    from agent.store import EventStore

    agent = agents(agent_config(tmp_path, broker, keyfile)).start()
    op = operators(broker)
    add = req(person="biden", images=sorted((TRAIN / "biden").iterdir()))
    op.send(add)
    assert op.result(add["request_id"])["status"] == "ok"
    assert agent.updated.wait(60)
    with EventStore(agent.cfg) as events:
        events.add(EventFactory(agent.cfg.agent.id, "door").identified(1, "biden", 0.9, 3, (10, 10, 60, 70),
                                                                        (160, 120)))
    first, last = agent.gallery.photos_of("biden")
    one = req("remove_images", person="biden", refs=[file_sha256(first), "nope-0123abcd.jpg"])
    op.send(one)
    r = op.result(one["request_id"])
    assert r["status"] == "partial" and r["photos_left"] == 1 and "forgotten" not in r, r
    assert [i["status"] for i in r["images"]] == ["removed", "not_found"]
    assert agent.gallery.photos_of("biden") == [last]
    rest = req("remove_images", person="biden", refs=[last.name])
    op.send(rest)
    r = op.result(rest["request_id"])
    assert r["status"] == "ok" and r["photos_left"] == 0 and r["forgotten"] is True, r
    assert r["moved_to"].startswith("train/trash/biden-")
    assert not (agent.gallery.raw / "biden").exists() and not (agent.gallery.aligned / "biden").exists()
    trash = agent.gallery.trashed("biden")
    assert len(trash) == 1 and [p.name for p in trash[0].path.iterdir()] == [last.name]
    with EventStore(agent.cfg) as events:
        assert not [e for e in events.query(limit=None) if e.type == "identified"]  # forget erased them
    assert wait_for(lambda: agent.updates[-1][1]["people"] == [], 60)  # the debounced retrain
    listed = req("list")
    op.send(listed)
    assert op.result(listed["request_id"])["people"] == {}
    again = req("remove_images", person="biden", refs=[last.name])
    op.send(again)
    assert op.result(again["request_id"])["error"]["code"] == "not_found"


def test_remote_builds_its_client_as_the_agent_does(tmp_path, keyfile, capsys):
    """Issue 28.2: `face-agent remote` gets its paho client from agent.sync.mqtt.paho_client (credentials, TLS
    as the agent's): TLS files that cannot be loaded are one clear line, as for the agent, not a traceback."""
    from agent.cli import main

    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate\n")
    toml = tmp_path / "operator.toml"
    toml.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = 8883\ntls = true\nca_file = "{bad_ca}"\n'
                    f'[remote_enroll]\nkey_file = "{keyfile}"\n')
    code = main(["-q", "-c", str(toml), "remote", "list", "--agent", "agent-1", "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "mqtt TLS files (ca_file=" in err and "cannot be loaded" in err, err
    assert "Traceback" not in err
