"""Every GPU code path of agent/vision/backends/tensorrt.py run through the TensorRT/pycuda test double
(tests/fakegpu/, README.md there): build, cache, deserialize, execute, chunking, overflow, rebuild, a lost
context, a stall, close, two runners on one primary context - with ONNX Runtime doing the arithmetic, so
results are compared with the CPU runner. The double refuses what the real APIs refuse; the first tests
check that it does.
"""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest

from agent.vision.backends import RunnerError
from agent.vision.backends.onnxruntime import OnnxRuntimeMtcnnRunner, OnnxRuntimeRunner
from agent.vision.backends.watchdog import DeviceLostError

FRAME = (240, 320)  # (height, width) the P-Net profile is built for: small, quick


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _batch(shape, seed: int = 0) -> np.ndarray:
    return _rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def cpu():
    backend = OnnxRuntimeMtcnnRunner(threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def resnet_onnx(tmp_path_factory):
    from agent.vision.dlib_convert import ensure_onnx
    from agent.vision.embed import RESNET_DAT, dlib_model_path

    return ensure_onnx(dlib_model_path(RESNET_DAT), tmp_path_factory.mktemp("resnet"))


def _backend(tmp_path, **options):
    from agent.vision.backends.tensorrt import TensorRTMtcnnRunner

    options = {"engines_dir": tmp_path / "engines", "input_size": FRAME, "max_batch": 16,
               "precision": "fp32", **options}
    return TensorRTMtcnnRunner(**options)


def _same(a, b, atol=0.0):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


# ------------------------------------------------------------------------ the double refuses what the APIs do


def test_the_double_refuses_what_tensorrt_and_pycuda_refuse(fakegpu, tmp_path):
    import pycuda.driver as cuda
    import tensorrt as trt

    from agent.vision.backends import MODEL_DIR
    from agent.vision.backends.mtcnn_profile import engine_specs
    from agent.vision.backends.tensorrt import build_engine
    from agent.vision.backends.trt_probe import _trt_log, describe_device

    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    with pytest.raises(cuda.LogicError, match="invalid device context"):  # no current context
        cuda.mem_alloc(1024)
    ctx.push()
    try:
        spec = engine_specs(MODEL_DIR, FRAME, max_batch=16, precision="fp32")["rnet"]
        engine = trt.Runtime(_trt_log(trt).logger).deserialize_cuda_engine(build_engine(spec, describe_device()))
        context = engine.create_execution_context()
        _trt_log(trt).take_errors()
        # a shape outside the profile (batch 17 > max 16) or of the wrong size is refused
        assert context.set_input_shape("input", (17, 3, 24, 24)) is False
        assert context.set_input_shape("input", (1, 3, 25, 24)) is False
        assert "does not satisfy any optimization profiles" in _trt_log(trt).take_errors()[0]
        assert context.set_input_shape("input", (4, 3, 24, 24))
        assert tuple(context.get_tensor_shape("prob")) == (4, 2)
        stream = cuda.Stream()
        # execute with the output addresses unset: False, and TensorRT says why in its log
        buf = cuda.mem_alloc(4 * 3 * 24 * 24 * 4)
        assert context.set_tensor_address("input", int(buf))
        assert context.execute_async_v3(stream.handle) is False
        assert "Neither address or allocator is set for output tensor prob" in _trt_log(trt).take_errors()[0]
        # an engine of another TensorRT version does not deserialize
        data = build_engine(spec, describe_device())
        fakegpu.tensorrt_version = "10.4.0"
        assert trt.Runtime(_trt_log(trt).logger).deserialize_cuda_engine(data) is None
        assert "not compatible with this version of TensorRT" in _trt_log(trt).take_errors()[0]
        fakegpu.tensorrt_version = "10.3.0"
        assert trt.Runtime(_trt_log(trt).logger).deserialize_cuda_engine(b"not an engine") is None
        # a kernel that writes past its buffer poisons the context: every later call fails the same way
        small = cuda.mem_alloc(16)
        for name in ("prob", "reg"):
            context.set_tensor_address(name, int(small))
        assert context.execute_async_v3(stream.handle)  # the launch is fine; the fault shows at the sync
        with pytest.raises(cuda.LaunchError, match="an illegal memory access was encountered"):
            stream.synchronize()
        with pytest.raises(cuda.LaunchError, match="illegal memory access"):
            cuda.mem_get_info()
        with pytest.raises(cuda.LaunchError, match="illegal memory access"):
            cuda.mem_alloc(16)
        _trt_log(trt).take_errors()
        assert context.execute_async_v3(stream.handle) is False
        assert "illegal memory access" in _trt_log(trt).take_errors()[0]
    finally:
        cuda.Context.pop()
        ctx.detach()
    with pytest.raises(cuda.LogicError):
        cuda.Context.pop()  # nothing left on this thread's stack


def test_tensorrt_8_needs_an_explicit_batch_network(fakegpu):
    import tensorrt as trt

    from agent.vision.backends import MODEL_DIR
    from agent.vision.backends.trt_probe import _trt_logger

    fakegpu.reset(tensorrt_version="8.6.2.3")
    builder = trt.Builder(_trt_logger(trt))
    parser = trt.OnnxParser(builder.create_network(0), _trt_logger(trt))
    assert not parser.parse((MODEL_DIR / "pnet.onnx").read_bytes())
    assert "explicit batch" in str(parser.get_error(0))


# ------------------------------------------------------------------------ build, cache, execute, chunks, close


@pytest.mark.parametrize("version", ["8.6.2.3", "10.3.0"])
def test_engines_are_built_cached_and_give_onnxruntimes_results(fakegpu, tmp_path, cpu, version):
    fakegpu.reset(tensorrt_version=version)
    backend = _backend(tmp_path)
    try:
        assert backend.cache.builds == 3 and backend.cache.loads == 0
        from agent.vision.mtcnn import pnet_input_shapes

        for h, w in pnet_input_shapes(*FRAME, 20, 0.709, 0):  # every scale of the pyramid, on the GPU
            before = fakegpu.counters["execute"]
            _same(backend.run("pnet", _batch((1, 3, h, w))), cpu.run("pnet", _batch((1, 3, h, w))))
            assert fakegpu.counters["execute"] == before + 1
        _same(backend.run("onet", _batch((5, 3, 48, 48))), cpu.run("onet", _batch((5, 3, 48, 48))))
        assert fakegpu.pageable_copies == 0  # every copy from/to the pinned buffers
    finally:
        backend.close()
    assert fakegpu.allocations == {}
    # a second start loads the three engines from the cache: no build
    again = _backend(tmp_path)
    try:
        assert again.cache.builds == 0 and again.cache.loads == 3
        _same(again.run("rnet", _batch((3, 3, 24, 24))), cpu.run("rnet", _batch((3, 3, 24, 24))))
    finally:
        again.close()
    record = json.loads(next((tmp_path / "engines").glob("mtcnn-pnet-*.json")).read_text())
    assert record["key"]["tensorrt_version"] == version
    assert record["key"]["builder"]["network_flags"] == (["EXPLICIT_BATCH"] if version.startswith("8") else [])


def test_fp32_clears_tf32_and_fp16_rounds(fakegpu, tmp_path, cpu):
    from agent.vision.backends import MODEL_DIR
    from agent.vision.backends.mtcnn_profile import engine_specs

    fp32 = _backend(tmp_path)
    fp16 = _backend(tmp_path, precision="fp16")
    try:
        headers = {}
        for path in (tmp_path / "engines").glob("mtcnn-onet-*.engine"):
            data = path.read_bytes()
            size = int.from_bytes(data[8:12], "little")
            header = json.loads(data[12:12 + size])
            headers[header["fp16"]] = header
        assert headers[False]["tf32"] is False  # "fp32" is fp32 (TF32 cleared)
        assert headers[True]["tf32"] is True
        x = _batch((8, 3, 48, 48))
        _same(fp32.run("onet", x), cpu.run("onet", x))
        _same(fp16.run("onet", x), cpu.run("onet", x), atol=2e-3)
        assert not all(np.array_equal(a, b) for a, b in zip(fp16.run("onet", x), cpu.run("onet", x)))
    finally:
        fp32.close()
        fp16.close()
    assert engine_specs(MODEL_DIR, FRAME)["pnet"].precision == "fp16"


def test_batches_beyond_the_profile_run_in_chunks(fakegpu, tmp_path, cpu):
    backend = _backend(tmp_path)
    try:
        before = fakegpu.counters.get("execute", 0)
        x = _batch((40, 3, 24, 24), seed=3)
        _same(backend.run("rnet", x), cpu.run("rnet", x))
        assert fakegpu.counters["execute"] - before == 3  # 16 + 16 + 8
    finally:
        backend.close()


def test_inputs_outside_the_pnet_profile_run_on_the_cpu(fakegpu, tmp_path, cpu, caplog):
    from agent.vision.backends.onnxruntime import OnnxRuntimeMtcnnRunner

    backend = _backend(tmp_path, overflow=lambda: OnnxRuntimeMtcnnRunner(threads=1))
    try:
        before = fakegpu.counters.get("execute", 0)
        x = _batch((1, 3, 480, 640))  # a frame larger than the profile's max
        with caplog.at_level(logging.WARNING):
            _same(backend.run("pnet", x), cpu.run("pnet", x))
        assert fakegpu.counters.get("execute", 0) == before
        assert any("outside the TensorRT profile" in r.getMessage() for r in caplog.records)
    finally:
        backend.close()


def test_close_gives_every_byte_back_and_two_runners_share_the_primary_context(fakegpu, tmp_path, cpu,
                                                                                resnet_onnx):
    """The detector and the embedder on one primary context (as the service runs them): closing one leaves
    the other working; after both, the memory is what it was."""
    import pycuda.driver as cuda

    from agent.vision.backends.tensorrt import TensorRTRunner
    from agent.vision.embed import MODEL_NAME, engine_spec, resnet_model

    cuda.init()
    probe = cuda.Device(0).retain_primary_context()  # keeps the context alive to measure it
    probe.push()
    try:
        free_before = cuda.mem_get_info()[0]
        detector = _backend(tmp_path)
        embedder = TensorRTRunner([resnet_model(resnet_onnx)], {MODEL_NAME: engine_spec(resnet_onnx, 4)},
                                  engines_dir=tmp_path / "engines")
        assert fakegpu.primary.users == 3
        assert cuda.mem_get_info()[0] < free_before
        x = _batch((2, 3, 150, 150))
        ref = OnnxRuntimeRunner([resnet_model(resnet_onnx)], threads=1)
        expected = ref.run(MODEL_NAME, x)
        ref.close()
        _same(embedder.run(MODEL_NAME, x), expected, atol=1e-6)
        detector.close()
        assert fakegpu.primary.users == 2
        _same(embedder.run(MODEL_NAME, x), expected, atol=1e-6)  # still served after the detector closed
        embedder.close()
        assert fakegpu.primary.users == 1
        assert cuda.mem_get_info()[0] == free_before  # every buffer, context and engine given back
        with pytest.raises(RunnerError, match="closed"):
            embedder.run(MODEL_NAME, x)
    finally:
        cuda.Context.pop()
        probe.detach()


# ------------------------------------------------------------------------ engine files and memory


def test_an_engine_tensorrt_rejects_is_rebuilt_once(fakegpu, tmp_path, cpu):
    import hashlib

    backend = _backend(tmp_path)
    backend.close()
    engine = next((tmp_path / "engines").glob("mtcnn-rnet-*.engine"))
    record_path = engine.with_name(engine.name + ".json")
    # bytes whose record matches (size and sha256) but that TensorRT cannot deserialize
    garbage = b"\0" * 64
    engine.write_bytes(garbage)
    record = json.loads(record_path.read_text())
    record.update(engine_size=len(garbage), engine_sha256=hashlib.sha256(garbage).hexdigest())
    record_path.write_text(json.dumps(record))
    again = _backend(tmp_path)
    try:
        assert again.cache.builds == 1 and again.cache.loads == 3  # loaded 3, one rejected and rebuilt
        assert engine.read_bytes() != garbage
        _same(again.run("rnet", _batch((2, 3, 24, 24))), cpu.run("rnet", _batch((2, 3, 24, 24))))
    finally:
        again.close()


def test_no_memory_for_the_execution_context_keeps_the_engine_file(fakegpu, tmp_path):
    """Review point 6: an out-of-memory at context creation is the GPU's problem, not the engine's."""
    _backend(tmp_path).close()
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "engines").glob("*.engine")}
    fakegpu.inject("context_oom")
    with pytest.raises(RunnerError, match="could not create an execution context for pnet.*out of GPU memory"):
        _backend(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "engines").glob("*.engine")} == files
    assert fakegpu.allocations == {}  # nothing left allocated by the failed start


def test_no_memory_for_the_buffers_keeps_the_engine_and_frees_what_was_allocated(fakegpu, tmp_path):
    _backend(tmp_path).close()
    fakegpu.inject("alloc_oom", after=4)
    with pytest.raises(RunnerError, match="cannot allocate .* out of memory"):
        _backend(tmp_path)
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 3
    assert fakegpu.allocations == {}


def test_a_failed_build_is_an_error_that_says_so(fakegpu, tmp_path):
    fakegpu.inject("build_fail")
    with pytest.raises(RunnerError, match="could not build mtcnn-pnet"):
        _backend(tmp_path)
    assert not list((tmp_path / "engines").glob("*.engine"))


# ------------------------------------------------------------------------ through the watchdog


def _guarded(tmp_path, restarts, reports, **options):
    from agent.vision.backends.tensorrt import create_tensorrt_mtcnn_runner

    return create_tensorrt_mtcnn_runner(engines_dir=tmp_path / "engines", input_size=FRAME, max_batch=16,
                                        precision="fp32", inference_timeout=options.pop("timeout", 5.0),
                                        on_degraded=reports.append,
                                        request_restart=lambda r: restarts.append(r) or True, threads=1, **options)


def _restart_min_uptime_zero(guarded):
    guarded.restart_min_uptime = 0.0
    return guarded


def test_a_lost_context_goes_to_the_cpu_for_good_and_asks_for_a_restart(fakegpu, tmp_path, cpu):
    restarts: list[str] = []
    reports: list[str] = []
    guarded = _restart_min_uptime_zero(_guarded(tmp_path, restarts, reports))
    try:
        assert guarded.name == "tensorrt" and not guarded.degraded
        x = _batch((4, 3, 24, 24))
        _same(guarded.run("rnet", x), cpu.run("rnet", x))
        fakegpu.inject("illegal_address")
        _same(guarded.run("rnet", x), cpu.run("rnet", x))  # answered by the CPU at once
        assert guarded.final and guarded.rebuilds == 0 and guarded.name == "onnxruntime"
        assert len(restarts) == 1 and "illegal memory access" in restarts[0] and restarts == reports
        assert fakegpu.primary.poisoned  # and the double's context stays unusable, as CUDA's does
    finally:
        guarded.close()


def test_a_recoverable_failure_rebuilds_and_the_gpu_serves_again(fakegpu, tmp_path, cpu):
    restarts: list[str] = []
    reports: list[str] = []
    guarded = _guarded(tmp_path, restarts, reports)
    try:
        x = _batch((2, 3, 48, 48))
        fakegpu.inject("launch_failure")
        _same(guarded.run("onet", x), cpu.run("onet", x))  # the CPU answers this one
        assert guarded.wait_for_rebuild(60) and guarded.rebuilds == 1
        assert not guarded.degraded and guarded.name == "tensorrt" and reports == restarts == []
        before = fakegpu.counters["execute"]
        _same(guarded.run("onet", x), cpu.run("onet", x))
        assert fakegpu.counters["execute"] == before + 1  # on the GPU again
    finally:
        guarded.close()
    assert fakegpu.allocations == {}


def test_a_stall_goes_to_the_cpu_for_good_without_a_rebuild(fakegpu, tmp_path, cpu):
    """Review point 4 through the real runner: the hung kernel's worker is abandoned, nothing is rebuilt on
    the same context, a restart is asked for."""
    restarts: list[str] = []
    reports: list[str] = []
    guarded = _restart_min_uptime_zero(_guarded(tmp_path, restarts, reports, timeout=0.5))
    try:
        fakegpu.inject("hang")
        x = _batch((1, 3, 100, 130))
        _same(guarded.run("pnet", x), cpu.run("pnet", x))
        assert guarded.final and guarded.rebuilds == 0 and "stalled" in restarts[0]
    finally:
        fakegpu.release_hangs()
        guarded.close()


def test_a_gpu_that_cannot_start_degrades_at_once(fakegpu, tmp_path, cpu):
    fakegpu.reset(present=False)
    restarts: list[str] = []
    reports: list[str] = []
    guarded = _guarded(tmp_path, restarts, reports)
    try:
        assert guarded.final and "could not start" in reports[0] and restarts == []
        x = _batch((1, 3, 24, 24))
        _same(guarded.run("rnet", x), cpu.run("rnet", x))
    finally:
        guarded.close()


# ------------------------------------------------------------------------ the logger, the embedder


def test_tensorrt_errors_are_kept_per_thread(fakegpu):
    """Review point 8: the detector's and the embedder's workers each take only their own errors."""
    import tensorrt as trt

    from agent.vision.backends.trt_probe import _trt_log

    log_ = _trt_log(trt)
    seen: dict[str, list[str]] = {}
    ready = threading.Barrier(2)

    def worker(name: str) -> None:
        ready.wait()
        log_.logger.log(trt.ILogger.Severity.ERROR, f"{name} failed")
        ready.wait()
        seen[name] = log_.take_errors()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("detector", "embedder")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"detector": ["detector failed"], "embedder": ["embedder failed"]}


def test_the_embedder_on_tensorrt_matches_onnxruntime(fakegpu, tmp_path, resnet_onnx):
    from agent.vision.embed import OnnxRuntimeEmbedder, TensorRTEmbedder

    chips = _rng(1).integers(0, 255, (5, 150, 150, 3), dtype=np.uint8)
    embedder = TensorRTEmbedder(resnet_onnx, tmp_path / "engines", batch_size=4, threads=1)
    try:
        assert embedder.name == "tensorrt" and not embedder.runner.degraded
        out = embedder.embed(chips)
    finally:
        embedder.close()
    reference = OnnxRuntimeEmbedder(resnet_onnx, batch_size=4, threads=1)
    np.testing.assert_allclose(out, reference.embed(chips), atol=1e-5, rtol=0)
    reference.close()


def test_device_lost_errors_are_classified(fakegpu, tmp_path):
    backend = _backend(tmp_path)
    try:
        fakegpu.inject("illegal_address")
        with pytest.raises(DeviceLostError, match="CUDA context unusable"):
            backend.run("rnet", _batch((1, 3, 24, 24)))
    finally:
        fakegpu.release_hangs()


# ------------------------------------------------------------------------ face-agent doctor --gpu


def _config_file(tmp_path, extra: str = "") -> str:
    path = tmp_path / "agent.toml"
    path.write_text('[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n'
                    '[detector]\nbackend = "tensorrt"\nmax_batch = 16\nprecision = "fp32"\n'
                    '[embedding]\nbackend = "tensorrt"\nbatch_size = 4\n'
                    '[[sources]]\nname = "yard"\nuri = "0"\nwidth = 320\nheight = 180\n'
                    '[[sources]]\nname = "door"\nuri = "1"\nwidth = 160\nheight = 120\n' + extra)
    return str(path)


def test_doctor_gpu_passes_on_a_healthy_gpu(fakegpu, tmp_path, capsys):
    from agent.cli import main

    config = _config_file(tmp_path)
    assert main(["-c", config, "doctor", "--gpu", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    names = [line[6:30].strip() for line in lines[:-1]]
    assert "7 + 6" not in out and "13 pyramid shapes of 2 camera(s) on the GPU" in out
    assert names == ["platform", "engines", "accuracy pnet", "accuracy rnet", "accuracy onet", "accuracy resnet",
                     "speed pnet", "speed rnet", "speed onet", "speed resnet", "watchdog", "memory"], out
    assert all(line.startswith(("ok", "info")) for line in lines[:-1]), out
    assert lines[-1] == "GPU self-test passed"
    assert "TensorRT 10.3.0" in lines[0] and "8 SMs" in lines[0]
    assert "MTCNN built in" in lines[1] and "dlib ResNet built in" in lines[1]
    assert "batches [1, 16, 17]" in out  # opt = max = 16 here, and one chunk more
    assert "(0 MB not given back" in out or "(+0 MB not given back" in out
    # the second run loads the engines from the cache, and --json says the same
    assert main(["-c", config, "doctor", "--gpu", "--runs", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and "MTCNN loaded in" in report["checks"][1]["detail"]
    pnet = next(c for c in report["checks"] if c["name"] == "accuracy pnet")
    assert pnet["outside"] == [] and pnet["max_diff"] == 0.0
    assert next(c for c in report["checks"] if c["name"] == "memory")["lost"] == 0


def test_doctor_gpu_fails_when_a_camera_would_run_pnet_on_the_cpu(fakegpu, tmp_path, capsys, monkeypatch):
    """A P-Net profile that leaves out a camera's scales is a failure, not a silent CPU fallback (here: the
    profile is made from the largest camera only, as before review point 9: the 320x180 camera's smallest
    scale is 14x25, the 160x120 one's 13x18)."""
    from agent.cli import main
    from agent.vision.backends import mtcnn_profile

    real = mtcnn_profile.engine_specs

    def largest_only(model_dir, input_size, *args, **kwargs):
        sizes = mtcnn_profile.input_sizes(input_size)
        return real(model_dir, sizes[0], *args, **kwargs)

    monkeypatch.setattr(mtcnn_profile, "engine_specs", largest_only)
    assert main(["-c", _config_file(tmp_path), "doctor", "--gpu", "--runs", "1"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "accuracy pnet" in line)
    assert line.startswith("FAIL") and "OUTSIDE the profile" in line
    assert out.rstrip().endswith("1 check(s) failed")


def test_doctor_gpu_fails_on_a_wrong_result_and_on_a_leak(fakegpu, tmp_path, capsys, monkeypatch):
    from agent.cli import main
    from agent.vision.backends import tensorrt as trt_backend

    real_infer = trt_backend._Engine.infer

    def off_by_a_little(self, batch):
        out = real_infer(self, batch)
        return tuple(o + 0.01 for o in out) if self.net == "onet" else out

    monkeypatch.setattr(trt_backend._Engine, "infer", off_by_a_little)
    from agent.vision import gpu_selftest

    kept: list = []
    monkeypatch.setattr(trt_backend._Engine, "free", lambda self: kept.append(self))  # never frees its memory
    monkeypatch.setattr(gpu_selftest, "MEMORY_SLACK", 1 << 20)  # the double's memory does not fluctuate
    assert main(["-c", _config_file(tmp_path), "doctor", "--gpu", "--runs", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status["accuracy onet"] == "FAIL" and status["accuracy rnet"] == "ok", report
    assert status["memory"] == "FAIL" and not report["ok"]


def test_doctor_gpu_without_a_gpu_fails_at_the_platform_check(fakegpu, tmp_path, capsys):
    from agent.cli import main

    fakegpu.reset(present=False)
    assert main(["-c", _config_file(tmp_path), "doctor", "--gpu"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("FAIL  platform")
    assert "no CUDA-capable device" in out.splitlines()[0]
    assert sum(line.startswith("skip") for line in out.splitlines()) == 5


def test_a_bare_runner_is_safe_to_call_from_several_threads(fakegpu, tmp_path, cpu):
    """Its engines' contexts, streams and buffers are shared by calls: the runner serialises them itself
    (found by bench/gpu_pycuda_check.py, which drives one runner from two threads)."""
    backend = _backend(tmp_path)
    errors: list[str] = []

    def drive(seed: int) -> None:
        for i in range(20):
            x = _batch((1 + (seed + i) % 20, 3, 24, 24), seed=seed * 100 + i)
            if not all(np.array_equal(a, b) for a, b in zip(backend.run("rnet", x), cpu.run("rnet", x))):
                errors.append(f"thread {seed} call {i}: wrong output")

    threads = [threading.Thread(target=drive, args=(s,)) for s in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        backend.close()
    assert errors == []


def test_the_pycuda_check_script_runs_on_the_double(tmp_path):
    """bench/gpu_pycuda_check.py (for a real GPU without TensorRT) keeps working: here on the double."""
    import os
    import subprocess
    import sys

    from conftest import FAKEGPU, ROOT

    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_pycuda_check.py"), "--json"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(FAKEGPU)})
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and [c["name"] for c in report["checks"]] == [
        "device", "echo through the runner", "memory while loaded", "context per thread",
        "close one, the other serves", "watchdog rebuild", "memory given back"]
