"""The docs say what the code does: examples and figures come from real runs and are checked against them."""

from __future__ import annotations

import json
import re

import pytest
from conftest import DLIB, FR, ROOT, make_config

from agent.events import validate_event
from agent.gallery import Gallery
from agent.service import Service
from agent.store import EventStore

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"
KNN_TRAIN = FR / "examples" / "knn_examples" / "train"


def doc_examples() -> list[dict]:
    text = (ROOT / "docs" / "events.md").read_text()
    block = text.split("## Examples", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return [json.loads(line) for line in block.strip().splitlines()]


def shape(event: dict) -> dict:
    """Which fields an event has, and which of them are null."""
    return {key: value is None for key, value in event.items()}


@pytest.mark.slow
def test_event_examples_have_the_fields_and_nulls_of_real_events(tmp_path, analyzer):
    cfg = make_config(tmp_path, mqtt={"enabled": False}, agent={"id": "edge-1", "camera_name": "front door"})
    gallery = Gallery(cfg, analyzer=analyzer)
    gallery.add_photos("lin", [FR / "examples" / "lin-manuel-miranda.png"])
    for person in ("obama", "biden"):
        gallery.add_photos(person, sorted((KNN_TRAIN / person).iterdir()))
    assert Service(cfg, source_uri=str(HAMILTON), every_frame=True, analyzer=analyzer).run() == 0
    store = EventStore(cfg)
    real = [json.loads(r.payload) for r in store.query(limit=None)]
    store.close()
    examples = doc_examples()
    assert {e["type"] for e in examples} - {"reidentified"} == {e["type"] for e in real} == {
        "track_started", "identified", "unknown_face", "track_ended", "model_updated"}
    real_shapes = {(e["type"], json.dumps(shape(e), sort_keys=True)) for e in real}
    for example in examples:
        if example["type"] == "reidentified":  # needs a retrain after unknown sightings: tests/test_sightings.py
            validate_event(example)
            continue
        validate_event(example)
        assert (example["type"], json.dumps(shape(example), sort_keys=True)) in real_shapes, \
            f"no real {example['type']} event looks like the documented one: {example}"
    # what the field table says about confidence and votes
    for e in real:
        if e["type"] == "track_ended":
            assert e["confidence"] is None and isinstance(e["votes"], int)
            assert (e["best_confidence"] is None) == (e["votes"] == 0)
        if e["type"] == "unknown_face":
            assert e["name"] is None
            if e["votes"]:
                assert 0.5 <= e["confidence"] <= 1
            else:  # attempts ran out without a vote for unknown (faces too poor to recognise)
                assert e["confidence"] is None


def test_evaluation_doc_gives_the_tools_detection_figures(analyzer, tmp_path):
    from agent.evaluation.detections import evaluate_detections

    cfg = make_config(tmp_path)
    r = evaluate_detections(DLIB / "examples" / "faces" / "testing.xml", analyzer, cfg)
    text = (ROOT / "docs" / "evaluation.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| dlib `faces/testing.xml`"))
    tp, fp, faces = r["true_positives"], r["false_positives"], r["faces"]
    assert f"recall {tp}/{faces} = {100 * r['recall']:.0f}%" in line, line
    assert f"precision {tp}/{tp + fp} = {100 * r['precision']:.0f}%" in line, line
    assert f"mean IoU {r['mean_iou']:.2f}" in line, line


def test_readme_describes_both_landmark_arrays_in_their_real_order(analyzer):
    from agent.images import load_image

    readme = (ROOT / "README.md").read_text()
    flat = " ".join(readme.split())
    assert "`landmarks` (MTCNN's): left eye, right eye, nose tip, left mouth corner, right mouth corner" in flat
    assert ("`dlib_landmarks` (dlib's 5-point model, the ones alignment uses): outer then inner corner of the eye "
            "on the image's right, outer then inner corner of the eye on the image's left, bottom of the nose") in flat
    assert not re.search(r"identify group\.jpg .*landmarks", readme)  # the text output has none
    face = analyzer.identify(load_image(FR / "examples" / "obama.jpg"))[0].to_dict()
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face["landmarks"]
    assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)
    (o1, _), (i1, _), (o2, _), (i2, _), (bx, by) = face["dlib_landmarks"]
    assert o1 > i1 > bx > i2 > o2  # right eye (outer, inner), left eye (outer, inner), x decreasing to the left
    assert by > max(p[1] for p in face["dlib_landmarks"][:4])  # the nose is below the eyes
