"""Models on TensorRT (Jetson / CUDA GPUs), from the same ONNX files as the ONNX Runtime runner.

`TensorRTRunner(models, specs)`: one engine per model, built once and cached (`engine_cache.EngineCache`,
`[paths] engines`), with a dynamic shape profile from its `EngineSpec`; batches beyond the profile's max
batch run in chunks, other inputs outside the profile on a CPU runner (`overflow`). `create_tensorrt_runner`
puts it behind the watchdog (watchdog.py) with ONNX Runtime as the fallback: the detector
(`create_tensorrt_mtcnn_runner`, `TensorRTMtcnnRunner`: the engines of `mtcnn_profile.engine_specs`) and the
embedder (agent/vision/embed.py, engine `dlib-resnet`: `resnet_runner`) both get their GPU runner from it.

Beside it: `trt_probe.py` says what TensorRT, pycuda and GPU this machine has (versions, `auto_kind`,
`describe_device`, TensorRT's log); `mtcnn_profile.py` holds the arithmetic of MTCNN's engine profiles.

FP16 when `precision = "fp16"` and the GPU has fast fp16 by its compute capability (else fp32; the cache
key records what was built, and every builder setting `builder_settings` applies). Uses only the
tensor-name API (`num_io_tensors`, `get_tensor_name`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`). Device memory, pinned host memory and the stream come from pycuda, on the device's
*primary* CUDA context (the one TensorRT's runtime API uses), pushed around every GPU call so the runner can
be driven from any thread (the watchdog runs calls in a worker thread).

A CUDA error that leaves the context unusable (an illegal memory access, a launch failure, ...: see
`watchdog.STICKY_CUDA_ERRORS`) is raised as `watchdog.DeviceLostError`, so the watchdog degrades at once
and asks for a restart instead of rebuilding on the same broken context. TensorRT's own error messages
(an `execute_async_v3` that returns False says why only in its log) are caught by `trt_probe._TrtLog`.

`tensorrt` and `pycuda` are imported lazily: this module imports without them.
docs/tensorrt.md lists every TensorRT/pycuda call made here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.backends import (
    Model,
    Runner,
    RunnerError,
    check_input,
    model_check,
    models_by_name,
    mtcnn_models,
    mtcnn_profile,
)
from agent.vision.backends.engine_cache import (
    DeviceInfo,
    EngineCache,
    EngineCacheError,
    EngineSpec,
    effective_precision,
)
from agent.vision.backends.mtcnn_profile import DEFAULT_INPUT_SIZE
from agent.vision.backends.trt_probe import (
    _import,
    _trt_log,
    _trt_logger,
    describe_device,
    tensorrt_version_tuple,
)
from agent.vision.backends.watchdog import (
    DeviceLostError,
    GuardedRunner,
    ask_systemd_for_restart,
    sticky_cuda_error,
)

log = logging.getLogger(__name__)


def builder_settings(spec: EngineSpec, device: DeviceInfo) -> dict:
    """Every setting `build_engine` applies, by TensorRT enum name: `build_engine` applies exactly these,
    and the engine cache puts them in the key, so changing one here names (and builds) a new engine."""
    major = tensorrt_version_tuple(device.tensorrt_version)[:1] or (0,)
    return {
        # TensorRT 10: every network is explicit-batch and the EXPLICIT_BATCH flag is deprecated (ignored)
        "network_flags": [] if major[0] >= 10 else ["EXPLICIT_BATCH"],
        "builder_flags": ["FP16"] if effective_precision(spec.precision, device) == "fp16" else [],
        # TensorRT enables TF32 by default on Ampere and later (Orin: compute 8.7): its fp32 convolutions
        # then multiply with 10-bit mantissas (~1e-3 relative error). "fp32" means fp32 here: the
        # descriptors stay within ONNX Runtime's tolerance (docs/tensorrt.md); fp16 is the fast choice
        "cleared_builder_flags": ["TF32"] if effective_precision(spec.precision, device) == "fp32" else [],
        "memory_pool_limits": {"WORKSPACE": int(spec.options.get("workspace_mb", 256)) << 20},
        "optimization_profiles": 1,
    }


def engine_cache(folder: str | Path) -> EngineCache:
    """The TensorRT engine cache in `folder` ([paths] engines), as every TensorRT user here opens it."""
    return EngineCache(folder, describe_device, build_engine, settings=builder_settings)


def build_engine(spec: EngineSpec, device: DeviceInfo) -> bytes:
    """Parse spec.onnx_path and build a serialized engine with spec.profile and `builder_settings`."""
    trt, _ = _import()
    settings = builder_settings(spec, device)
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in settings["network_flags"]:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineCacheError(f"TensorRT cannot parse {spec.onnx_path}: {errors}")
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    if set(spec.profile) != inputs:
        raise EngineCacheError(f"{spec.onnx_path}: inputs {sorted(inputs)}, profile {sorted(spec.profile)}")
    config = builder.create_builder_config()
    for pool, limit in settings["memory_pool_limits"].items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, pool), int(limit))
    for name in settings["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in settings["cleared_builder_flags"]:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in spec.profile.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineCacheError(f"TensorRT could not build {spec.label} from {spec.onnx_path} (see its log)")
    return bytes(memoryview(serialized))


def gpu_error(net: str, what: str, cause: BaseException | None = None, trt_errors: tuple[str, ...] = ()) \
        -> RunnerError:
    """The error to raise for a failed GPU step: DeviceLostError when the CUDA context is gone (the error
    text - pycuda's exception or TensorRT's log - names a sticky CUDA error), else RunnerError."""
    details = [f"{type(cause).__name__}: {cause}"] if cause is not None else []
    details += list(trt_errors)
    text = "; ".join(details)
    sticky = sticky_cuda_error(text)
    message = f"{net}: {what}" + (f" ({text})" if text else "")
    if sticky:
        return DeviceLostError(f"{message}: CUDA context unusable ({sticky}) until the process restarts")
    return RunnerError(message)


# --------------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------------

class EngineRejectedError(RunnerError):
    """TensorRT rejects the engine bytes themselves (cannot deserialize them, or other tensors than the
    model's): the cached file is dropped and built once more. Any other failure while loading (no memory for
    the execution context or the buffers, a CUDA error) keeps the file: a rebuild would not help."""


class _Engine:
    """One deserialized engine with its execution context, stream and buffers sized for the profile max."""

    def __init__(self, trt: Any, cuda: Any, runtime: Any, data: bytes, model: Model):
        net = self.net = model.name
        self.input = model.input
        self.trt = trt
        self.cuda = cuda
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineRejectedError(f"TensorRT could not deserialize the {net} engine")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        ins = [n for n in names if modes[n] == trt.TensorIOMode.INPUT]
        outs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]
        if ins != [model.input] or sorted(outs) != sorted(model.outputs):
            raise EngineRejectedError(f"{net} engine has inputs {ins} and outputs {outs}; expected "
                               f"[{model.input!r}] and {list(model.outputs)}")
        self.outputs = model.outputs
        self.context = self.engine.create_execution_context()
        if self.context is None:  # TensorRT logs why: nearly always no memory for its activations
            errors = "; ".join(_trt_log(trt).take_errors()) or "no reason logged"
            raise RunnerError(f"TensorRT could not create an execution context for {net} (out of GPU "
                              f"memory? {errors}); the engine file is kept")
        self.min_shape, self.opt_shape, self.max_shape = (
            tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(self.input, 0))
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        try:
            self._allocate(trt, cuda)
            # one warm-up run at the opt shape: the first real call is then as fast as the others (and
            # within the watchdog's timeout), and a broken engine fails here, at start, not mid-stream
            self.infer(np.zeros(self.opt_shape, np.float32))
        except BaseException:
            self.free()  # what was allocated before the failure (the caller never gets this object)
            raise

    def _allocate(self, trt: Any, cuda: Any) -> None:
        """The stream and every buffer, sized for the largest input of the profile: no allocation at run
        time. No memory is a RunnerError (the engine file is fine)."""
        net = self.net
        self.stream = cuda.Stream()
        if not self.context.set_input_shape(self.input, self.max_shape):
            raise RunnerError(f"{net}: profile max shape {self.max_shape} rejected")
        for name in [self.input, *self.outputs]:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if dtype != np.float32:
                raise EngineRejectedError(f"{net}: tensor {name} is {dtype}, expected float32 I/O")
            size = int(np.prod(shape))
            try:
                self.host[name] = cuda.pagelocked_empty(size, dtype)
                self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
            except Exception as exc:  # pycuda's MemoryError ("out of memory"), or a lost context
                raise gpu_error(net, f"cannot allocate {size * dtype.itemsize} bytes for {name}", exc) from exc
        for name, mem in self.device.items():
            if not self.context.set_tensor_address(name, int(mem)):
                raise RunnerError(f"{net}: TensorRT refused the address of {name}")

    def fits(self, shape: tuple[int, ...]) -> bool:
        return all(lo <= d <= hi for lo, d, hi in zip(self.min_shape[1:], shape[1:], self.max_shape[1:],
                                                       strict=True))

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """One chunk (batch size within the profile) through the engine; blocks until the GPU is done.

        A failed step raises `gpu_error(...)`: DeviceLostError when the CUDA context is gone."""
        if not self.context.set_input_shape(self.input, batch.shape):
            raise RunnerError(f"{self.net}: input shape {batch.shape} rejected by the engine profile "
                              f"{self.min_shape}..{self.max_shape}")
        log_ = _trt_log(self.trt)
        log_.take_errors()  # only what this call causes
        try:
            return self._infer(batch)
        except RunnerError:
            raise
        except Exception as exc:  # pycuda's LaunchError, LogicError, RuntimeError, ...
            raise gpu_error(self.net, f"CUDA failed for input {batch.shape}", exc,
                            tuple(log_.take_errors())) from exc

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        cuda = self.cuda
        host_in = self.host[self.input][: batch.size]
        host_in[:] = batch.ravel()
        cuda.memcpy_htod_async(self.device[self.input], host_in, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise gpu_error(self.net, f"TensorRT execute_async_v3 failed for input {batch.shape}",
                            trt_errors=tuple(_trt_log(self.trt).take_errors()))
        results = []
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            host = self.host[name][: int(np.prod(shape))]
            cuda.memcpy_dtoh_async(host, self.device[name], self.stream)
            results.append((host, shape))
        self.stream.synchronize()
        return tuple(host.reshape(shape).copy() for host, shape in results)

    def free(self) -> None:
        """Device buffers first, then the execution context, then the engine (TensorRT's order: a context
        must not outlive its engine). The CUDA context must be current."""
        for mem in self.device.values():
            mem.free()
        self.device.clear()
        self.host.clear()
        self.context = None
        self.engine = None


class TensorRTRunner:
    """Models on TensorRT: one engine per model, loaded from (or built into) the engine cache at start.

    specs: each model's EngineSpec (its ONNX file, precision, the shape profile of its input, builder
    options), by model name. Batches larger than an engine's max batch are run in chunks of that size.
    overflow: factory of a CPU runner for inputs outside an engine's profile (for P-Net: frames of another
    size than the profile was built for); without it such inputs raise RunnerError.
    cache: the engine cache to use (default: `engine_cache(engines_dir)`).
    """

    name = "tensorrt"

    def __init__(self, models: Iterable[Model], specs: Mapping[str, EngineSpec], *,
                 engines_dir: str | Path | None = None, cache: EngineCache | None = None,
                 overflow: Callable[[], Any] | None = None, what: str = "models"):
        trt, cuda = _import()
        self.models = models_by_name(models)
        self.specs = dict(specs)
        if set(self.specs) != set(self.models):
            raise RunnerError(f"engine specs for {sorted(self.specs)}, models {sorted(self.models)}")
        for name, spec in self.specs.items():
            if not spec.onnx_path.is_file():
                raise RunnerError(f"{self.models[name].label} {spec.onnx_path} not found")
        if cache is None and engines_dir is None:
            raise RunnerError("the tensorrt backend needs engines_dir (the [paths] engines folder)")
        self.cache = cache or engine_cache(engines_dir)  # type: ignore[arg-type]
        self._overflow_factory = overflow
        self._overflow: Any = None
        self._overflow_warned = False
        self._engines: dict[str, _Engine] = {}
        self._ctx: Any = None
        self._lock = threading.Lock()
        cuda.init()
        if cuda.Device.count() < 1:
            raise RunnerError("no CUDA GPU found")
        self._ctx = cuda.Device(0).retain_primary_context()
        self._runtime = runtime = trt.Runtime(_trt_logger(trt))  # must outlive the engines
        try:
            with self._cuda():
                for name, spec in self.specs.items():
                    self._engines[name] = self._load(trt, cuda, runtime, self.models[name], spec)
        except EngineCacheError as exc:
            self.close()
            raise RunnerError(str(exc)) from None
        except BaseException:
            self.close()
            raise
        first = next(iter(self.specs.values()))
        log.info("%s on TensorRT %s (%s, %s) from %s", what, trt.__version__, self.cache.device.gpu_name,
                 self.cache.key(first)["precision"], self.cache.folder)

    def _load(self, trt: Any, cuda: Any, runtime: Any, model: Model, spec: EngineSpec) -> _Engine:
        try:
            return _Engine(trt, cuda, runtime, self.cache.load_or_build(spec), model)
        except EngineRejectedError as exc:
            # an engine whose record matched but that TensorRT rejects: drop it and build once more. Any
            # other error (out of memory at context creation, a lost context...) is the GPU's, not the
            # file's: it propagates and the file stays (a rebuild would take minutes and not help)
            log.error("%s; rebuilding it", exc)
            engine_path, record_path = self.cache.paths(spec)
            for path in (record_path, engine_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return _Engine(trt, cuda, runtime, self.cache.load_or_build(spec), model)

    @contextlib.contextmanager
    def _cuda(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        engine = self._engines.get(net)
        if engine is None and net in self.models:
            raise RunnerError("backend is closed")
        batch = check_input(self.models, net, batch)
        assert engine is not None  # check_input refused any other name
        if not engine.fits(batch.shape):
            return self._run_overflow(net, batch, engine)
        step = engine.max_shape[0]
        # one call at a time per runner: an engine's context, stream and buffers are shared by its calls
        # (behind the watchdog the calls are serial anyway; this keeps a bare runner safe from threads)
        with self._lock, self._cuda():
            parts = [engine.infer(batch[i:i + step]) for i in range(0, batch.shape[0], step)]
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))

    def _run_overflow(self, net: str, batch: np.ndarray, engine: _Engine) -> tuple[np.ndarray, ...]:
        if self._overflow_factory is None:
            raise RunnerError(f"{net}: input {batch.shape[2]}x{batch.shape[3]} is outside the engine "
                              f"profile {engine.min_shape[2:]}..{engine.max_shape[2:]}")
        if not self._overflow_warned:
            log.warning("%s input %dx%d (HxW) is outside the TensorRT profile %s..%s (frames of another size "
                        "than [source] height x width?): running such inputs on the CPU", net, batch.shape[2],
                        batch.shape[3], engine.min_shape[2:], engine.max_shape[2:])
            self._overflow_warned = True
        if self._overflow is None:
            self._overflow = self._overflow_factory()
        return self._overflow.run(net, batch)

    def close(self) -> None:
        ctx = self._ctx
        if self._engines and ctx is not None:
            with self._lock, self._cuda():
                for engine in self._engines.values():
                    engine.free()
        self._engines.clear()
        self._runtime = None
        if ctx is not None:
            with contextlib.suppress(Exception):
                ctx.detach()
            self._ctx = None
        if self._overflow is not None:
            self._overflow.close()
            self._overflow = None

    def __repr__(self) -> str:
        return f"TensorRTRunner(models={list(self.models)}, engines_dir={str(self.cache.folder)!r})"


class TensorRTMtcnnRunner(TensorRTRunner):
    """MTCNN on TensorRT: the three engines for one configuration (`engine_specs`).

    input_size: (height, width) of the frames the P-Net profile is built for ([source] height/width).
    overflow: factory of a CPU runner for P-Net inputs outside the profile (frames of another size);
    without it such inputs raise RunnerError.
    """

    def __init__(self, model_dir: str | Path | None = None, *, engines_dir: str | Path,
                 input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, min_face_size: int = 20,
                 scale_factor: float = 0.709, max_input_side: int = 0, precision: str = "fp16",
                 max_batch: int = 128, workspace_mb: int = 256, overflow: Callable[[], Any] | None = None,
                 cache: EngineCache | None = None):
        from agent.vision.backends import MODEL_DIR

        _import()  # a missing or unsupported TensorRT is said first
        self.model_dir = Path(model_dir) if model_dir is not None else MODEL_DIR
        specs = mtcnn_profile.engine_specs(self.model_dir, input_size, min_face_size, scale_factor, max_input_side,
                             precision, max_batch, workspace_mb)
        super().__init__(mtcnn_models(self.model_dir), specs, engines_dir=engines_dir, cache=cache,
                         overflow=overflow, what="MTCNN")

    def __repr__(self) -> str:
        return f"TensorRTMtcnnRunner(model_dir={str(self.model_dir)!r}, engines_dir={str(self.cache.folder)!r})"


# --------------------------------------------------------------------------------------------------------
# Wiring: the watchdog, the CPU fallback (used by backends.create_mtcnn_runner)
# --------------------------------------------------------------------------------------------------------

DETECTOR_KEYS = ("min_face_size", "scale_factor", "max_input_side", "precision", "max_batch", "workspace_mb",
                 "inference_timeout")


def create_tensorrt_runner(models: Iterable[Model],
                           specs: Mapping[str, EngineSpec] | Callable[[], Mapping[str, EngineSpec]], *,
                           engines_dir: str | Path | None = None, cache: EngineCache | None = None,
                           guard: bool = True, inference_timeout: float = 5.0,
                           on_degraded: Callable[[str], None] | None = None,
                           request_restart: Callable[[str], bool] | None = ask_systemd_for_restart,
                           threads: int = 2, what: str = "models") -> Runner:
    """TensorRTRunner(models, specs) behind the watchdog (GuardedRunner) unless guard=False.

    `specs` may be a function returning them: it is then called when the GPU runner is created, so a
    setting that cannot make an engine degrades like any other start failure. The CPU runner (ONNX
    Runtime on the same models, `threads`) serves inputs outside an engine's profile and, after a GPU
    failure, every call (see watchdog.py); `request_restart` (default: systemd's WATCHDOG=trigger) is asked
    once when the GPU is lost for good.
    """
    from agent.vision.backends.onnxruntime import OnnxRuntimeRunner

    models = list(models)
    check = model_check(models)

    def cpu() -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(models, threads=threads, what=what)

    def primary() -> TensorRTRunner:
        return TensorRTRunner(models, specs() if callable(specs) else specs, engines_dir=engines_dir,
                              cache=cache, overflow=cpu, what=what)

    if not guard:
        return primary()
    return GuardedRunner(primary, cpu, timeout=inference_timeout, on_degraded=on_degraded,
                         request_restart=request_restart, check=check)


def create_tensorrt_mtcnn_runner(model_dir: str | Path | None = None, *, guard: bool = True,
                                 inference_timeout: float = 5.0, on_degraded: Callable[[str], None] | None = None,
                                 request_restart: Callable[[str], bool] | None = ask_systemd_for_restart,
                                 threads: int = 2, detector: Any = None, source: Any = None,
                                 **options: Any) -> Any:
    """MTCNN on TensorRT (`create_tensorrt_runner` with `engine_specs(model_dir, **options)`), behind the
    watchdog unless guard=False.

    `detector` ([detector] section) and `source` ([source] section: height/width) fill the settings not
    given explicitly; `options_from_config(cfg)` gives them all; `engines_dir` (or `cache`) is required.
    """
    from agent.vision.backends import MODEL_DIR

    if detector is not None:
        for key in DETECTOR_KEYS:
            if key == "inference_timeout":
                inference_timeout = float(getattr(detector, key, inference_timeout))
            elif key not in options and hasattr(detector, key):
                options[key] = getattr(detector, key)
    if source is not None and "input_size" not in options:
        options["input_size"] = (int(source.height), int(source.width))
    if "engines_dir" not in options:
        raise RunnerError("the tensorrt backend needs engines_dir (the [paths] engines folder)")
    engines_dir = options.pop("engines_dir")
    cache = options.pop("cache", None)
    folder = Path(model_dir) if model_dir is not None else MODEL_DIR

    def specs() -> dict[str, EngineSpec]:
        return mtcnn_profile.engine_specs(folder, **{"input_size": DEFAULT_INPUT_SIZE, **options})

    return create_tensorrt_runner(mtcnn_models(folder), specs, engines_dir=engines_dir, cache=cache,
                                  guard=guard, inference_timeout=inference_timeout, on_degraded=on_degraded,
                                  request_restart=request_restart, threads=threads, what="MTCNN")


def mtcnn_runner(model_dir: str | Path | None = None, *, pnet_threads: int = 0, **options: Any) -> Runner:
    """The registry's MTCNN factory (backends.create_mtcnn_runner): `create_tensorrt_mtcnn_runner`
    (pnet_threads is ONNX Runtime's only)."""
    return create_tensorrt_mtcnn_runner(model_dir, **options)
