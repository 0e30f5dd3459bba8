"""The live agent end to end: real clips, real models, real SQLite, a real mosquitto broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from broker import Collector
from conftest import FR, ROOT, SHARED, make_config

from agent.events import parse_timestamp
from agent.gallery import Gallery
from agent.service import Service
from agent.store import EventStore

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"
WALKERS = SHARED / "facenet-pytorch" / "examples" / "video.mp4"
KNN_TRAIN = FR / "examples" / "knn_examples" / "train"


def enroll(cfg, analyzer, with_lin: bool = True) -> None:
    gallery = Gallery(cfg, analyzer=analyzer)
    if with_lin:
        gallery.add_photos("lin", [FR / "examples" / "lin-manuel-miranda.png"])
    for person in ("obama", "biden", "kit_harington"):
        gallery.add_photos(person, sorted((KNN_TRAIN / person).iterdir()))
    gallery.ensure_trained(progress=False)


def agent_config(tmp_path: Path, broker=None, mqtt_settings: dict | None = None, **sections):
    mqtt = {"enabled": broker is not None, "stats_interval": 1.0, **(mqtt_settings or {})}
    if broker is not None:
        mqtt.update(host=broker.host, port=broker.port)
    return make_config(tmp_path, mqtt=mqtt, agent={"id": "test-agent", "camera_name": "stage"}, **sections)


def events_of(messages) -> list[dict]:
    return [json.loads(m.text) for m in messages]


def stored_events(cfg) -> list[dict]:
    store = EventStore(cfg)
    try:
        return [json.loads(r.payload) for r in store.query(limit=None)]
    finally:
        store.close()


def test_hamilton_clip_names_lin_over_mqtt(tmp_path, mosquitto, analyzer):
    # stats and health checks often enough that a run of ~2 s (less on a faster machine) has several of each
    cfg = agent_config(tmp_path, mosquitto, mqtt_settings={"stats_interval": 0.1}, service={"status_interval": 0.2})
    enroll(cfg, analyzer)
    collector = Collector(mosquitto, ["faces/events", "faces/test-agent/#"]).start()
    service = Service(cfg, source_uri=str(HAMILTON), every_frame=True, analyzer=analyzer)
    assert service.run() == 0
    assert service.stats.frames == 275
    store = EventStore(cfg)
    logged = {r.event_id: r for r in store.query(limit=None)}
    assert store.count("pending") == 0, "every event was acknowledged by the broker before shutdown"
    store.close()
    received = events_of(collector.wait_count("faces/events", len(logged)))
    by_id = {e["event_id"]: e for e in received}
    assert set(by_id) == set(logged)  # every logged event arrived, exactly as logged
    for event_id, record in logged.items():
        assert by_id[event_id] == json.loads(record.payload)
    identified = [e for e in received if e["type"] == "identified"]
    assert any(e["name"] == "lin" for e in identified), identified
    names_per_track = defaultdict(set)
    for e in identified:
        names_per_track[e["track_id"]].add(e["name"])
    for track, names in names_per_track.items():
        assert len(names) == 1, f"track {track} flipped between {names}"
    assert {e["camera"] for e in received if e["type"] != "model_updated"} == {"stage"}  # agent-wide: null
    assert {e["agent_id"] for e in received} == {"test-agent"}
    started = {e["track_id"] for e in received if e["type"] == "track_started"}
    ended = {e["track_id"] for e in received if e["type"] == "track_ended"}
    assert started == ended and started
    status = collector.on("faces/test-agent/status")
    assert status and status[-1].text == "offline"
    assert collector.on("faces/test-agent/stats")
    health = [json.loads(m.text) for m in collector.on("faces/test-agent/health")]
    assert health and health[0]["state"] in ("ok", "degraded") and health[-1]["state"] == "stopped"
    assert all(parse_timestamp(h["timestamp"]) > 0 for h in health)  # ISO 8601 like the events
    collector.stop()


@pytest.mark.slow
def test_walking_crowd_tracks_start_and_end_no_enrolled_names(tmp_path, analyzer):
    cfg = agent_config(tmp_path)
    enroll(cfg, analyzer)
    service = Service(cfg, source_uri=str(WALKERS), every_frame=True, analyzer=analyzer)
    assert service.run() == 0
    events = stored_events(cfg)
    started = [e for e in events if e["type"] == "track_started"]
    ended = [e for e in events if e["type"] == "track_ended"]
    assert {e["track_id"] for e in started} == {e["track_id"] for e in ended}
    assert not [e for e in events if e["type"] == "identified"], "nobody in this clip is enrolled"
    assert all(e["name"] is None for e in ended)
    # a handful of pedestrians walk through: far fewer tracks than detections, and not one per frame
    assert 3 <= len(started) <= 25, len(started)


@pytest.mark.slow
def test_broker_down_at_start_every_event_arrives(tmp_path, mosquitto, analyzer):
    # retry the broker every second (the default backoff grows to a minute)
    cfg = agent_config(tmp_path, mosquitto, mqtt_settings={"reconnect_max_delay": 1.0})
    enroll(cfg, analyzer)
    collector = Collector(mosquitto, "faces/events").start()  # persistent session: the broker keeps it
    mosquitto.stop()
    # paced at the clip's 30 fps like a camera (~9 s): the agent processes the whole clip in ~2 s, before the
    # broker is back, and a shutdown while disconnected leaves the events for the next start (not this test)
    service = Service(cfg, source_uri=str(HAMILTON), every_frame=False, analyzer=analyzer)
    thread = threading.Thread(target=service.run)
    thread.start()
    deadline = time.monotonic() + 120
    while service.stats.events < 3 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert service.stats.events >= 3, "events were logged while the broker was down"
    mosquitto.start()
    thread.join(300)
    assert not thread.is_alive()
    logged = {e["event_id"] for e in stored_events(cfg)}
    got = collector.wait_for(lambda msgs: logged <= {json.loads(m.text)["event_id"] for m in msgs}, 60)
    assert got, "some logged events never reached the subscriber"
    collector.stop()


def run_cli(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_sigterm_ends_tracks_and_keeps_every_event(tmp_path, mosquitto, analyzer):
    cfg = agent_config(tmp_path, mosquitto)
    enroll(cfg, analyzer)
    (tmp_path / "agent.toml").write_text(
        f'[agent]\nid = "test-agent"\n[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n')
    collector = Collector(mosquitto, "faces/events").start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "run",
                             "--source", str(HAMILTON)], cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                            text=True)
    assert collector.wait_for(lambda msgs: any(json.loads(m.text)["type"] == "track_started" for m in msgs),
                              240), "no event before SIGTERM"
    assert proc.poll() is None, "the clip ended before SIGTERM: the test would not test SIGTERM"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = stored_events(cfg)
    started = {e["track_id"] for e in events if e["type"] == "track_started"}
    ended = {e["track_id"] for e in events if e["type"] == "track_ended"}
    assert started and started == ended, "live tracks are ended on shutdown"
    ids = {e["event_id"] for e in events}
    assert collector.wait_for(lambda msgs: ids <= {json.loads(m.text)["event_id"] for m in msgs}, 30)
    collector.stop()


@pytest.mark.parametrize("toml, words", [
    ('[mqtt]\nhots = "x"\n', "unknown key"),
    ('[mqtt]\nport = "1883"\n', "expected an integer"),
    ('[detector]\nbackend = "gpu"\n', "not one of"),
    ('[mqtt]\ntls = true\nca_file = "missing-ca.pem"\n', "does not exist"),
    ('[tracker\n', "not valid TOML"),
])
def test_bad_configuration_is_one_clear_error(tmp_path, toml, words):
    (tmp_path / "agent.toml").write_text(toml)
    result = run_cli(["-c", "agent.toml", "run", "--source", str(HAMILTON)], tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_missing_source_is_one_clear_error(tmp_path):
    (tmp_path / "agent.toml").write_text("[mqtt]\nenabled = false\n")
    result = run_cli(["-q", "-c", "agent.toml", "run", "--source", str(tmp_path / "nope.mp4")], tmp_path)
    assert result.returncode == 2 and "nope.mp4" in result.stderr, result.stderr


def test_unreachable_broker_keeps_events_pending(tmp_path, analyzer):
    from broker import free_port

    cfg = make_config(tmp_path, mqtt={"host": "127.0.0.1", "port": free_port(), "shutdown_timeout": 1.0})
    enroll(cfg, analyzer, with_lin=True)
    service = Service(cfg, source_uri=str(HAMILTON), every_frame=True, max_frames=60, analyzer=analyzer)
    assert service.run() == 0
    store = EventStore(cfg)
    assert store.count() > 0 and store.count("pending") == store.count()
    store.close()


def test_a_retrain_here_and_one_by_the_enroll_command_are_each_swapped_in_once(tmp_path, analyzer, cli):
    """One swap path (Service._reload_classifier: the classifier file is the truth): a retrain in the agent's
    process (remote enrollment's worker, then its callback) and one by `face-agent enroll` while the agent runs
    (the health check's look at the file) both reach the cameras, each once with one model_updated event,
    whichever of the two triggers sees the new file first."""
    cfg = make_config(tmp_path, mqtt={"enabled": False})  # the folders the cli fixture's agent.toml names
    enroll(cfg, analyzer, with_lin=False)
    service = Service(cfg, source_uri=str(HAMILTON), analyzer=analyzer)
    service.load()
    try:
        def updates() -> list[dict]:
            return [e for e in stored_events(cfg) if e["type"] == "model_updated"]

        assert updates() == [] and "lin" not in service.pipeline.classifier.people
        # in this process: what the enrollment worker does (it saves the file), then its callback
        service.gallery.add_photos("lin", [FR / "examples" / "lin-manuel-miranda.png"])
        classifier, _, retrained = service.gallery.ensure_trained(progress=False)
        assert retrained
        service._on_model_updated(classifier, {})
        assert "lin" in service.pipeline.classifier.people and len(updates()) == 1
        service._reload_classifier()  # the next health check: the same file, nothing new
        assert len(updates()) == 1
        # another process: `face-agent enroll PERSON IMAGE...` while the agent runs
        code, _, err = cli("enroll", "alex", str(FR / "examples" / "alex-lacamoire.png"))
        assert code == 0, err
        assert "alex" not in service.pipeline.classifier.people  # not before the agent looks
        service._reload_classifier()  # the health check
        assert "alex" in service.pipeline.classifier.people and len(updates()) == 2
        assert "alex" in updates()[-1]["people"]
        service._on_model_updated(classifier, {})  # a late callback of the older retrain changes nothing
        assert "alex" in service.pipeline.classifier.people and len(updates()) == 2
    finally:
        service.shutdown()
