"""Area shrinking through halvings (agent/vision/shrink.py), the P-Net octaves built on it, and the video's
pyramid floor ([tracker] track_small_faces): the same picture at a fraction of the cost, and full detections
that look only for faces the tracker can embed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.config import config_from_dict
from agent.vision.mtcnn import PNET_CELL, octaves
from agent.vision.pipeline import Pipeline
from agent.vision.recognizer import FaceAnalyzer
from agent.vision.shrink import halve, shrink
from agent.vision.tracker import SCENE_SIZE, Tracker, scene_signature


def frame(height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    noise = rng.normal(0, 20, size=(height, width, 3))
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) + noise, 0, 255).astype(np.uint8)


def test_halve_is_the_rounded_mean_of_each_2x2_block():
    img = frame(37, 51)  # odd sides: the last row and column are left out
    half = halve(img)
    assert half.shape == (18, 25, 3)
    blocks = img[:36, :50].astype(np.float64).reshape(18, 2, 25, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - blocks).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("size", [SCENE_SIZE, (320, 180), (200, 113), (1280, 720), (1000, 600)])
def test_shrink_is_the_area_average_within_a_grey_level(size):
    img = frame()
    want = cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.int16)
    got = shrink(img, size)
    assert got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.int16) - want).max() <= 1  # the halvings' rounding


def test_scene_signature_comes_through_the_halvings():
    img = frame(seed=3)
    direct = cv2.resize(img, SCENE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=2)
    assert np.abs(scene_signature(img) - direct).max() <= 1.0  # [tracker] cut_threshold is 20 grey levels


def test_octaves_halve_down_to_the_pnet_window():
    levels = octaves(frame())
    assert [o.shape[:2] for o in levels] == [(360, 640), (180, 320), (90, 160), (45, 80), (22, 40)]
    assert min(levels[-1].shape[:2]) >= PNET_CELL > min(levels[-1].shape[:2]) // 2


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    cfg = config_from_dict({"detector": {"backend": "onnxruntime"}}, base_dir=tmp_path_factory.mktemp("floor"))
    return FaceAnalyzer(cfg)


@pytest.mark.parametrize("tracker, camera_floor, want", [
    ({}, None, 28),  # the defaults: the tracker embeds from 28 px ([tracker] min_face_size, verify_min_face_size)
    ({"min_face_size": 40, "verify_min_face_size": 28}, None, 28),  # the smaller of the two: verification
    ({"min_face_size": 24, "verify_min_face_size": 24}, 30, 30),  # a camera's own larger floor stays
    ({"track_small_faces": True}, None, None),  # the detector's own [detector] min_face_size (20)
    ({"track_small_faces": True}, 26, 26),
])
def test_full_detections_look_for_faces_the_tracker_can_embed(analyzer, tracker, camera_floor, want):
    cfg = config_from_dict({"tracker": tracker})
    pipeline = Pipeline(analyzer, Tracker(cfg.tracker, cfg.voting), min_face_size=camera_floor)
    assert pipeline.pyramid_floor == want
    request = pipeline._detect_request(frame(360, 640))  # the first frame: a full detection
    assert request is not None and request.boxes is None and request.min_face_size == want
