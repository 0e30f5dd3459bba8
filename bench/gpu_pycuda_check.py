"""The pycuda half of the TensorRT runner on a real CUDA GPU, without TensorRT (issue 27).

A machine with CUDA and a built pycuda but no TensorRT cannot build an engine. This script replaces only
`tensorrt` with a stand-in engine - one input, one output, whose "inference" is a device-to-device copy of
the input on the runner's own stream (`cuda.memcpy_dtod_async`) - and runs the runner's real pycuda code
on the real GPU: the primary context retained and pushed around every call, pinned host buffers and
device buffers sized for the profile max, async copies and stream synchronisation, chunking, runners
driven from other threads (as the watchdog's workers do), two runners on one primary context, a forced
recoverable failure through the watchdog (close + rebuild), close; `mem_get_info` before and after.

    python bench/gpu_pycuda_check.py            # one line per check; exit 1 on a failure
    python bench/gpu_pycuda_check.py --json

Needs: this checkout (only `agent/` is imported; of its dependencies only numpy), numpy, and pycuda built
against the machine's CUDA (see docs/tensorrt.md "pycuda on a GPU machine without network"). Nothing is
written outside a temporary folder. Off a GPU it runs on the test double: `PYTHONPATH=tests/fakegpu`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKS: list[dict] = []


def check(name: str, ok: bool, detail: str, **data) -> None:
    CHECKS.append({"name": name, "ok": bool(ok), "detail": detail, **data})
    if not ARGS.json:
        print(f"{'ok' if ok else 'FAIL':<4}  {name:<26} {detail}", flush=True)


# ------------------------------------------------------------------------------ the stand-in tensorrt


def standin_tensorrt(cuda) -> types.ModuleType:
    """`tensorrt` with just what agent/vision/backends/tensorrt.py's runner calls, and an "engine" that
    copies its input to its output on the GPU (on the stream handed to execute_async_v3)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"  # the runner's version gate
    streams: dict[int, object] = {}
    real_stream = cuda.Stream

    def stream_factory(*args, **kwargs):  # execute_async_v3 gets a handle; map it back to pycuda's Stream
        stream = real_stream(*args, **kwargs)
        streams[int(stream.handle)] = stream
        return stream

    cuda.Stream = stream_factory

    class _Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        Severity = _Severity

        def __init__(self):
            pass

    class TensorIOMode:
        INPUT, OUTPUT = 1, 2

    class BuilderFlag:
        FP16, TF32 = 0, 7

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.shape = None
            self.addresses = {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile
            shape = tuple(int(d) for d in shape)
            ok = name == "input" and len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))
            if ok:
                self.shape = shape
            return ok

        def get_tensor_shape(self, name):
            return self.shape if self.shape is not None else tuple(-1 for _ in self.engine.profile[0])

        def set_tensor_address(self, name, address):
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, handle):
            if self.shape is None or set(self.addresses) != {"input", "output"} or handle not in streams:
                return False
            nbytes = int(np.prod(self.shape)) * 4
            cuda.memcpy_dtod_async(self.addresses["output"], self.addresses["input"], nbytes, streams[handle])
            return True

    class Engine:
        def __init__(self, profile):
            self.profile = [tuple(s) for s in profile]
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("input", "output")[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_profile_shape(self, name, index):
            return self.profile

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(json.loads(bytes(data)))

    trt.ILogger, trt.TensorIOMode, trt.BuilderFlag, trt.Runtime = ILogger, TensorIOMode, BuilderFlag, Runtime
    trt.nptype = lambda dtype: np.float32
    return trt


# ------------------------------------------------------------------------------ the checks


def main() -> int:
    import pycuda.driver as cuda

    sys.modules["tensorrt"] = standin_tensorrt(cuda)
    from agent.vision.backends import Model
    from agent.vision.backends.engine_cache import DeviceInfo, EngineCache, EngineSpec
    from agent.vision.backends.tensorrt import TensorRTRunner
    from agent.vision.backends.watchdog import GuardedRunner

    cuda.init()
    dev = cuda.Device(0)
    major, minor = dev.compute_capability()
    check("device", True, f"{dev.name()} (compute {major}.{minor}, "
                          f"{dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)} SMs, "
                          f"{dev.total_memory() >> 20} MB), driver {cuda.get_driver_version()}, "
                          f"pycuda {__import__('pycuda').VERSION_TEXT}")
    folder = Path(tempfile.mkdtemp(prefix="gpu-pycuda-check-"))
    onnx = folder / "standin.onnx"
    onnx.write_bytes(b"not used: the stand-in engine needs no graph")
    max_batch = 32
    profile = [[1, 3, 64, 64], [8, 3, 64, 64], [max_batch, 3, 64, 64]]
    model = Model("echo", onnx, ("output",), size=64, input="input", label="stand-in")
    spec = EngineSpec(label="standin", onnx_path=onnx, precision="fp32", profile={"input": profile})
    device = DeviceInfo("10.3.0", dev.name(), f"{major}.{minor}", multiprocessors=1)

    def cache() -> EngineCache:
        return EngineCache(folder, lambda: device, lambda s, d: json.dumps(s.profile["input"]).encode())

    def runner() -> TensorRTRunner:
        return TensorRTRunner([model], {"echo": spec}, cache=cache(), what="stand-in")

    probe = dev.retain_primary_context()
    probe.push()
    try:
        free_before, total = cuda.mem_get_info()
        rng = np.random.default_rng(0)
        a = runner()
        b = runner()  # a second runner on the same primary context (detector + embedder)
        # buffers, copies, stream, chunking (70 = 32 + 32 + 6), from the main thread
        x = rng.standard_normal((70, 3, 64, 64)).astype(np.float32)
        out = a.run("echo", x)[0]
        check("echo through the runner", np.array_equal(out, x), "70 inputs in chunks of 32: output == input")
        free_mid = cuda.mem_get_info()[0]
        check("memory while loaded", free_mid < free_before,
              f"{(free_before - free_mid) >> 20} MB taken by two runners' buffers and streams")
        # from other threads, each pushing the primary context itself (the watchdog's workers)
        errors: list[str] = []

        def drive(r, seed: int) -> None:
            try:
                local = np.random.default_rng(seed)
                for _ in range(50):
                    y = local.standard_normal((int(local.integers(1, 40)), 3, 64, 64)).astype(np.float32)
                    if not np.array_equal(r.run("echo", y)[0], y):
                        errors.append(f"thread {seed}: wrong output")
            except Exception as exc:
                errors.append(f"thread {seed}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=drive, args=(r, i)) for i, r in enumerate((a, b, a, b))]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        check("context per thread", not errors and not any(t.is_alive() for t in threads),
              f"4 threads x 50 calls on 2 runners in {time.monotonic() - start:.1f} s"
              + (f": {errors[:3]}" if errors else ""))
        a.close()
        y = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
        check("close one, the other serves", np.array_equal(b.run("echo", y)[0], y), "runner b after a.close()")
        b.close()
        # the watchdog: a forced recoverable failure, the runner closed in its worker, rebuilt, serving again
        made: list = []

        def primary():
            r = runner()
            if not made:
                real = r.run

                def fail_once(net, batch):
                    r.run = real
                    raise RuntimeError("forced failure (gpu_pycuda_check)")

                r.run = fail_once
            made.append(r)
            return r

        class Echo:  # the CPU fallback
            name = "cpu"

            def run(self, net, batch):
                return (np.array(batch, copy=True),)

            def close(self):
                pass

        guarded = GuardedRunner(primary, Echo, timeout=30.0, check=lambda n, bt: np.asarray(bt, np.float32))
        guarded.run("echo", y)
        rebuilt = guarded.wait_for_rebuild(120)
        z = guarded.run("echo", y)[0]
        check("watchdog rebuild", rebuilt and not guarded.degraded and guarded.name == "tensorrt"
              and np.array_equal(z, y) and not made[0]._engines,
              f"failed runner closed in its worker, rebuilt, serving again: {guarded.status()}")
        guarded.close()
        import gc

        gc.collect()
        free_after = cuda.mem_get_info()[0]
        lost = free_before - free_after
        check("memory given back", abs(lost) <= 4 << 20,
              f"free {free_before >> 20} MB before, {free_after >> 20} MB after ({lost / (1 << 20):+.1f} MB)",
              free_before=free_before, free_after=free_after, total=total)
    except Exception as exc:
        check("unexpected error", False, f"{type(exc).__name__}: {exc}")
    finally:
        cuda.Context.pop()
        probe.detach()
    failed = [c for c in CHECKS if not c["ok"]]
    if ARGS.json:
        print(json.dumps({"ok": not failed, "checks": CHECKS}, indent=2))
    else:
        print(f"\n{len(failed)} check(s) failed" if failed else "\nall pycuda checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    ARGS = parser.parse_args()
    sys.exit(main())
