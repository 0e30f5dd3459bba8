"""What the running agent does for the web console: the live frame ([service] live_frame_interval), the
backend in its status, and a classifier retrained by another process (the console) swapped in without a
restart. Real clip, real models, real files."""

from __future__ import annotations

import threading
import time

from conftest import FR, make_config
from PIL import Image

from agent import health
from agent.frame_output import LIVE_FRAME
from agent.gallery import Gallery
from agent.service import Service
from agent.store import EventStore

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"
KNN_TRAIN = FR / "examples" / "knn_examples" / "train"


def test_live_frame_is_off_by_default(tmp_path, analyzer):
    cfg = make_config(tmp_path, mqtt={"enabled": False})
    assert Service(cfg, source_uri=str(HAMILTON), every_frame=True, max_frames=5, analyzer=analyzer).run() == 0
    assert not (cfg.path("storage") / LIVE_FRAME).exists()


def test_live_frame_and_a_classifier_retrained_elsewhere_reach_the_running_agent(tmp_path, analyzer):
    cfg = make_config(tmp_path, mqtt={"enabled": False}, service={"live_frame_interval": 0.2, "status_interval": 0.2},
                      agent={"camera_name": "stage"})
    first = Gallery(cfg, analyzer=analyzer)
    for person in ("obama", "biden"):
        first.add_photos(person, sorted((KNN_TRAIN / person).iterdir()))
    first.ensure_trained(progress=False)
    first.close()

    service = Service(cfg, source_uri=str(HAMILTON), every_frame=True, analyzer=analyzer)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        live = cfg.path("storage") / LIVE_FRAME
        deadline = time.monotonic() + 60
        while not live.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with Image.open(live) as img:  # the annotated frame, at the clip's size
            assert img.format == "JPEG" and img.size == (640, 360)
        # the console (another process in real life): enroll Lin through the gallery and retrain
        console = Gallery(cfg, analyzer=analyzer)
        console.add_photos("lin", [FR / "examples" / "lin-manuel-miranda.png"])
        console.ensure_trained(progress=False)
        console.close()
        deadline = time.monotonic() + 30
        while "lin" not in (service.pipeline.classifier.people if service.pipeline else []) \
                and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.05)
        assert "lin" in service.pipeline.classifier.people  # swapped in while the video loop ran
    finally:
        service.stop()
        runner.join(60)
    status = health.read_status(health.status_path(cfg))
    assert status["stats"]["backend"]  # e.g. "onnxruntime": the Live page shows it
    store = EventStore(cfg)
    try:
        updates = [r.event() for r in store.query(type="model_updated", limit=None)]
    finally:
        store.close()
    assert any("lin" in e.to_dict()["people"] for e in updates)
