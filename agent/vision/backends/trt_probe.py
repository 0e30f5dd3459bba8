"""What TensorRT, pycuda and GPU this machine has: the environment probe of the TensorRT runner.

`tensorrt` and `pycuda` are imported lazily (`_import`): this module imports, and `tensorrt_status`,
`auto_kind` and `check_tensorrt_version` answer, without them. Supported: TensorRT 8.6 (JetPack 6.0) and
10.x (JetPack 6.1/6.2) with Python 3.10; an older TensorRT (JetPack 5: 8.5 and Python 3.8) is refused with
one line (`check_tensorrt_version`), a newer major is tried with a warning. `describe_device` says what
identifies GPU 0 for an engine (the engine cache's key); `_TrtLog` routes TensorRT's log into Python
logging and keeps each thread's last errors (an `execute_async_v3` that returns False says why only there).
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from typing import Any

from agent.vision.backends import RunnerError
from agent.vision.backends.engine_cache import DeviceInfo, EngineCacheError

log = logging.getLogger(__name__)

# what this code is written and checked against (docs/tensorrt.md): JetPack 6.0 ships TensorRT 8.6,
# JetPack 6.1/6.2 ship TensorRT 10.3, both with Python 3.10 (Ubuntu 22.04)
# what this code is written and checked against (docs/tensorrt.md): JetPack 6.0 ships TensorRT 8.6,
# JetPack 6.1/6.2 ship TensorRT 10.3, both with Python 3.10 (Ubuntu 22.04)
SUPPORTED_PLATFORM = "JetPack 6 (Python 3.10, TensorRT 8.6 or 10.x)"
MIN_TENSORRT = (8, 6)
NEWEST_CHECKED_MAJOR = 10

_LOGGER: Any = None
_LOCK = threading.Lock()
_NEWER_WARNED = False


def tensorrt_version_tuple(version: str) -> tuple[int, ...]:
    """(major, minor) of a TensorRT version string such as "8.6.2.3" or "10.3.0"; () when unreadable."""
    numbers = re.findall(r"\d+", str(version))[:2]
    return tuple(int(n) for n in numbers) if numbers else ()


def check_tensorrt_version(version: str) -> str:
    """"" when this TensorRT is supported, else one line saying why not (and what is)."""
    found = tensorrt_version_tuple(version)
    if not found or found < MIN_TENSORRT:
        return (f"TensorRT {version or '(unknown version)'} is not supported: face-agent runs on "
                f"{SUPPORTED_PLATFORM}; JetPack 5 (TensorRT 8.5, Python 3.8) and older cannot run it")
    return ""


def import_tensorrt() -> Any:
    """The `tensorrt` module, or RunnerError when it is missing or of an unsupported version."""
    global _NEWER_WARNED
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RunnerError(f"TensorRT is not available: cannot import tensorrt ({exc}); on a Jetson it comes "
                          "with JetPack (python3-libnvinfer)") from None
    version = str(getattr(trt, "__version__", ""))
    problem = check_tensorrt_version(version)
    if problem:
        raise RunnerError(problem)
    if tensorrt_version_tuple(version)[0] > NEWEST_CHECKED_MAJOR and not _NEWER_WARNED:
        _NEWER_WARNED = True
        log.warning("TensorRT %s is newer than the %d.x this code was checked against (%s); trying it",
                    version, NEWEST_CHECKED_MAJOR, SUPPORTED_PLATFORM)
    return trt


def _import() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or RunnerError saying what is missing or unsupported."""
    trt = import_tensorrt()
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise RunnerError(f"pycuda is not available ({exc}); install it with pip (needs the CUDA toolkit)") \
            from None
    return trt, cuda


def require_tensorrt() -> None:
    """RunnerError unless a supported TensorRT and pycuda import (what a configured `tensorrt` needs)."""
    _import()


class _TrtLog:
    """TensorRT's log into Python logging, keeping the last error messages: an `execute_async_v3` that
    fails only returns False, the CUDA error that caused it is in the log (`take_errors`).

    One logger serves every Builder and Runtime of the process, but the errors are kept per thread:
    TensorRT calls the logger in the thread that made the failing call, and each runner's GPU calls run in
    its own watchdog worker, so the detector's worker never takes (or loses) the embedder's errors."""

    def __init__(self, trt: Any):
        severity = trt.ILogger.Severity
        self._local = threading.local()  # .errors: this thread's deque of recent error messages
        levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
                  severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG}
        errors = (severity.INTERNAL_ERROR, severity.ERROR)
        owner = self

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)  # the documented way to subclass ILogger

            def log(self, sev: Any, msg: str) -> None:
                level = levels.get(sev)
                if level is None:  # VERBOSE: thousands of lines during a build
                    return
                if sev in errors:
                    owner._errors().append(str(msg))
                log.log(level, "TensorRT: %s", msg)

        self.logger = Logger()

    def _errors(self) -> collections.deque[str]:
        errors = getattr(self._local, "errors", None)
        if errors is None:
            errors = self._local.errors = collections.deque(maxlen=8)
        return errors

    def take_errors(self) -> list[str]:
        """The error messages TensorRT logged in this thread since the last call (and forget them)."""
        errors = self._errors()
        taken = list(errors)
        errors.clear()
        return taken


def _trt_log(trt: Any) -> _TrtLog:
    global _LOGGER
    with _LOCK:
        if _LOGGER is None:
            _LOGGER = _TrtLog(trt)
        return _LOGGER


def _trt_logger(trt: Any) -> Any:
    """The one ILogger every Builder and Runtime here is created with."""
    return _trt_log(trt).logger


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): a supported TensorRT and pycuda import and a CUDA GPU is present."""
    try:
        trt, cuda = _import()
    except RunnerError as exc:
        return False, str(exc)
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own error types
        return False, f"CUDA cannot be initialised: {exc}"
    if count < 1:
        return False, "no CUDA GPU found"
    dev = cuda.Device(0)
    major, minor = dev.compute_capability()
    return True, f"TensorRT {trt.__version__}, GPU {dev.name()} (compute {major}.{minor})"


def fast_fp16_by_capability(major: int, minor: int) -> bool:
    """Native fp16 rate: Maxwell Tegra (5.3), P100 (6.0), Pascal Tegra (6.2), Volta and later; not 6.1.
    Used on every TensorRT version instead of creating a Builder only to ask platform_has_fast_fp16
    (deprecated from TensorRT 10.5)."""
    return (major, minor) in ((5, 3), (6, 0), (6, 2)) or major >= 7


def describe_device() -> DeviceInfo:
    """TensorRT version and what identifies GPU 0 for an engine: name, compute capability, SM count,
    memory size; and whether fp16 is fast there."""
    try:
        trt, cuda = _import()
    except RunnerError as exc:
        raise EngineCacheError(str(exc)) from None
    cuda.init()
    if cuda.Device.count() < 1:
        raise EngineCacheError("no CUDA GPU found")
    dev = cuda.Device(0)
    major, minor = dev.compute_capability()
    # TensorRT 11 removed weak typing (BuilderFlag.FP16): the ONNX graph is fp32, so is the engine
    fast_fp16 = hasattr(trt.BuilderFlag, "FP16") and fast_fp16_by_capability(major, minor)
    return DeviceInfo(tensorrt_version=str(trt.__version__), gpu_name=str(dev.name()),
                      compute_capability=f"{major}.{minor}", fast_fp16=fast_fp16,
                      multiprocessors=int(dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)),
                      memory_gb=round(dev.total_memory() / (1 << 30)))


def auto_kind() -> tuple[str, str]:
    """What `[detector] backend = "auto"` picks, and why."""
    ok, why = tensorrt_status()
    if ok:
        return "tensorrt", why
    return "onnxruntime", f"TensorRT not usable ({why})"
