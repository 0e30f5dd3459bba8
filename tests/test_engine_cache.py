"""Engine cache and TensorRT shape profiles, on the CPU: real files, a trivial builder function.

The builder here is a plain function returning bytes that depend on what it was asked to build (it stands
in for TensorRT's build step, which is the one injectable, device-specific part); everything else - keys,
file names, records, verification, atomic writes, cleaning - is the production code.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from agent.vision.backends import MODEL_DIR, RunnerError, create_mtcnn_runner
from agent.vision.backends.engine_cache import (
    DeviceInfo,
    EngineCache,
    EngineCacheError,
    EngineSpec,
    atomic_write,
)
from agent.vision.backends.mtcnn_profile import (
    batch_profile,
    config_engine_specs,
    engine_specs,
    pnet_profile,
    pnet_profile_for,
)
from agent.vision.backends.tensorrt import TensorRTMtcnnRunner, builder_settings, gpu_error
from agent.vision.backends.trt_probe import (
    check_tensorrt_version,
    describe_device,
    fast_fp16_by_capability,
    tensorrt_status,
)
from agent.vision.backends.watchdog import DeviceLostError, GuardedRunner
from agent.vision.mtcnn import pnet_input_shapes

ROOT = Path(__file__).resolve().parents[1]
# an Orin Nano 8 GB (JetPack 6.1): 8 SMs, 7.4 GiB of shared memory
ORIN = DeviceInfo(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", fast_fp16=True,
                  multiprocessors=8, memory_gb=7)


# ------------------------------------------------------------------------------------------------------
# profiles
# ------------------------------------------------------------------------------------------------------

SIZES = [(720, 1280, 20, 0), (1080, 1920, 40, 0), (480, 640, 20, 0), (2160, 3840, 20, 1280),
         (1280, 720, 24, 0), (360, 640, 12, 0), (1080, 1920, 80, 960)]


@pytest.mark.parametrize(("height", "width", "min_face", "max_side"), SIZES)
def test_pnet_profile_covers_every_pyramid_shape(height, width, min_face, max_side):
    shapes = pnet_input_shapes(height, width, min_face, 0.709, max_side)
    lo, opt, hi = pnet_profile(height, width, min_face, 0.709, max_side)
    assert lo[:2] == opt[:2] == hi[:2] == [1, 3]
    for h, w in shapes:
        assert lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3], (h, w, lo, hi)
    # exactly the pyramid's extremes, not a guessed range
    assert (lo[2], lo[3]) == (min(h for h, _ in shapes), min(w for _, w in shapes))
    assert (hi[2], hi[3]) == (max(h for h, _ in shapes), max(w for _, w in shapes))
    # opt = the largest scale (about half of all P-Net work): TensorRT tunes its kernels for opt
    assert (opt[2], opt[3]) == shapes[0] == (hi[2], hi[3])
    assert min(lo[2:]) >= 12


def test_profile_changes_with_input_size_and_min_face():
    base = pnet_profile(720, 1280, 20)
    assert pnet_profile(1080, 1920, 20) != base
    assert pnet_profile(720, 1280, 40) != base
    assert pnet_profile(720, 1280, 20, max_input_side=640) != base
    assert pnet_profile(2160, 3840, 20, max_input_side=1280) == base  # the same frames reach P-Net
    with pytest.raises(ValueError, match="no pyramid scale"):
        pnet_profile(10, 10, 20)


def test_one_pnet_profile_covers_every_camera_down_to_the_smallest():
    """A 480p camera beside a 1080p one: the profile's minimum is the 480p pyramid's smallest scale, so
    neither camera runs a scale on the CPU (review point 9: the minimum came from the largest camera only)."""
    both = pnet_profile_for([(1080, 1920), (480, 640)], 20)
    for height, width in ((1080, 1920), (480, 640)):
        lo, _, hi = both
        for h, w in pnet_input_shapes(height, width, 20, 0.709, 0):
            assert lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3], (height, width, h, w, both)
    assert both[1] == both[2] == pnet_profile(1080, 1920, 20)[2]  # opt/max: the largest camera's first scale
    assert both[0][3] < pnet_profile(1080, 1920, 20)[0][3]  # the 480p pyramid reaches narrower inputs
    assert pnet_profile_for([(720, 1280)], 20) == pnet_profile(720, 1280, 20)


def test_config_engine_specs_take_every_camera(tmp_path):
    from conftest import make_config

    cfg = make_config(tmp_path, sources=[{"name": "yard", "uri": "rtsp://yard/1", "width": 1920, "height": 1080},
                                         {"name": "door", "uri": "rtsp://door/1", "width": 640, "height": 480}])
    assert config_engine_specs(cfg)["pnet"].profile["input"] == pnet_profile_for([(1080, 1920), (480, 640)], 20)


def test_batch_profiles():
    assert batch_profile("rnet", 128) == [[1, 3, 24, 24], [64, 3, 24, 24], [128, 3, 24, 24]]
    assert batch_profile("onet", 8) == [[1, 3, 48, 48], [8, 3, 48, 48], [8, 3, 48, 48]]
    with pytest.raises(ValueError):
        batch_profile("rnet", 0)


def test_engine_specs_change_the_engine_file_with_the_input_size(tmp_path):
    cache = EngineCache(tmp_path, lambda: ORIN, _builder())
    a = engine_specs(MODEL_DIR, (720, 1280))
    b = engine_specs(MODEL_DIR, (1080, 1920))
    assert cache.paths(a["pnet"]) != cache.paths(b["pnet"])
    assert cache.paths(a["rnet"]) == cache.paths(b["rnet"])  # R-Net does not depend on the frame size
    assert cache.paths(a["rnet"]) != cache.paths(engine_specs(MODEL_DIR, (720, 1280), max_batch=64)["rnet"])


# ------------------------------------------------------------------------------------------------------
# cache: keys and invalidation
# ------------------------------------------------------------------------------------------------------

def _builder(calls: list | None = None, delay: float = 0.0):
    """A trivial engine builder: bytes derived from all it was asked for (2 MB, like a small engine)."""

    def build(spec: EngineSpec, device: DeviceInfo) -> bytes:
        if calls is not None:
            calls.append(spec.label)
        if delay:
            time.sleep(delay)
        head = json.dumps([spec.label, Path(spec.onnx_path).read_bytes().hex()[:64], spec.precision,
                           spec.profile, spec.options, dataclasses.asdict(device)], sort_keys=True).encode()
        return head + hashlib.sha256(head).digest() * (2_000_000 // 32)

    return build


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    path = tmp_path / "models" / "net.onnx"
    path.parent.mkdir()
    path.write_bytes(b"fake onnx graph v1" * 100)
    return path


def _spec(onnx: Path, **changes) -> EngineSpec:
    base = dict(label="mtcnn-pnet", onnx_path=onnx, precision="fp16",
                profile={"input": [[1, 3, 12, 12], [1, 3, 52, 69], [1, 3, 288, 384]]},
                options={"workspace_mb": 256})
    base.update(changes)
    return EngineSpec(**base)


def test_build_then_load_from_disk(tmp_path, onnx_file):
    calls: list = []
    folder = tmp_path / "engines"
    first = EngineCache(folder, lambda: ORIN, _builder(calls))
    data = first.load_or_build(_spec(onnx_file))
    assert calls == ["mtcnn-pnet"] and first.builds == 1
    engine, record = first.paths(_spec(onnx_file))
    assert engine.read_bytes() == data
    rec = json.loads(record.read_text())
    assert rec["engine_size"] == len(data) and rec["engine_sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["key"]["tensorrt_version"] == "10.3.0" and rec["key"]["gpu_name"] == "Orin"
    assert rec["key"]["onnx_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert rec["key"]["profile"]["input"][2] == [1, 3, 288, 384]

    second = EngineCache(folder, lambda: ORIN, _builder(calls))  # a restart
    assert second.load_or_build(_spec(onnx_file)) == data
    assert calls == ["mtcnn-pnet"] and second.loads == 1 and second.builds == 0


KEY_CHANGES = {
    "tensorrt version": (dict(device=dataclasses.replace(ORIN, tensorrt_version="8.6.2")), {}),
    "gpu name": (dict(device=dataclasses.replace(ORIN, gpu_name="Xavier")), {}),
    "compute capability": (dict(device=dataclasses.replace(ORIN, compute_capability="7.2")), {}),
    # Orin modules all report "Orin", compute 8.7: the Orin Nano 4 GB has 4 SMs, the AGX Orin 64 GB 16
    "SM count": (dict(device=dataclasses.replace(ORIN, multiprocessors=4)), {}),
    "memory size": (dict(device=dataclasses.replace(ORIN, memory_gb=15)), {}),
    "precision": ({}, dict(precision="fp32")),
    "no fast fp16 on the gpu": (dict(device=dataclasses.replace(ORIN, fast_fp16=False)), {}),
    "profile max": ({}, dict(profile={"input": [[1, 3, 12, 12], [1, 3, 52, 69], [1, 3, 432, 576]]})),
    "profile opt": ({}, dict(profile={"input": [[1, 3, 12, 12], [1, 3, 73, 98], [1, 3, 288, 384]]})),
    "profile min": ({}, dict(profile={"input": [[1, 3, 14, 18], [1, 3, 52, 69], [1, 3, 288, 384]]})),
    "builder option": ({}, dict(options={"workspace_mb": 512})),
    "label": ({}, dict(label="mtcnn-pnet2")),
}


@pytest.mark.parametrize("change", sorted(KEY_CHANGES))
def test_changing_any_key_part_forces_a_rebuild(tmp_path, onnx_file, change):
    device_change, spec_change = KEY_CHANGES[change]
    folder = tmp_path / "engines"
    calls: list = []
    old = EngineCache(folder, lambda: ORIN, _builder(calls)).load_or_build(_spec(onnx_file))
    device = device_change.get("device", ORIN)
    cache = EngineCache(folder, lambda: device, _builder(calls))
    new = cache.load_or_build(_spec(onnx_file, **spec_change))
    assert cache.builds == 1 and cache.loads == 0 and len(calls) == 2
    assert new != old
    assert len(list(folder.glob("*.engine"))) == 2  # the old engine is left for `clean`, never reused


def test_changed_onnx_file_forces_a_rebuild(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    EngineCache(folder, lambda: ORIN, _builder()).load_or_build(_spec(onnx_file))
    onnx_file.write_bytes(b"fake onnx graph v2" * 100)  # same name, new weights
    cache = EngineCache(folder, lambda: ORIN, _builder())
    cache.load_or_build(_spec(onnx_file))
    assert cache.builds == 1


def test_fp16_without_fast_fp16_shares_the_fp32_engine(tmp_path, onnx_file):
    slow = dataclasses.replace(ORIN, fast_fp16=False)
    folder = tmp_path / "engines"
    EngineCache(folder, lambda: slow, _builder()).load_or_build(_spec(onnx_file, precision="fp32"))
    cache = EngineCache(folder, lambda: slow, _builder())
    cache.load_or_build(_spec(onnx_file, precision="fp16"))
    assert cache.builds == 0 and cache.key(_spec(onnx_file))["precision"] == "fp32"


def test_builder_settings_are_part_of_the_key(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    cache = EngineCache(folder, lambda: ORIN, _builder(), settings=builder_settings)
    cache.load_or_build(_spec(onnx_file))
    record = json.loads(cache.paths(_spec(onnx_file))[1].read_text())
    assert record["key"]["builder"] == {"network_flags": [], "builder_flags": ["FP16"], "cleared_builder_flags": [],
                                        "memory_pool_limits": {"WORKSPACE": 256 << 20},
                                        "optimization_profiles": 1}
    again = EngineCache(folder, lambda: ORIN, _builder(), settings=builder_settings)
    again.load_or_build(_spec(onnx_file))
    assert again.builds == 0 and again.loads == 1

    def tuned(spec, device):  # a new builder setting in the code: a new engine, no CACHE_FORMAT bump
        return {**builder_settings(spec, device), "builder_optimization_level": 5}

    changed = EngineCache(folder, lambda: ORIN, _builder(), settings=tuned)
    changed.load_or_build(_spec(onnx_file))
    assert changed.builds == 1 and changed.paths(_spec(onnx_file)) != cache.paths(_spec(onnx_file))


def test_builder_settings_follow_tensorrt_version_and_precision(onnx_file):
    spec = _spec(onnx_file, options={"workspace_mb": 512})
    trt8 = builder_settings(spec, dataclasses.replace(ORIN, tensorrt_version="8.6.2.3"))
    assert trt8["network_flags"] == ["EXPLICIT_BATCH"]  # deprecated and ignored from TensorRT 10
    assert builder_settings(spec, ORIN)["network_flags"] == []
    assert trt8["memory_pool_limits"] == {"WORKSPACE": 512 << 20}
    assert builder_settings(spec, dataclasses.replace(ORIN, fast_fp16=False))["builder_flags"] == []
    assert builder_settings(_spec(onnx_file, precision="fp32"), ORIN)["builder_flags"] == []
    # "fp32" is fp32: TF32 (on by default on Ampere/Orin, ~1e-3 relative error) is cleared; fp16 keeps it
    assert builder_settings(_spec(onnx_file, precision="fp32"), ORIN)["cleared_builder_flags"] == ["TF32"]
    assert builder_settings(dataclasses.replace(spec, precision="fp16"), ORIN)["cleared_builder_flags"] == []
    assert builder_settings(spec, dataclasses.replace(ORIN, fast_fp16=False))["cleared_builder_flags"] == ["TF32"]


def test_fast_fp16_comes_from_the_compute_capability():
    # no trt.Builder is created for this on any TensorRT version
    assert fast_fp16_by_capability(8, 7) and fast_fp16_by_capability(7, 2) and fast_fp16_by_capability(5, 3)
    assert fast_fp16_by_capability(6, 2) and fast_fp16_by_capability(6, 0)
    assert not fast_fp16_by_capability(6, 1) and not fast_fp16_by_capability(5, 2)


def test_engine_of_another_orin_module_is_stale(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    nano4 = EngineCache(folder, lambda: dataclasses.replace(ORIN, multiprocessors=4, memory_gb=3), _builder())
    nano4.load_or_build(_spec(onnx_file))
    cache = EngineCache(folder, lambda: ORIN, _builder())
    assert cache.check(_spec(onnx_file)) == "no cached engine"  # another file name
    removed = cache.clean()
    assert nano4.paths(_spec(onnx_file))[0] in removed


def test_truncated_engine_is_rejected_and_rebuilt(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    cache = EngineCache(folder, lambda: ORIN, _builder())
    good = cache.load_or_build(_spec(onnx_file))
    engine, _ = cache.paths(_spec(onnx_file))
    with open(engine, "r+b") as f:
        f.truncate(len(good) // 2)
    assert "truncated" in cache.check(_spec(onnx_file))
    again = EngineCache(folder, lambda: ORIN, _builder())
    assert again.load_or_build(_spec(onnx_file)) == good
    assert again.builds == 1 and engine.read_bytes() == good


def test_corrupted_engine_of_the_right_size_is_rejected(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    cache = EngineCache(folder, lambda: ORIN, _builder())
    good = cache.load_or_build(_spec(onnx_file))
    engine, _ = cache.paths(_spec(onnx_file))
    engine.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    assert "sha256" in cache.check(_spec(onnx_file))
    again = EngineCache(folder, lambda: ORIN, _builder())
    assert again.load_or_build(_spec(onnx_file)) == good and again.builds == 1


def test_record_mismatch_never_loads(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    cache = EngineCache(folder, lambda: ORIN, _builder())
    good = cache.load_or_build(_spec(onnx_file))
    engine, record = cache.paths(_spec(onnx_file))

    # a record edited to claim another TensorRT version (engine bytes still match its size/sha)
    rec = json.loads(record.read_text())
    rec["key"]["tensorrt_version"] = "8.5.2"
    record.write_text(json.dumps(rec))
    assert "record does not match" in cache.check(_spec(onnx_file))
    assert "tensorrt_version" in cache.check(_spec(onnx_file))
    fresh = EngineCache(folder, lambda: ORIN, _builder())
    assert fresh.load_or_build(_spec(onnx_file)) == good and fresh.builds == 1

    # an engine without record (e.g. copied by hand) is never loaded
    record.unlink()
    fresh = EngineCache(folder, lambda: ORIN, _builder())
    fresh.load_or_build(_spec(onnx_file))
    assert fresh.builds == 1

    # an unreadable record
    record.write_text("{not json")
    fresh = EngineCache(folder, lambda: ORIN, _builder())
    fresh.load_or_build(_spec(onnx_file))
    assert fresh.builds == 1


def test_engine_of_another_setup_copied_over_is_rejected(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    xavier = dataclasses.replace(ORIN, gpu_name="Xavier", compute_capability="7.2")
    other = EngineCache(folder, lambda: xavier, _builder())
    other.load_or_build(_spec(onnx_file))
    o_engine, o_record = other.paths(_spec(onnx_file))
    cache = EngineCache(folder, lambda: ORIN, _builder())
    engine, record = cache.paths(_spec(onnx_file))
    engine.write_bytes(o_engine.read_bytes())
    record.write_text(o_record.read_text())
    assert "gpu_name" in cache.check(_spec(onnx_file))
    data = cache.load_or_build(_spec(onnx_file))
    assert cache.builds == 1 and data != o_engine.read_bytes()


def test_build_failure_is_a_clear_error_and_writes_nothing(tmp_path, onnx_file):
    def broken(spec, device):
        raise RuntimeError("parser: unsupported operator Foo")

    folder = tmp_path / "engines"
    cache = EngineCache(folder, lambda: ORIN, broken)
    with pytest.raises(EngineCacheError, match="mtcnn-pnet.*unsupported operator Foo"):
        cache.load_or_build(_spec(onnx_file))
    assert not list(folder.glob("*.engine*"))
    with pytest.raises(EngineCacheError, match="produced nothing"):
        EngineCache(folder, lambda: ORIN, lambda s, d: b"").load_or_build(_spec(onnx_file))


def test_concurrent_builders_build_once(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    calls: list = []
    caches = [EngineCache(folder, lambda: ORIN, _builder(calls, delay=0.5)) for _ in range(3)]
    results: list = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.load_or_build(_spec(onnx_file))))
               for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 3 and len(set(results)) == 1
    assert calls == ["mtcnn-pnet"]


# ------------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------------

def test_atomic_write_interrupted_by_an_error_leaves_nothing(tmp_path):
    target = tmp_path / "x.engine"

    def chunks():
        yield b"a" * 1000
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, chunks())
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"old complete engine")
    with pytest.raises(OSError):
        atomic_write(target, chunks())
    assert target.read_bytes() == b"old complete engine"  # the previous file is untouched
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_killed_process_leaves_no_partial_engine(tmp_path, onnx_file):
    """A process killed (SIGKILL) in the middle of writing: no engine visible, the cache rebuilds."""
    folder = tmp_path / "engines"
    folder.mkdir()
    target = folder / "mtcnn-pnet-0123456789abcdef.engine"
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from agent.vision.backends.engine_cache import atomic_write
        def chunks():
            yield b"x" * 1_000_000
            Path({str(ready)!r}).write_text("half written")
            time.sleep(60)
            yield b"y" * 1_000_000
        atomic_write(Path({str(target)!r}), chunks())
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "writer did not start"
        assert not target.exists()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = [p.name for p in folder.iterdir()]
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0]

    cache = EngineCache(folder, lambda: ORIN, _builder())
    assert cache.entries() == []  # the temporary file is not an engine
    cache.load_or_build(_spec(onnx_file))
    removed = cache.clean()
    assert [p.name for p in removed] == leftovers
    assert len(cache.entries()) == 1 and cache.entries()[0].ok


# ------------------------------------------------------------------------------------------------------
# list / clean
# ------------------------------------------------------------------------------------------------------

def test_entries_and_clean(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    old = EngineCache(folder, lambda: dataclasses.replace(ORIN, tensorrt_version="8.6.2"), _builder())
    old.load_or_build(_spec(onnx_file))
    cache = EngineCache(folder, lambda: ORIN, _builder())
    superseded = _spec(onnx_file, precision="fp32")
    cache.load_or_build(superseded)
    current = [_spec(onnx_file), _spec(onnx_file, label="mtcnn-rnet")]
    for spec in current:
        cache.load_or_build(spec)
    broken, _ = cache.paths(_spec(onnx_file, label="mtcnn-onet"))
    broken.write_bytes(b"engine without record")
    entries = cache.entries()
    assert len(entries) == 5
    assert sum(not e.ok for e in entries) == 1

    keep = [cache.paths(s)[0] for s in current]
    removed = {p.name for p in cache.clean(keep=keep)}
    remaining = {e.engine_path for e in cache.entries()}
    assert remaining == set(keep)
    assert broken.name in removed and cache.paths(superseded)[0].name in removed
    assert old.paths(_spec(onnx_file))[0].name in removed  # other TensorRT version

    assert len(cache.clean(remove_all=True)) == 4  # 2 engines + 2 records
    assert list(folder.glob("*.engine*")) == []


def test_clean_without_a_gpu_removes_only_broken_files(tmp_path, onnx_file):
    folder = tmp_path / "engines"
    EngineCache(folder, lambda: ORIN, _builder()).load_or_build(_spec(onnx_file))

    def no_gpu() -> DeviceInfo:
        raise EngineCacheError("TensorRT is not available")

    cache = EngineCache(folder, no_gpu, _builder())
    assert cache.clean() == []
    assert len(cache.entries()) == 1
    assert len(cache.clean(remove_all=True)) == 2


# ------------------------------------------------------------------------------------------------------
# this machine has no TensorRT: clear errors, and auto picks ONNX Runtime
# ------------------------------------------------------------------------------------------------------

def _has_tensorrt() -> bool:
    return tensorrt_status()[0]


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_without_tensorrt_errors_are_clear(tmp_path):
    ok, why = tensorrt_status()
    assert not ok and "tensorrt" in why.lower()
    with pytest.raises(EngineCacheError, match="TensorRT is not available"):
        describe_device()
    with pytest.raises(RunnerError, match="TensorRT is not available"):
        TensorRTMtcnnRunner(engines_dir=tmp_path)
    backend = create_mtcnn_runner("auto", engines_dir=tmp_path, input_size=(480, 640))
    try:
        assert backend.name == "onnxruntime"
    finally:
        backend.close()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------
# unsupported TensorRT (JetPack 5 and older): one clear line, never an AttributeError
# ------------------------------------------------------------------------------------------------------

def _fake_tensorrt(version: str) -> types.ModuleType:
    """A `tensorrt` module object reporting `version` and nothing else: what an old JetPack's bindings
    look like to the version gate (the gate must answer before any TensorRT API is touched)."""
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    return module


def test_supported_tensorrt_versions():
    for ok in ("8.6.2.3", "8.6.1", "10.3.0", "10.7.0.23"):
        assert check_tensorrt_version(ok) == "", ok
    for old in ("8.5.2.2", "8.2.1.9", "7.1.3", "", "unknown"):
        problem = check_tensorrt_version(old)
        assert "is not supported" in problem and "JetPack 6 (Python 3.10, TensorRT 8.6 or 10.x)" in problem


@pytest.mark.parametrize("version", ["8.5.2.2", "8.2.1.9"])
def test_old_tensorrt_is_refused_in_one_line(tmp_path, monkeypatch, capsys, version, config_file):
    from agent.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version))
    ok, why = tensorrt_status()
    assert not ok and why.startswith(f"TensorRT {version} is not supported")
    with pytest.raises(EngineCacheError, match="is not supported"):
        describe_device()

    backend = create_mtcnn_runner("auto", engines_dir=tmp_path / "engines", input_size=(480, 640))
    try:
        assert backend.name == "onnxruntime"
    finally:
        backend.close()

    restarts: list[str] = []
    guarded = create_mtcnn_runner("tensorrt", engines_dir=tmp_path / "engines", input_size=(480, 640),
                                  request_restart=lambda r: restarts.append(r) or True)
    try:
        assert isinstance(guarded, GuardedRunner) and guarded.final and guarded.name == "onnxruntime"
        assert "is not supported" in guarded.degraded_reason and restarts == []
    finally:
        guarded.close()

    capsys.readouterr()
    assert main(["-c", str(config_file), "engines", "build"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err and "AttributeError" not in captured.err
    assert f"cannot build TensorRT engines: TensorRT {version} is not supported" in lines[0]
    assert not (config_file.parent / "engines").exists()


def test_supported_tensorrt_without_pycuda_is_not_usable(monkeypatch):
    try:
        import pycuda.driver  # noqa: F401
        pytest.skip("pycuda is installed here")
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.3.0"))
    ok, why = tensorrt_status()
    assert not ok and "pycuda is not available" in why


def test_cuda_errors_that_lose_the_context_are_told_apart():
    lost = gpu_error("pnet", "CUDA failed for input (1, 3, 432, 768)",
                     RuntimeError("cuStreamSynchronize failed: unspecified launch failure"))
    assert isinstance(lost, DeviceLostError) and "until the process restarts" in str(lost)
    from_log = gpu_error("rnet", "TensorRT execute_async_v3 failed for input (64, 3, 24, 24)", trt_errors=(
        "[executionContext.cpp::enqueueV3::2666] Error Code 1: Cuda Runtime (an illegal memory access was "
        "encountered)",))
    assert isinstance(from_log, DeviceLostError) and "rnet" in str(from_log)
    plain = gpu_error("onet", "CUDA failed", RuntimeError("cuMemAlloc failed: out of memory"))
    assert isinstance(plain, RunnerError) and not isinstance(plain, DeviceLostError)
    assert "out of memory" in str(plain)


def test_tensorrt_log_keeps_the_errors_of_a_failed_call(caplog):
    """The ILogger glue, with a stand-in for the two names it uses from `tensorrt` (ILogger and its
    Severity enum): errors are kept for the failed call and reach Python logging, VERBOSE is dropped."""
    from agent.vision.backends.trt_probe import _TrtLog

    class Severity(enum.Enum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity
    trt_log = _TrtLog(types.SimpleNamespace(ILogger=ILogger))
    caplog.set_level(logging.DEBUG, logger="agent.vision.backends.trt_probe")
    trt_log.logger.log(Severity.VERBOSE, "Tactic 0x0001 time 0.1 ms")
    trt_log.logger.log(Severity.WARNING, "TensorRT was linked against cuDNN 8.9.4 but loaded 8.9.2")
    trt_log.logger.log(Severity.ERROR, "[executionContext.cpp::enqueueV3::2666] Error Code 1: Cuda Runtime "
                                       "(an illegal memory access was encountered)")
    errors = trt_log.take_errors()
    assert len(errors) == 1 and trt_log.take_errors() == []
    assert isinstance(gpu_error("pnet", "execute_async_v3 failed", trt_errors=tuple(errors)), DeviceLostError)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Tactic" in m for m in messages)
    assert sum(m.startswith("TensorRT: ") for m in messages) == 2


# ------------------------------------------------------------------------------------------------------
# face-agent engines / doctor
# ------------------------------------------------------------------------------------------------------

@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text('[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n'
                    '[source]\nwidth = 640\nheight = 480\n')
    return path


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_engines_build_fails_clearly_without_tensorrt(config_file, capsys):
    from agent.cli import main

    assert main(["-c", str(config_file), "engines", "build"]) == 1
    err = capsys.readouterr().err
    assert "cannot build TensorRT engines: TensorRT is not available" in err
    assert not (config_file.parent / "engines").exists()


def test_engines_list_and_clean(config_file, onnx_file, capsys):
    from agent.cli import main

    folder = config_file.parent / "engines"
    cache = EngineCache(folder, lambda: ORIN, _builder())
    cache.load_or_build(_spec(onnx_file))
    broken, _ = cache.paths(_spec(onnx_file, label="mtcnn-onet"))
    broken.write_bytes(b"no record")
    (folder / "mtcnn-rnet-0000000000000000.engine.tmp-1-2").write_bytes(b"half")
    (folder / "dlib_resnet.onnx").write_bytes(b"converted model: never cleaned")

    assert main(["-c", str(config_file), "engines", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    status = {r["label"]: r["status"] for r in listed["engines"]}
    assert status["mtcnn-pnet"] == "ok" and "record" in status["?"]
    assert len(listed["temporary_files"]) == 1
    assert main(["-c", str(config_file), "engines", "list"]) == 0
    text = capsys.readouterr().out
    assert "TensorRT 10.3.0" in text and "GPU Orin (8.7, 8 SMs, 7 GB)" in text and "interrupted write" in text

    assert main(["-c", str(config_file), "engines", "clean"]) == 0  # broken + temporary only (no GPU here)
    assert "2 file(s) removed, 1 engine(s) left" in capsys.readouterr().out
    assert main(["-c", str(config_file), "engines", "clean", "--all"]) == 0
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["dlib_resnet.onnx"]


def test_doctor_reports_backends_and_models(config_file, capsys):
    from agent.cli import main

    code = main(["-c", str(config_file), "doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == (1 if report["problems"] else 0)
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    assert report["detector"]["auto_picks"] == ("tensorrt" if _has_tensorrt() else "onnxruntime")
    assert report["detector"]["why"]
    mtcnn = {m["role"]: m for m in report["models"] if m["role"].startswith("MTCNN")}
    assert mtcnn["MTCNN pnet"]["sha256"] == hashlib.sha256((MODEL_DIR / "pnet.onnx").read_bytes()).hexdigest()
    assert report["engines"]["pnet_profile"] == pnet_profile(480, 640)
    assert main(["-c", str(config_file), "doctor"]) == code
    assert "auto picks" in capsys.readouterr().out
