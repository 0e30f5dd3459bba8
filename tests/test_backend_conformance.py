"""Conformance suite every MTCNN backend must pass: the same raw network outputs and the same faces
(boxes, landmarks, scores) as the reference - the ONNX Runtime backend driving MTCNN - on shared photos.

Backends: ONNX Runtime; the watchdog wrapper (healthy, and degraded to its CPU fallback); TensorRT in fp16
and in fp32, built exactly as production builds it - behind the watchdog (GuardedRunner, worker thread,
timeout) - marked `gpu` (deselected by default; on a Jetson run `pytest -m gpu`) and skipped unless a
supported TensorRT, pycuda and a CUDA GPU are all there (`tensorrt_status()`). Every TensorRT comparison
first checks that the wrapper is still on the GPU: a silent fall-back to the CPU would pass vacuously.

Stated tolerances (CPU backends match exactly; TensorRT needs the slack in both precisions: fp16 has ~3
significant digits, and TensorRT's "fp32" lets convolutions use TF32 - 10-bit mantissas - by default):
- raw outputs: |difference| <= RAW_ATOL (CPU 1e-4, TensorRT 0.02);
- faces: every face scoring >= STRONG (0.95) in either result is matched (IoU >= 0.8) in the other;
  matched boxes and landmarks within max(POINT_PX, POINT_FRAC x face size), scores within SCORE_ATOL.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from conftest import COMPREFACE, FR, SHARED

from agent.images import load_image
from agent.vision.backends import RunnerError, create_mtcnn_runner
from agent.vision.backends.onnxruntime import OnnxRuntimeMtcnnRunner
from agent.vision.backends.watchdog import GuardedRunner
from agent.vision.mtcnn import MTCNN, pnet_input_shapes

FRAME = (480, 640)  # (height, width): photos are letterboxed into camera-like frames of this size
STRONG = 0.95
# the published MTCNN settings (every candidate the cascade keeps, none cut at min_score): the most faces
# to compare between backends
REFERENCE = dict(thresholds=(0.6, 0.7, 0.7), min_score=0.0)
MIN_IOU = 0.8
POINT_PX = 2.0
POINT_FRAC = 0.03
SCORE_ATOL = {"cpu": 1e-5, "tensorrt": 0.02}
RAW_ATOL = {"cpu": 1e-4, "tensorrt": 0.02}

PHOTOS = [
    FR / "tests" / "test_images" / "obama.jpg",  # 1 face
    FR / "examples" / "two_people.jpg",  # 2 faces
    COMPREFACE / "embedding-calculator" / "sample_images" / "000_5.jpg",  # 5 faces
    SHARED / "facenet-pytorch" / "data" / "multiface.jpg",  # 6 faces
    SHARED / "openface" / "images" / "examples" / "longoria-cooper.jpg",  # 2 faces, portrait
    COMPREFACE / "embedding-calculator" / "sample_images" / "017_0.jpg",  # no face
]


def _tensorrt_usable() -> tuple[bool, str]:
    """A supported TensorRT, pycuda and a CUDA GPU (a missing piece skips, it does not error)."""
    from agent.vision.backends.trt_probe import tensorrt_status

    return tensorrt_status()


class _Broken:
    name = "broken-gpu"

    def run(self, net, batch):
        raise RuntimeError("CUDA error: device lost")

    def close(self):
        pass


@contextlib.contextmanager
def _backend(kind: str, tmp_path_factory) -> Iterator:
    if kind == "onnxruntime":
        backend = create_mtcnn_runner("onnxruntime", threads=2)
    elif kind == "guarded":
        backend = GuardedRunner(OnnxRuntimeMtcnnRunner, OnnxRuntimeMtcnnRunner, timeout=30.0)
    elif kind == "guarded-degraded":
        backend = GuardedRunner(_Broken, OnnxRuntimeMtcnnRunner, timeout=30.0)
        assert backend.degraded is False
    elif kind.startswith("tensorrt-"):
        from agent.vision.backends.tensorrt import create_tensorrt_mtcnn_runner

        engines = tmp_path_factory.mktemp("engines")
        # the production path: GuardedRunner around TensorRTMtcnnRunner (worker thread, timeout, CPU fallback)
        backend = create_tensorrt_mtcnn_runner(engines_dir=engines, input_size=FRAME, max_batch=64,
                                               precision=kind.split("-", 1)[1], inference_timeout=30.0,
                                               request_restart=None)
        assert isinstance(backend, GuardedRunner)
        assert not backend.degraded, f"TensorRT did not start: {backend.degraded_reason}"
    else:  # pragma: no cover
        raise AssertionError(kind)
    try:
        yield backend
    finally:
        backend.close()


_TRT_OK, _TRT_WHY = _tensorrt_usable()
_GPU = [pytest.mark.gpu, pytest.mark.skipif(not _TRT_OK, reason=f"no TensorRT GPU here: {_TRT_WHY}")]

BACKENDS = [
    "onnxruntime",
    "guarded",
    "guarded-degraded",
    pytest.param("tensorrt-fp16", marks=_GPU),
    pytest.param("tensorrt-fp32", marks=_GPU),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory):
    with _backend(request.param, tmp_path_factory) as b:
        b.kind = request.param
        yield b


@pytest.fixture(scope="module")
def reference_backend():
    b = OnnxRuntimeMtcnnRunner()
    yield b
    b.close()


def _family(backend) -> str:
    if not backend.kind.startswith("tensorrt"):
        return "cpu"
    # still on the GPU: a degraded wrapper would compare the CPU with itself and pass vacuously
    assert backend.name == "tensorrt" and not backend.degraded, backend.status()
    return "tensorrt"


def letterbox(rgb: np.ndarray, size: tuple[int, int] = FRAME) -> np.ndarray:
    """The photo scaled to fit size (h, w), centred on black: a camera-sized frame."""
    h, w = rgb.shape[:2]
    f = min(size[0] / h, size[1] / w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    frame = np.zeros((*size, 3), np.uint8)
    y, x = (size[0] - nh) // 2, (size[1] - nw) // 2
    frame[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return frame


# ------------------------------------------------------------------------------------------------------
# raw network outputs
# ------------------------------------------------------------------------------------------------------

def _rng_batch(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize(("net", "shape"), [
    ("rnet", (1, 3, 24, 24)), ("rnet", (7, 3, 24, 24)), ("rnet", (150, 3, 24, 24)),  # > max_batch: chunked
    ("onet", (1, 3, 48, 48)), ("onet", (5, 3, 48, 48)), ("onet", (130, 3, 48, 48)),
])
def test_rnet_onet_outputs(backend, reference_backend, net, shape):
    batch = _rng_batch(shape)
    out = backend.run(net, batch)
    ref = reference_backend.run(net, batch)
    assert len(out) == len(ref) == (3 if net == "onet" else 2)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=RAW_ATOL[_family(backend)], rtol=0)
    np.testing.assert_allclose(out[0].sum(axis=1), 1.0, atol=1e-3)  # softmax probabilities


def test_pnet_outputs_on_every_pyramid_shape(backend, reference_backend):
    for i, (h, w) in enumerate(pnet_input_shapes(*FRAME)):
        batch = _rng_batch((1, 3, h, w), seed=i)
        out = backend.run("pnet", batch)
        ref = reference_backend.run("pnet", batch)
        assert len(out) == 2
        for a, b in zip(out, ref, strict=True):
            # conv 3x3, max-pool 2x2 (ceil), conv 3x3, conv 3x3
            assert a.dtype == np.float32 and a.shape == b.shape
            assert a.shape[2:] == (math.ceil((h - 2) / 2) - 4, math.ceil((w - 2) / 2) - 4)
            np.testing.assert_allclose(a, b, atol=RAW_ATOL[_family(backend)], rtol=0)
    if backend.kind.startswith("tensorrt"):
        assert backend.active._overflow is None  # every pyramid shape ran on the GPU engine


def test_protocol_errors(backend):
    with pytest.raises(RunnerError):
        backend.run("xnet", _rng_batch((1, 3, 24, 24)))
    with pytest.raises(RunnerError):
        backend.run("rnet", _rng_batch((1, 3, 48, 48)))


# ------------------------------------------------------------------------------------------------------
# faces on shared photos
# ------------------------------------------------------------------------------------------------------

def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _match(found, expected, family):
    """Every strong face of `expected` matched in `found` within the tolerances."""
    for e in (d for d in expected if d.score >= STRONG):
        best = max(found, key=lambda d: _iou(d.box, e.box), default=None)
        assert best is not None and _iou(best.box, e.box) >= MIN_IOU, f"face {e.box} not found"
        tol = max(POINT_PX, POINT_FRAC * max(e.width, e.height))
        np.testing.assert_allclose(best.box, e.box, atol=tol, rtol=0)
        np.testing.assert_allclose(best.landmarks, e.landmarks, atol=tol, rtol=0)
        assert abs(best.score - e.score) <= SCORE_ATOL[family]


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_same_faces_as_the_reference(backend, reference_backend, photo, shared):
    frame = letterbox(load_image(photo))
    reference = MTCNN(reference_backend, **REFERENCE).detect(frame)
    found = MTCNN(backend, **REFERENCE).detect(frame)
    family = _family(backend)
    _match(found, reference, family)
    _match(reference, found, family)
    if family == "cpu":
        assert len(found) == len(reference)


def test_reference_finds_the_documented_faces(reference_backend, shared):
    """Guard against a vacuous suite: the reference itself finds the faces the photos are known to hold."""
    detector = MTCNN(reference_backend, **REFERENCE)
    counts = {p.name: sum(d.score >= STRONG for d in detector.detect(letterbox(load_image(p)))) for p in PHOTOS}
    assert counts["obama.jpg"] == 1 and counts["two_people.jpg"] == 2
    assert counts["000_5.jpg"] == 5 and counts["017_0.jpg"] == 0
    assert counts["multiface.jpg"] >= 5 and counts["longoria-cooper.jpg"] == 2


def test_degraded_wrapper_really_is_degraded(tmp_path_factory):
    with _backend("guarded-degraded", tmp_path_factory) as b:
        b.run("rnet", _rng_batch((2, 3, 24, 24)))
        assert b.degraded and b.name == "onnxruntime" and "device lost" in b.degraded_reason
