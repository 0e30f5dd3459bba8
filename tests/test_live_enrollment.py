"""Remote enrollment into a RUNNING agent: the service watches a clip while a signed `add` arrives over a
real mosquitto; the classifier is retrained in the background and swapped in between frames, and the new
person is named in the frames that follow. `bench/bench_live_enroll.py` reuses `live_enrollment_run` to
measure the frame rate before and during the retraining."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import paho.mqtt.client as paho
from conftest import FR, make_config
from paho.mqtt.enums import CallbackAPIVersion

from agent.service import Service
from agent.store import EventStore
from agent.sync import enrollment_protocol as proto

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"
LIN = FR / "examples" / "lin-manuel-miranda.png"
KEY = bytes.fromhex("a7" * 32)


def clip_folder(folder: Path, first: int = 0, last: int = 150, repeats: int = 3) -> Path:
    """Frames first..last of the Hamilton clip (Lin on stage), written `repeats` times as JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(HAMILTON))
    frames = []
    for i in range(last):
        ok, frame = cap.read()
        if not ok:
            break
        if i >= first:
            frames.append(frame)
    cap.release()
    n = 0
    for _ in range(repeats):
        for frame in frames:
            cv2.imwrite(str(folder / f"frame{n:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
            n += 1
    return folder


def live_enrollment_run(work: Path, broker, analyzer=None, send_after_frames: int = 30, repeats: int = 3) -> dict:
    """Run the service on the clip folder (150 frames, `repeats` times); send a signed `add lin` after
    `send_after_frames` frames and 2 s of measuring the frame rate.

    Returns the events, the frame counts/times around the retraining, and the service's stats.
    """
    work.mkdir(parents=True, exist_ok=True)
    keyfile = work / "enroll.keys"
    keyfile.write_text(f"ops:{KEY.hex()}\n")
    keyfile.chmod(0o600)
    cfg = make_config(work, agent={"id": "live-agent"},
                      mqtt={"host": broker.host, "port": broker.port},
                      remote_enroll={"key_file": str(keyfile), "debounce": 0.5})
    frames = clip_folder(work / "frames", repeats=repeats)
    service = Service(cfg, source_uri=str(frames), every_frame=True, analyzer=analyzer)
    runner = threading.Thread(target=service.run, name="service")
    runner.start()
    start = time.monotonic()
    while service.stats.frames < send_after_frames and runner.is_alive():
        time.sleep(0.02)
    # frames per second before: measured over the frames just before the request
    before_frames, before_t = service.stats.frames, time.monotonic()
    time.sleep(2.0)
    sent_frames, sent_t = service.stats.frames, time.monotonic()
    operator = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    operator.connect(broker.host, broker.port)
    operator.loop_start()
    request = proto.build_request("add", "ops", KEY, person="lin", images=[(LIN.name, LIN.read_bytes())])
    operator.publish("faces/enroll", proto.encode(request), qos=1).wait_for_publish(10)
    swapped_frames = swapped_t = None
    while runner.is_alive():
        clf = service.pipeline.classifier if service.pipeline else None
        if swapped_t is None and clf is not None and "lin" in clf.people:
            swapped_frames, swapped_t = service.stats.frames, time.monotonic()
        time.sleep(0.02)
    runner.join()
    operator.loop_stop()
    operator.disconnect()
    store = EventStore(cfg)
    events = [json.loads(r.payload) for r in store.query(limit=None)]
    store.close()
    return {
        "events": events, "frames": service.stats.frames, "seconds": time.monotonic() - start,
        "fps_before": (sent_frames - before_frames) / (sent_t - before_t),
        "fps_during": ((swapped_frames - sent_frames) / (swapped_t - sent_t)) if swapped_t else None,
        "retrain_seconds": (swapped_t - sent_t) if swapped_t else None,
        "request_id": request["request_id"],
    }


def test_remote_enrollment_into_a_running_agent(tmp_path, mosquitto, analyzer):
    # 1500 frames: the agent reads ~200 a second here, so 450 could all be done before the retrained model
    # arrives (2 s of measuring, then the retrain) and nobody would be left to name
    run = live_enrollment_run(tmp_path, mosquitto, analyzer, repeats=10)
    events = run["events"]
    assert run["frames"] == 1500
    updates = [e for e in events if e["type"] == "model_updated"]
    assert updates and "lin" in updates[-1]["people"], updates
    swapped_at = updates[-1]["timestamp"]
    named = [e for e in events if e["type"] == "identified" and e["name"] == "lin"]
    assert named, "the newly enrolled person is named in the frames after the swap"
    assert all(e["timestamp"] >= swapped_at for e in named), "nobody was named lin before enrollment"
    assert run["retrain_seconds"] is not None
