"""The motion gate and the cut-off check on real pictures (agent.vision.motion, Aligner.in_frame).

The gate lets the full detector skip a frame of a camera where nobody is tracked only while nothing in the
picture changed: a still scene under a camera's noise and JPEG compression stays still, a face of the
detector's smallest size (20 px) coming in anywhere is seen. The service-level effect (the same names on
a door clip with the detector skipped where nobody is) is in tests/test_identity_clips.py.
"""

from __future__ import annotations

import cv2
import dlib
import numpy as np
import pytest

from agent.vision.align import PADDING
from agent.vision.embed import CHIP_SIZE
from agent.vision.motion import MotionGate
from bench import identity_clips as ic

THRESHOLD = 8.0  # agent.toml's [tracker] motion_threshold


def camera(scene: np.ndarray, rng: np.random.Generator, sigma: float = 8.0) -> np.ndarray:
    """The scene as a dim camera delivers it: sensor noise, then JPEG."""
    noisy = np.clip(scene + rng.normal(0, sigma, scene.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def faces():
    if not ic.LFW.is_dir():
        pytest.skip(f"{ic.LFW} not found")
    out = []
    for person in ic.lfw_people()[:12]:
        rgb = cv2.cvtColor(cv2.imread(str(ic.lfw_photos(person)[0])), cv2.COLOR_BGR2RGB)
        out.append(rgb[70:180, 70:180])
    return out


def test_a_still_scene_is_still_and_a_small_face_coming_in_is_not(faces):
    rng = np.random.default_rng(1)
    for seed in range(1, 4):
        scene = ic.background(seed)
        gate = MotionGate(THRESHOLD, recheck_every=1000)
        assert not gate.still(camera(scene, rng), 0)  # the first frame is always detected
        assert all(gate.still(camera(scene, rng), frame) for frame in range(5, 200, 5))
        assert gate.skipped == 39
        for k, face in enumerate(faces):
            x, y = int(rng.integers(0, 620)), int(rng.integers(0, 340))
            frame = scene.copy()
            frame[y:y + 20, x:x + 20] = cv2.resize(face, (20, 20), interpolation=cv2.INTER_AREA)
            assert not gate.still(camera(frame, rng), 1000 + k)  # it came in: detect (and it is the reference now)
            assert gate.still(camera(frame, rng), 1001 + k)  # the same picture again: still
            gate.detected(camera(scene, rng), 1002 + k)  # back to the empty scene as the reference


def test_a_slow_change_adds_up_and_the_recheck_comes_anyway():
    """The comparison is with the last detected frame, not the frame before: a change too small from one
    frame to the next still adds up. And with nothing moving at all the detector runs every recheck_every."""
    scene = ic.background(2).astype(np.float64)
    gate = MotionGate(THRESHOLD, recheck_every=1000)
    assert not gate.still(scene.astype(np.uint8), 0)
    detected = []
    for frame in range(1, 40):
        moved = scene.copy()
        moved[100:140, 100:140] += frame * 1.0  # one grey level more each frame
        if not gate.still(np.clip(moved, 0, 255).astype(np.uint8), frame):
            detected.append(frame)
    assert detected and detected[0] <= THRESHOLD + 2
    gate = MotionGate(THRESHOLD, recheck_every=50)
    still = scene.astype(np.uint8)
    ran = [frame for frame in range(0, 500, 5) if not gate.still(still, frame)]
    assert ran == list(range(0, 500, 50))
    assert not MotionGate(0.0, recheck_every=50).still(still, 5)  # 0: the gate is off


def test_in_frame_is_the_share_of_the_chip_inside_the_image(analyzer, faces):
    """Aligner.in_frame against dlib itself: the share of non-black pixels of the chip of a white image."""
    photos = [cv2.cvtColor(cv2.imread(str(ic.lfw_photos(p)[0])), cv2.COLOR_BGR2RGB) for p in ic.lfw_people()[:8]]
    shares = []
    for rgb in photos:
        for cut in (0, 40, 70, 95):
            image = np.ascontiguousarray(rgb[:, cut:])
            found = analyzer.detect(image)
            if not found:
                continue
            face = min(found, key=lambda d: abs((d.x1 + d.x2) / 2 - (125 - cut)))
            share = float(analyzer.aligner.in_frame(image, [face.box])[0])
            dets = dlib.full_object_detections()
            dets.extend(analyzer.aligner.shapes(image, [face.box]))
            white = dlib.get_face_chips(np.full_like(image, 255), dets, size=CHIP_SIZE, padding=PADDING)[0]
            assert share == pytest.approx(float((np.asarray(white)[:, :, 0] > 0).mean()), abs=0.04)
            shares.append((cut, share))
    assert all(share > 0.99 for cut, share in shares if cut == 0)
    assert any(share < 0.9 for cut, share in shares if cut >= 70)
    assert len(analyzer.aligner.in_frame(photos[0], [])) == 0
