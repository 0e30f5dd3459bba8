"""`face-agent doctor --gpu`: a few minutes' self-test of the whole GPU path on this machine.

Each check is one `Check` (name, status ok | FAIL | info | skip, one line of detail, data for --json):

1. platform: JetPack (/etc/nv_tegra_release), TensorRT, pycuda, CUDA driver, GPU, SM count, memory; a
   missing or unsupported part fails here and the rest is skipped;
2. engines: the configured detector's three engines and the embedder's ResNet engine, loaded from the
   engine cache or built (with their timings), exactly as the service makes them;
3. accuracy: TensorRT against ONNX Runtime on the same seeded inputs - R-Net and O-Net at batch 1, the
   profile's opt, its max and max+1 (one chunk more); P-Net at every pyramid shape of every configured
   camera, each of which must run on the GPU (none outside the profile, i.e. on the CPU); the ResNet at 1
   and `[embedding] batch_size` - the largest difference against the stated tolerance (`TOLERANCE`);
4. speed: ~`runs` calls of each network on both, median milliseconds and the speed-up (information);
5. watchdog: one forced, recoverable failure of a GPU call through the watchdog (the service's wiring):
   answered by the CPU, the GPU runner closed and rebuilt from the cache, and the GPU serving again;
6. memory: everything closed, GPU memory (`mem_get_info`) back to what it was before the test.

Run it as the service user (`sudo -u face-agent face-agent --config /etc/face-agent/agent.toml doctor
--gpu`) with the service stopped: it builds into the same engine cache. docs/tensorrt.md shows a healthy
Orin Nano's output.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Config

log = logging.getLogger(__name__)

# largest |TensorRT - ONNX Runtime| allowed per output (MTCNN: probabilities and box offsets; ResNet: the
# L2 distance between descriptors, whose same-person threshold is 0.6). fp32 engines are built without
# TF32, so they differ from the CPU only by summation order; fp16 rounds every activation to 11 bits.
TOLERANCE = {("mtcnn", "fp32"): 1e-3, ("mtcnn", "fp16"): 2e-2,
             ("resnet", "fp32"): 1e-3, ("resnet", "fp16"): 2e-2}
MEMORY_SLACK = 64 << 20  # bytes mem_get_info may differ by after closing (other processes share the memory)
SEED = 20240527


@dataclass
class Check:
    name: str
    status: str  # "ok" | "FAIL" | "info" | "skip"
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<24} {self.detail}"


def jetpack_release() -> str:
    """The L4T release line of a Jetson ("" elsewhere)."""
    try:
        return Path("/etc/nv_tegra_release").read_text(encoding="utf-8", errors="replace").splitlines()[0][2:].strip()
    except (OSError, IndexError):
        return ""


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _max_diff(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...], l2: bool) -> float:
    if l2:
        return float(np.linalg.norm(a[0] - b[0], axis=1).max())
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


class GpuSelfTest:
    """The checks above for one configuration (cfg: agent.config.Config); `run()` returns them in order."""

    def __init__(self, cfg: Config, runs: int = 100, emit: Callable[[Check], None] | None = None):
        self.cfg = cfg
        self.runs = max(1, int(runs))
        self.emit = emit or (lambda check: None)
        self.checks: list[Check] = []
        self.rng = np.random.default_rng(SEED)
        self._close: list[Callable[[], None]] = []

    def add(self, name: str, status: str, detail: str, **data: Any) -> Check:
        check = Check(name, status, detail, data)
        self.checks.append(check)
        self.emit(check)
        return check

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> list[Check]:
        cuda = self._platform()
        if cuda is None:
            for name in ("engines", "accuracy", "speed", "watchdog", "memory"):
                self.add(name, "skip", "no usable GPU path (see platform)")
            return self.checks
        cuda.init()
        probe = cuda.Device(0).retain_primary_context()  # held for the whole test: memory is measured in it
        probe.push()
        try:
            free_before = cuda.mem_get_info()[0]
            try:
                runners = self._engines()
                if runners is not None:
                    self._accuracy(*runners)
                    self._speed(*runners)
                    self._watchdog()
            finally:
                for close in reversed(self._close):
                    try:
                        close()
                    except Exception as exc:
                        self.add("close", "FAIL", f"closing a runner failed: {type(exc).__name__}: {exc}")
                self._close.clear()
            self._memory(cuda, free_before)
        except Exception as exc:  # an unexpected error is a failed check, never a traceback for the owner
            log.debug("GPU self-test error", exc_info=True)
            self.add("self-test", "FAIL", f"{type(exc).__name__}: {exc}")
        finally:
            cuda.Context.pop()
            probe.detach()
        return self.checks

    # -- 1. platform --------------------------------------------------------------------------------
    def _platform(self) -> Any:
        from agent.vision.backends import RunnerError
        from agent.vision.backends.trt_probe import _import

        jetpack = jetpack_release() or "not a Jetson (no /etc/nv_tegra_release)"
        try:
            trt, cuda = _import()
            import pycuda

            cuda.init()
            if cuda.Device.count() < 1:
                raise RunnerError("no CUDA GPU found")
            dev = cuda.Device(0)
            major, minor = dev.compute_capability()
            sms = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
            driver = cuda.get_driver_version()
            data = {"jetpack": jetpack, "tensorrt": str(trt.__version__), "pycuda": pycuda.VERSION_TEXT,
                    "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}", "gpu": dev.name(),
                    "compute_capability": f"{major}.{minor}", "multiprocessors": sms,
                    "memory_mb": dev.total_memory() >> 20}
        except Exception as exc:  # RunnerError, or pycuda's errors
            self.add("platform", "FAIL", f"{jetpack}; {exc}")
            return None
        self.add("platform", "ok", f"{jetpack}; TensorRT {data['tensorrt']}, pycuda {data['pycuda']}, CUDA driver "
                                   f"{data['cuda_driver']}; {data['gpu']} (compute {data['compute_capability']}, "
                                   f"{sms} SMs, {data['memory_mb']} MB)", **data)
        return cuda

    # -- 2. engines ---------------------------------------------------------------------------------
    def _engines(self) -> tuple[Any, Any, Any, Any] | None:
        from agent.vision.backends import MODEL_DIR, mtcnn_models
        from agent.vision.backends.mtcnn_profile import config_engine_specs
        from agent.vision.backends.onnxruntime import OnnxRuntimeRunner
        from agent.vision.backends.tensorrt import TensorRTRunner, engine_cache
        from agent.vision.embed import MODEL_NAME, converted_model, engine_spec, resnet_model

        cfg = self.cfg
        folder = cfg.path("engines")
        cache = engine_cache(folder)
        try:
            onnx = converted_model(cfg.embedding, folder, cfg.base_dir)
        except Exception as exc:
            self.add("engines", "FAIL", f"cannot convert the dlib ResNet: {exc}")
            return None
        self.resnet_onnx = onnx
        made: dict[str, Any] = {}
        timings: dict[str, str] = {}
        jobs = [("MTCNN", mtcnn_models(MODEL_DIR), config_engine_specs(cfg)),
                ("dlib ResNet", [resnet_model(onnx)],
                 {MODEL_NAME: engine_spec(onnx, cfg.embedding.batch_size, cfg.embedding.precision)})]
        for what, models, specs in jobs:
            builds, loads = cache.builds, cache.loads
            start = time.monotonic()
            try:
                runner = TensorRTRunner(models, specs, cache=cache, what=what)
            except Exception as exc:
                self.add("engines", "FAIL", f"{what}: {exc}")
                return None
            self._close.append(runner.close)
            seconds = time.monotonic() - start
            built, loaded = cache.builds - builds, cache.loads - loads
            timings[what] = f"{what} {'built' if built else 'loaded'} in {seconds:.1f} s" + \
                (f" ({built} built, {loaded} loaded)" if built and loaded else "")
            made[what] = (runner, OnnxRuntimeRunner(models, threads=cfg.detector.threads, what=what))
            self._close.append(made[what][1].close)
        self.add("engines", "ok", "; ".join(timings.values()) + f" ({folder})", timings=timings)
        return (*made["MTCNN"], *made["dlib ResNet"])

    # -- 3. accuracy --------------------------------------------------------------------------------
    def _accuracy(self, mtcnn: Any, mtcnn_cpu: Any, resnet: Any, resnet_cpu: Any) -> None:
        from agent.vision import dlib_resnet
        from agent.vision.embed import MODEL_NAME
        from agent.vision.mtcnn import pnet_input_shapes

        cfg = self.cfg
        precision = mtcnn.cache.key(mtcnn.specs["pnet"])["precision"]
        tol = TOLERANCE[("mtcnn", precision)]
        # P-Net: every pyramid shape of every camera, each on the GPU
        shapes: list[tuple[int, int]] = []
        for camera in cfg.cameras():
            for shape in pnet_input_shapes(camera.source.height, camera.source.width, camera.detector.min_face_size,
                                           cfg.detector.scale_factor, cfg.detector.max_input_side):
                if shape not in shapes:
                    shapes.append(shape)
        engine = mtcnn._engines["pnet"]
        outside = [s for s in shapes if not engine.fits((1, 3, *s))]
        worst = 0.0
        for h, w in shapes:
            if (h, w) in outside:
                continue  # the service would run these on the CPU: reported below
            x = self.rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
            worst = max(worst, _max_diff(mtcnn.run("pnet", x), mtcnn_cpu.run("pnet", x), l2=False))
        ok = not outside and worst <= tol and mtcnn._overflow is None
        self.add("accuracy pnet", "ok" if ok else "FAIL",
                 f"{len(shapes)} pyramid shapes of {len(cfg.cameras())} camera(s) on the GPU, max diff "
                 f"{worst:.2e} (tolerance {tol:g}, {precision})"
                 + (f"; OUTSIDE the profile (would run on the CPU): {outside}" if outside else ""),
                 shapes=len(shapes), max_diff=worst, tolerance=tol, outside=outside)
        # R-Net, O-Net: batch 1, opt, max, max + 1 (chunked)
        for net in ("rnet", "onet"):
            e = mtcnn._engines[net]
            batches = sorted({1, e.opt_shape[0], e.max_shape[0], e.max_shape[0] + 1})
            worst = 0.0
            for n in batches:
                x = self.rng.uniform(-1, 1, (n, *e.max_shape[1:])).astype(np.float32)
                worst = max(worst, _max_diff(mtcnn.run(net, x), mtcnn_cpu.run(net, x), l2=False))
            self.add(f"accuracy {net}", "ok" if worst <= tol else "FAIL",
                     f"batches {batches}, max diff {worst:.2e} (tolerance {tol:g}, {precision})",
                     batches=batches, max_diff=worst, tolerance=tol)
        # the ResNet: 1 and batch_size
        precision = resnet.cache.key(resnet.specs[MODEL_NAME])["precision"]
        tol = TOLERANCE[("resnet", precision)]
        mean = dlib_resnet.recorded_mean(self.resnet_onnx)
        worst = 0.0
        batches = sorted({1, cfg.embedding.batch_size})
        for n in batches:
            chips = self.rng.integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)
            x = dlib_resnet.preprocess(chips, mean)
            worst = max(worst, _max_diff(resnet.run(MODEL_NAME, x), resnet_cpu.run(MODEL_NAME, x), l2=True))
        self.add("accuracy resnet", "ok" if worst <= tol else "FAIL",
                 f"batches {batches}, max L2 {worst:.2e} (tolerance {tol:g}, {precision})",
                 batches=batches, max_diff=worst, tolerance=tol)

    # -- 4. speed -----------------------------------------------------------------------------------
    def _speed(self, mtcnn: Any, mtcnn_cpu: Any, resnet: Any, resnet_cpu: Any) -> None:
        from agent.vision.embed import MODEL_NAME

        e = mtcnn._engines
        cases = [("pnet", mtcnn, mtcnn_cpu, (1, 3, *e["pnet"].opt_shape[2:])),
                 ("rnet", mtcnn, mtcnn_cpu, tuple(e["rnet"].opt_shape)),
                 ("onet", mtcnn, mtcnn_cpu, tuple(e["onet"].opt_shape)),
                 (MODEL_NAME, resnet, resnet_cpu, (1, 3, 150, 150))]
        for net, gpu, cpu, shape in cases:
            x = self.rng.uniform(-1, 1, shape).astype(np.float32)
            gpu_ms = _median_ms(lambda gpu=gpu, net=net, x=x: gpu.run(net, x), self.runs)
            cpu_ms = _median_ms(lambda cpu=cpu, net=net, x=x: cpu.run(net, x), self.runs)
            self.add(f"speed {net}", "info",
                     f"{shape}: TensorRT {gpu_ms:.2f} ms, ONNX Runtime {cpu_ms:.2f} ms (median of {self.runs}): "
                     f"{cpu_ms / gpu_ms:.1f}x", shape=list(shape), tensorrt_ms=gpu_ms, onnxruntime_ms=cpu_ms,
                     speedup=cpu_ms / gpu_ms)

    # -- 5. watchdog --------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        from agent.vision.backends import MODEL_DIR, RunnerError, model_check, mtcnn_models
        from agent.vision.backends.mtcnn_profile import config_engine_specs
        from agent.vision.backends.onnxruntime import OnnxRuntimeRunner
        from agent.vision.backends.tensorrt import TensorRTRunner, engine_cache
        from agent.vision.backends.watchdog import GuardedRunner

        cfg = self.cfg
        models = mtcnn_models(MODEL_DIR)
        specs = config_engine_specs(cfg)
        made: list[Any] = []

        def primary() -> TensorRTRunner:
            runner = TensorRTRunner(models, specs, cache=engine_cache(cfg.path("engines")), what="MTCNN")
            if not made:  # the first runner fails its first call once: a recoverable GPU error
                real = runner.run

                def fail_once(net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
                    runner.run = real  # type: ignore[method-assign]
                    raise RunnerError("forced failure (doctor --gpu): recoverable")

                runner.run = fail_once  # type: ignore[method-assign]
            made.append(runner)
            return runner

        guarded = GuardedRunner(primary, lambda: OnnxRuntimeRunner(models, threads=cfg.detector.threads),
                                timeout=cfg.detector.inference_timeout, request_restart=None,
                                check=model_check(models))
        self._close.append(guarded.close)
        x = self.rng.uniform(-1, 1, (4, 3, 24, 24)).astype(np.float32)
        start = time.monotonic()
        first = guarded.run("rnet", x)  # fails on the GPU: the CPU answers, a rebuild starts
        answered = guarded.degraded and guarded.name == "onnxruntime"
        rebuilt = guarded.wait_for_rebuild(guarded.build_timeout)
        again = guarded.run("rnet", x)
        seconds = time.monotonic() - start
        closed = bool(made) and not made[0]._engines  # the failed runner was closed (its memory given back)
        ok = answered and rebuilt and guarded.rebuilds == 1 and not guarded.degraded \
            and guarded.name == "tensorrt" and closed and _max_diff(first, again, l2=False) <= 2e-2
        self.add("watchdog", "ok" if ok else "FAIL",
                 (f"forced GPU failure answered by the CPU, runner closed and rebuilt, GPU serving again "
                  f"({seconds:.1f} s)") if ok else
                 f"after a forced recoverable failure: {guarded.status()} (failed runner closed: {closed})",
                 backend_status=guarded.status(), seconds=seconds)

    # -- 6. memory ----------------------------------------------------------------------------------
    def _memory(self, cuda: Any, free_before: int) -> None:
        import gc

        gc.collect()
        free_after = cuda.mem_get_info()[0]
        lost = free_before - free_after
        ok = lost <= MEMORY_SLACK
        self.add("memory", "ok" if ok else "FAIL",
                 f"after closing every runner: {free_after >> 20} MB free, {free_before >> 20} MB before "
                 f"({lost / (1 << 20):+.0f} MB not given back; allowed {MEMORY_SLACK >> 20} MB)",
                 free_before=free_before, free_after=free_after, lost=lost)


def gpu_selftest(cfg: Config, runs: int = 100, emit: Callable[[Check], None] | None = None) -> list[Check]:
    """Run the GPU self-test (module doc); `emit` gets each check as it finishes."""
    return GpuSelfTest(cfg, runs, emit).run()
