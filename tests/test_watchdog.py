"""The inference watchdog with backends that really stall (sleep) or raise, and a real ONNX Runtime fallback.

Timing assertions are bounds with generous margins (a stalled call must come back, not hang), never
speed measurements.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from conftest import FR

from agent.vision.backends import BackendError
from agent.vision.backends.onnxruntime import OnnxRuntimeBackend
from agent.vision.backends.watchdog import GuardedBackend
from agent.vision.images import load_image
from agent.vision.mtcnn import MTCNN

TIMEOUT = 0.5
MARGIN = 3.0  # scheduling + loading the ONNX Runtime fallback on a busy 2-core machine


class SleepingBackend:
    """Answers correctly (through ONNX Runtime) but, once `stall_after` calls have passed, blocks in run()
    for `stall` seconds - a real stall of the calling thread, like a wedged GPU call."""

    name = "sleeping"

    def __init__(self, stall: float = 30.0, stall_after: int = 0, release: threading.Event | None = None):
        self.stall = stall
        self.stall_after = stall_after
        self.release = release or threading.Event()
        self.calls = 0
        self.closed = False
        self.inner = OnnxRuntimeBackend(threads=1)

    def run(self, net, batch):
        self.calls += 1
        if self.calls > self.stall_after:
            self.release.wait(self.stall)  # sleeps; the test's teardown sets it so threads end
        return self.inner.run(net, batch)

    def close(self):
        self.closed = True
        self.inner.close()


class FailingBackend:
    """Raises like a GPU backend whose CUDA context died."""

    name = "failing"

    def __init__(self, fail_after: int = 0):
        self.fail_after = fail_after
        self.calls = 0
        self.closed = False
        self.inner = OnnxRuntimeBackend(threads=1)

    def run(self, net, batch):
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("CUDA error 700: an illegal memory access was encountered")
        return self.inner.run(net, batch)

    def close(self):
        self.closed = True


class Factory:
    """A backend factory that records how often it was called; `kinds` says what each call returns."""

    def __init__(self, *makers):
        self.makers = list(makers)
        self.calls = 0
        self.made: list = []

    def __call__(self):
        maker = self.makers[min(self.calls, len(self.makers) - 1)]
        self.calls += 1
        backend = maker()
        self.made.append(backend)
        return backend


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # let abandoned worker threads finish


@pytest.fixture(scope="module")
def photo():
    return load_image(FR / "examples" / "two_people.jpg")


@pytest.fixture(scope="module")
def reference(photo):
    backend = OnnxRuntimeBackend()
    try:
        return MTCNN(backend).detect(photo)
    finally:
        backend.close()


def _same(detections, reference):
    assert len(detections) == len(reference) >= 2
    for a, b in zip(detections, reference, strict=True):
        assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) < 1e-5
        assert np.allclose(a.landmarks, b.landmarks, atol=1e-3)


def _pnet_batch():
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, 40, 50)).astype(np.float32)


def test_stall_rebuild_stall_then_cpu_fallback(release, photo, reference, caplog):
    primary = Factory(lambda: SleepingBackend(release=release))
    fallback = Factory(OnnxRuntimeBackend)
    reports: list[str] = []
    guarded = GuardedBackend(primary, fallback, timeout=TIMEOUT, on_degraded=reports.append)
    assert guarded.name == "sleeping" and not guarded.degraded
    caplog.set_level(logging.ERROR, logger="agent.vision.backends.watchdog")

    start = time.monotonic()
    out = guarded.run("pnet", _pnet_batch())
    elapsed = time.monotonic() - start
    # stall (timeout) + rebuild + stall again (timeout) + fallback load: never the 30 s of the stall
    assert elapsed < 2 * TIMEOUT + MARGIN, elapsed
    assert elapsed >= 2 * TIMEOUT
    assert primary.calls == 2 and guarded.rebuilds == 1  # rebuilt exactly once
    assert fallback.calls == 1 and guarded.degraded and guarded.name == "onnxruntime"
    assert len(reports) == 1 and "stalled" in reports[0] and "pnet" in reports[0]
    assert "(1, 3, 40, 50)" in reports[0]  # batch shape in the context
    expected = OnnxRuntimeBackend().run("pnet", _pnet_batch())
    assert all(np.array_equal(a, b) for a, b in zip(out, expected, strict=True))
    logged = [r.getMessage() for r in caplog.records]
    assert any("stalled on batch (1, 3, 40, 50) after 0.5" in m for m in logged), logged
    assert any("degraded" in m for m in logged)
    # the stalled workers are abandoned daemon threads, not joined
    stuck = [t for t in threading.enumerate() if t.name.startswith("inference-primary")]
    assert stuck and all(t.daemon for t in stuck)
    # stalled backends are not closed (their thread is still inside run())
    assert not any(b.closed for b in primary.made)

    # degraded: detections still come out, from the CPU, without touching the GPU backend again
    start = time.monotonic()
    assert guarded.status() == {"backend": "onnxruntime", "degraded": True, "reason": reports[0],
                                "rebuilds": 1, "failures": 2}
    _same(MTCNN(guarded).detect(photo), reference)
    assert time.monotonic() - start < MARGIN
    assert primary.calls == 2 and len(reports) == 1
    guarded.close()


def test_failing_calls_rebuild_once_then_fallback(photo, reference, caplog):
    primary = Factory(FailingBackend)
    reports: list[str] = []
    guarded = GuardedBackend(primary, OnnxRuntimeBackend, timeout=TIMEOUT, on_degraded=reports.append)
    caplog.set_level(logging.ERROR, logger="agent.vision.backends.watchdog")
    start = time.monotonic()
    detections = MTCNN(guarded).detect(photo)
    assert time.monotonic() - start < TIMEOUT + MARGIN
    _same(detections, reference)
    assert primary.calls == 2 and guarded.rebuilds == 1 and guarded.degraded
    assert all(b.closed for b in primary.made)  # a failing (not stalled) backend is closed
    assert "failed" in reports[0] and "CUDA error 700" in reports[0]
    assert sum("CUDA error 700" in r.getMessage() for r in caplog.records) >= 2
    guarded.close()


def test_successful_rebuild_keeps_the_primary(release, photo, reference):
    primary = Factory(lambda: SleepingBackend(release=release), lambda: SleepingBackend(stall_after=10**9))
    reports: list[str] = []
    guarded = GuardedBackend(primary, OnnxRuntimeBackend, timeout=TIMEOUT, on_degraded=reports.append)
    start = time.monotonic()
    _same(MTCNN(guarded).detect(photo), reference)
    assert time.monotonic() - start < TIMEOUT + MARGIN
    assert primary.calls == 2 and guarded.rebuilds == 1
    assert not guarded.degraded and reports == [] and guarded.name == "sleeping"
    assert primary.made[1].calls > 3  # the rebuilt backend served the whole cascade
    guarded.close()
    assert primary.made[1].closed


def test_second_stall_after_a_rebuild_falls_back_at_once(release, photo, reference):
    # first backend stalls at once; the rebuilt one works for 3 calls, then stalls
    primary = Factory(lambda: SleepingBackend(release=release),
                      lambda: SleepingBackend(stall_after=3, release=release))
    guarded = GuardedBackend(primary, OnnxRuntimeBackend, timeout=TIMEOUT)
    guarded.run("pnet", _pnet_batch())
    assert guarded.rebuilds == 1 and not guarded.degraded
    for _ in range(2):
        guarded.run("pnet", _pnet_batch())
    start = time.monotonic()
    guarded.run("pnet", _pnet_batch())  # stalls: no second rebuild, straight to the CPU
    assert time.monotonic() - start < TIMEOUT + MARGIN
    assert primary.calls == 2 and guarded.degraded
    _same(MTCNN(guarded).detect(photo), reference)
    guarded.close()


def test_primary_that_cannot_start_degrades_at_once(photo, reference):
    def no_gpu():
        raise BackendError("TensorRT is not available: cannot import tensorrt")

    reports: list[str] = []
    guarded = GuardedBackend(no_gpu, OnnxRuntimeBackend, timeout=TIMEOUT, on_degraded=reports.append)
    assert guarded.degraded and "could not start" in reports[0] and "TensorRT" in reports[0]
    _same(MTCNN(guarded).detect(photo), reference)
    guarded.close()


def test_rebuild_that_hangs_is_bounded(release):
    def hanging_factory():
        release.wait(30)
        return FailingBackend()

    primary = Factory(FailingBackend, hanging_factory)
    guarded = GuardedBackend(primary, OnnxRuntimeBackend, timeout=TIMEOUT, build_timeout=1.0)
    start = time.monotonic()
    guarded.run("pnet", _pnet_batch())
    assert time.monotonic() - start < 1.0 + MARGIN
    assert guarded.degraded and "rebuild failed" in guarded.degraded_reason
    guarded.close()


def test_caller_errors_do_not_count_as_gpu_failures():
    primary = Factory(lambda: FailingBackend(fail_after=10**9))
    guarded = GuardedBackend(primary, OnnxRuntimeBackend, timeout=TIMEOUT)
    with pytest.raises(BackendError, match="unknown network"):
        guarded.run("xnet", _pnet_batch())
    with pytest.raises(BackendError, match="24x24"):
        guarded.run("rnet", np.zeros((2, 3, 23, 24), np.float32))
    with pytest.raises(BackendError, match="N >= 1"):
        guarded.run("onet", np.zeros((0, 3, 48, 48), np.float32))
    assert primary.made[0].calls == 0 and guarded.rebuilds == 0 and not guarded.degraded
    with pytest.raises(ValueError):
        GuardedBackend(primary, OnnxRuntimeBackend, timeout=0)
    guarded.close()
