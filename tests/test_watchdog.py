"""The inference watchdog with backends that really stall (sleep) or raise, and a real ONNX Runtime fallback.

Timing assertions are bounds with generous margins (a stalled call must come back, not hang), never
speed measurements.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import numpy as np
import pytest
from conftest import FR

from agent.images import load_image
from agent.vision.backends import RunnerError
from agent.vision.backends.onnxruntime import OnnxRuntimeMtcnnRunner
from agent.vision.backends.watchdog import (
    DeviceLostError,
    GuardedRunner,
    ask_systemd_for_restart,
    device_lost,
    sticky_cuda_error,
)
from agent.vision.mtcnn import MTCNN

TIMEOUT = 0.5
MARGIN = 3.0  # scheduling + loading the ONNX Runtime fallback on a busy 2-core machine


class MisbehavingBackend:
    """Answers correctly (through ONNX Runtime) until `after` calls have passed, then `misbehave`s in run()."""

    def __init__(self, after: int):
        self.after = after
        self.calls = 0
        self.closed = False
        self.inner = OnnxRuntimeMtcnnRunner(threads=1)

    def misbehave(self) -> None:
        raise NotImplementedError

    def run(self, net, batch):
        self.calls += 1
        if self.calls > self.after:
            self.misbehave()
        return self.inner.run(net, batch)

    def close(self):
        self.closed = True
        self.inner.close()


class SleepingBackend(MisbehavingBackend):
    """Once `stall_after` calls have passed, blocks in run() for `stall` seconds - a real stall of the calling
    thread, like a wedged GPU call."""

    name = "sleeping"

    def __init__(self, stall: float = 30.0, stall_after: int = 0, release: threading.Event | None = None):
        super().__init__(stall_after)
        self.stall = stall
        self.release = release or threading.Event()

    def misbehave(self) -> None:
        self.release.wait(self.stall)  # sleeps; the test's teardown sets it so threads end


class FailingBackend(MisbehavingBackend):
    """Raises like a GPU backend whose call failed; by default an error the GPU can recover from."""

    name = "failing"

    def __init__(self, fail_after: int = 0, message: str = "TensorRT execute_async_v3 failed (out of memory)"):
        super().__init__(fail_after)
        self.message = message

    def misbehave(self) -> None:
        raise RuntimeError(self.message)

    def close(self):  # its ONNX Runtime sessions stay open: a call that comes late still answers
        self.closed = True


def lost_context_backend(fail_after: int = 0) -> FailingBackend:
    """Raises what pycuda raises after a kernel broke the CUDA context (a sticky error)."""
    return FailingBackend(fail_after, "LaunchError: cuStreamSynchronize failed: an illegal memory access was "
                                      "encountered")


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
def photo(shared):
    return load_image(FR / "examples" / "two_people.jpg")


@pytest.fixture(scope="module")
def reference(photo):
    backend = OnnxRuntimeMtcnnRunner()
    try:
        return MTCNN(backend).detect(photo)
    finally:
        backend.close()


def _same(detections, reference):
    assert len(detections) == len(reference) >= 2
    for a, b in zip(detections, reference, strict=True):
        assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) < 1e-5
        assert np.allclose(a.landmarks, b.landmarks, atol=1e-3)


def reporting(primary, fallback=OnnxRuntimeMtcnnRunner) -> tuple[GuardedRunner, list[str], list[str]]:
    """A GuardedRunner that may ask for a restart at any uptime, with the lists its degraded reports and its
    restart requests (each granted) go to."""
    reports: list[str] = []
    restarts: list[str] = []
    guarded = GuardedRunner(primary, fallback, timeout=TIMEOUT, on_degraded=reports.append,
                            request_restart=lambda reason: restarts.append(reason) or True, restart_min_uptime=0.0)
    return guarded, reports, restarts


def _pnet_batch():
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, 40, 50)).astype(np.float32)


def test_stall_answers_from_the_cpu_and_falls_back_for_good_without_a_rebuild(release, photo, reference,
                                                                                caplog):
    """A stall is treated like a lost CUDA context: a rebuild on the same primary context would hang in its
    warm-up behind the hung kernel while the abandoned engine still holds its GPU memory."""
    primary = Factory(lambda: SleepingBackend(release=release))
    fallback = Factory(OnnxRuntimeMtcnnRunner)
    guarded, reports, restarts = reporting(primary, fallback)
    assert guarded.name == "sleeping" and not guarded.degraded
    caplog.set_level(logging.ERROR, logger="agent.vision.backends.watchdog")

    start = time.monotonic()
    out = guarded.run("pnet", _pnet_batch())
    elapsed = time.monotonic() - start
    # one stall (timeout) and the CPU answer
    assert TIMEOUT <= elapsed < TIMEOUT + MARGIN, elapsed
    expected = OnnxRuntimeMtcnnRunner().run("pnet", _pnet_batch())
    assert all(np.array_equal(a, b) for a, b in zip(out, expected, strict=True))
    assert primary.calls == 1 and guarded.rebuilds == 0 and not guarded.rebuilding  # no rebuild
    assert fallback.calls == 1 and guarded.degraded and guarded.final and guarded.name == "onnxruntime"
    assert len(reports) == 1 and "stalled" in reports[0] and "pnet" in reports[0] and "no rebuild" in reports[0]
    assert "(1, 3, 40, 50)" in reports[0]  # batch shape in the context
    assert restarts == reports  # a fresh process gets a fresh CUDA context
    logged = [r.getMessage() for r in caplog.records]
    assert any("stalled on batch (1, 3, 40, 50) after 0.5" in m for m in logged), logged
    assert any("degraded" in m for m in logged)
    # the stalled worker is an abandoned daemon thread, not joined
    stuck = [t for t in threading.enumerate() if t.name.startswith("inference-primary")]
    assert stuck and all(t.daemon for t in stuck)
    # the stalled backend is not closed (its thread is still inside run())
    assert not any(b.closed for b in primary.made)

    # degraded: detections still come out, from the CPU, without touching the GPU backend again
    start = time.monotonic()
    assert guarded.status() == {"backend": "onnxruntime", "degraded": True, "reason": reports[0],
                                "rebuilds": 0, "rebuilding": False, "failures": 1,
                                "restart_requested": restarts[0]}
    _same(MTCNN(guarded).detect(photo), reference)
    assert time.monotonic() - start < MARGIN
    assert primary.calls == 1 and len(reports) == 1
    guarded.close()


def test_rebuild_runs_off_the_lock_and_the_cpu_answers_meanwhile(release, photo, reference):
    gate = threading.Event()

    def slow_rebuild():
        gate.wait(60)  # an engine rebuild that takes a long time
        return SleepingBackend(stall_after=10**9)

    primary = Factory(FailingBackend, slow_rebuild)  # a recoverable error: rebuilt once
    guarded = GuardedRunner(primary, OnnxRuntimeMtcnnRunner, timeout=TIMEOUT, build_timeout=60.0)
    try:
        start = time.monotonic()
        guarded.run("pnet", _pnet_batch())
        assert time.monotonic() - start < TIMEOUT + MARGIN
        assert guarded.rebuilding and guarded.degraded and not guarded.final
        assert "rebuilt" in guarded.degraded_reason and guarded.name == "onnxruntime"
        # while the rebuild runs, whole frames are detected on the CPU without waiting for it
        start = time.monotonic()
        _same(MTCNN(guarded).detect(photo), reference)
        assert time.monotonic() - start < MARGIN
        assert guarded.rebuilding
    finally:
        gate.set()
    assert guarded.wait_for_rebuild(MARGIN)
    assert not guarded.degraded and guarded.degraded_reason == "" and guarded.name == "sleeping"
    _same(MTCNN(guarded).detect(photo), reference)
    assert primary.made[1].calls > 3  # back on the GPU backend for the whole cascade
    guarded.close()


def test_failing_calls_rebuild_once_then_fallback(photo, reference, caplog):
    primary = Factory(FailingBackend)
    guarded, reports, restarts = reporting(primary)
    caplog.set_level(logging.ERROR, logger="agent.vision.backends.watchdog")
    guarded.run("pnet", _pnet_batch())  # fails: CPU answer, rebuild in the background
    assert guarded.wait_for_rebuild(MARGIN) and not guarded.degraded
    start = time.monotonic()
    detections = MTCNN(guarded).detect(photo)  # the rebuilt backend fails too: the CPU for good
    assert time.monotonic() - start < TIMEOUT + MARGIN
    _same(detections, reference)
    assert primary.calls == 2 and guarded.rebuilds == 1 and guarded.final
    assert all(b.closed for b in primary.made)  # a failing (not stalled) backend is closed
    assert "failed" in reports[0] and "out of memory" in reports[0]
    assert sum("out of memory" in r.getMessage() for r in caplog.records) >= 2
    assert restarts == reports  # failed for good at run time: ask for a fresh process
    guarded.close()


def test_lost_cuda_context_degrades_at_once_and_asks_for_a_restart(photo, reference, caplog):
    primary = Factory(lambda: lost_context_backend(fail_after=2))
    guarded, reports, restarts = reporting(primary)
    caplog.set_level(logging.ERROR, logger="agent.vision.backends.watchdog")
    _same(MTCNN(guarded).detect(photo), reference)
    # no rebuild on the same broken primary context: the CPU at once, and a restart request
    assert primary.calls == 1 and guarded.rebuilds == 0 and not guarded.rebuilding
    assert guarded.degraded and guarded.final and guarded.name == "onnxruntime"
    assert len(restarts) == 1 and restarts == reports and "illegal memory access" in restarts[0]
    assert "no rebuild" in restarts[0] and guarded.status()["restart_requested"] == restarts[0]
    assert not primary.made[0].closed  # a lost context is not touched again
    assert any("asked the service manager for a restart" in r.getMessage() for r in caplog.records)
    _same(MTCNN(guarded).detect(photo), reference)
    assert primary.made[0].calls == 3 and len(restarts) == 1
    guarded.close()


def test_lost_context_soon_after_start_stays_on_the_cpu_without_a_restart_loop(caplog):
    restarts: list[str] = []

    def lost():
        backend = FailingBackend()
        backend.run = lambda net, batch: (_ for _ in ()).throw(DeviceLostError("pnet: CUDA context unusable"))
        return backend

    guarded = GuardedRunner(Factory(lost), OnnxRuntimeMtcnnRunner, timeout=TIMEOUT,
                            request_restart=lambda reason: restarts.append(reason) or True)  # 600 s default
    caplog.set_level(logging.ERROR, logger="agent.vision.backends.watchdog")
    guarded.run("pnet", _pnet_batch())
    assert guarded.final and guarded.rebuilds == 0 and restarts == [] and guarded.restart_requested == ""
    assert any("not asking for a restart" in r.getMessage() for r in caplog.records)
    guarded.close()


def test_stall_after_a_rebuild_falls_back_at_once(release, photo, reference):
    # the first backend fails (recoverable: rebuilt once); the rebuilt one works for 3 calls, then stalls
    primary = Factory(FailingBackend, lambda: SleepingBackend(stall_after=3, release=release))
    guarded = GuardedRunner(primary, OnnxRuntimeMtcnnRunner, timeout=TIMEOUT)
    guarded.run("pnet", _pnet_batch())
    assert guarded.wait_for_rebuild(MARGIN)
    assert guarded.rebuilds == 1 and not guarded.degraded
    for _ in range(3):
        guarded.run("pnet", _pnet_batch())
    start = time.monotonic()
    guarded.run("pnet", _pnet_batch())  # stalls: no second rebuild, straight to the CPU
    assert time.monotonic() - start < TIMEOUT + MARGIN
    assert primary.calls == 2 and guarded.final
    _same(MTCNN(guarded).detect(photo), reference)
    guarded.close()


def test_primary_that_cannot_start_degrades_at_once(photo, reference):
    def no_gpu():
        raise RunnerError("TensorRT is not available: cannot import tensorrt")

    guarded, reports, restarts = reporting(no_gpu)
    assert guarded.degraded and "could not start" in reports[0] and "TensorRT" in reports[0]
    assert restarts == []  # a restart cannot bring a GPU that never started
    _same(MTCNN(guarded).detect(photo), reference)
    guarded.close()


def test_rebuild_that_hangs_is_bounded(release):
    def hanging_factory():
        release.wait(30)
        return FailingBackend()

    primary = Factory(FailingBackend, hanging_factory)
    guarded = GuardedRunner(primary, OnnxRuntimeMtcnnRunner, timeout=TIMEOUT, build_timeout=1.0)
    start = time.monotonic()
    guarded.run("pnet", _pnet_batch())
    assert time.monotonic() - start < TIMEOUT + MARGIN  # the caller never waits for the rebuild
    assert guarded.wait_for_rebuild(1.0 + MARGIN)
    assert guarded.final and "rebuild failed" in guarded.degraded_reason
    guarded.close()


def test_sticky_cuda_errors_are_recognised():
    assert sticky_cuda_error("cuStreamSynchronize failed: an illegal memory access was encountered")
    assert sticky_cuda_error("[executionContext.cpp::enqueueV3] Error Code 1: Cuda Runtime (unspecified launch "
                             "failure)")
    assert sticky_cuda_error("CUDA_ERROR_LAUNCH_FAILED")
    assert sticky_cuda_error("cudaErrorIllegalAddress")
    for recoverable in ("out of memory", "no answer within 0.5 s", "input shape rejected", ""):
        assert sticky_cuda_error(recoverable) == ""
    try:
        try:
            raise RuntimeError("cuMemcpyDtoHAsync failed: misaligned address")
        except RuntimeError as inner:
            raise RunnerError("onet: CUDA failed") from inner
    except RunnerError as outer:
        assert device_lost(outer)  # found through the cause chain
    assert device_lost(DeviceLostError("x")) and not device_lost(RunnerError("out of memory"))


def test_restart_request_reaches_the_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert ask_systemd_for_restart("pnet lost its CUDA context") is True
        messages = [server.recv(4096).decode(), server.recv(4096).decode()]
    assert messages[0].startswith("STATUS=GPU unusable, restarting: pnet lost its CUDA context")
    assert messages[1] == "WATCHDOG=trigger"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert ask_systemd_for_restart("no systemd") is False
    assert "NOTIFY_SOCKET" not in os.environ


def test_caller_errors_do_not_count_as_gpu_failures():
    primary = Factory(lambda: FailingBackend(fail_after=10**9))
    guarded = GuardedRunner(primary, OnnxRuntimeMtcnnRunner, timeout=TIMEOUT)
    with pytest.raises(RunnerError, match="unknown network"):
        guarded.run("xnet", _pnet_batch())
    with pytest.raises(RunnerError, match="24x24"):
        guarded.run("rnet", np.zeros((2, 3, 23, 24), np.float32))
    with pytest.raises(RunnerError, match="N >= 1"):
        guarded.run("onet", np.zeros((0, 3, 48, 48), np.float32))
    assert primary.made[0].calls == 0 and guarded.rebuilds == 0 and not guarded.degraded
    with pytest.raises(ValueError):
        GuardedRunner(primary, OnnxRuntimeMtcnnRunner, timeout=0)
    guarded.close()
