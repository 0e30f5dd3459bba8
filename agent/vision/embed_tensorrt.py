"""dlib's ResNet on TensorRT (Jetson / CUDA GPUs), from the ONNX file made by agent/vision/dlib_resnet.py.

One engine with a dynamic batch profile 1..`[embedding] batch_size` (opt 1: a frame usually holds one
face), built once and cached in `[paths] engines` by `backends.tensorrt.engine_cache`, whose record ties it
to the ONNX sha256, TensorRT version, GPU (name, compute capability, SMs, memory), precision, profile and
builder settings (a changed setup rebuilds, a damaged file is rebuilt). Larger requests are split into
chunks of batch_size.

Written to the tensor-name API that TensorRT 8.6 through 10.x share (older versions are refused):
`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`; device memory, pinned host buffers and the stream come from pycuda on the device's
primary context, pushed around every GPU call so the embedder can be used from any thread. The engine is
built by the same `backends.tensorrt.build_engine` as the MTCNN engines. `tensorrt` and `pycuda` are imported lazily:
importing this module needs neither. Not runnable on the CPU-only development machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agent.vision import dlib_resnet
from agent.vision.embed import DIM, ModelFileError, check_chips

log = logging.getLogger(__name__)

LABEL = "dlib-resnet"


def engine_spec(onnx_path: str | os.PathLike, batch_size: int, precision: str = "fp32",
                workspace_mb: int = 512) -> Any:
    """The EngineSpec of the embedding engine: (1..batch_size, 3, 150, 150) float32 input."""
    from agent.vision.backends.engine_cache import EngineSpec

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = dlib_resnet.CHIP_SIZE
    profile = [[1, 3, size, size], [1, 3, size, size], [batch_size, 3, size, size]]
    return EngineSpec(label=LABEL, onnx_path=Path(onnx_path), precision=precision,
                      profile={dlib_resnet.INPUT_NAME: profile}, options={"workspace_mb": int(workspace_mb)})


def _import() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or ModelFileError: missing, or a TensorRT older than 8.6 (JetPack 6)."""
    from agent.vision.backends import BackendError
    from agent.vision.backends.tensorrt import _import as import_both

    try:
        return import_both()
    except BackendError as exc:
        raise ModelFileError(str(exc)) from None


def _logger(trt: Any) -> Any:
    """The one TensorRT logger of the process, shared with the MTCNN engines (TensorRT 8.x treats the
    logger as a singleton: every Builder and Runtime must use the same one)."""
    from agent.vision.backends.tensorrt import _trt_logger

    return _trt_logger(trt)


class TensorRTEmbedder:
    """The converted ResNet as a TensorRT engine; `embed` runs chunks of up to batch_size chips."""

    name = "tensorrt"

    def __init__(self, onnx_path: str | os.PathLike, engines_dir: str | os.PathLike, batch_size: int = 8,
                 precision: str = "fp32", cache: Any = None):
        from agent.vision.backends.engine_cache import EngineCacheError
        from agent.vision.backends.tensorrt import engine_cache

        trt, cuda = _import()
        self._trt, self._cuda_mod = trt, cuda
        self.batch_size = max(1, int(batch_size))
        self.spec = engine_spec(onnx_path, self.batch_size, precision)
        self.mean_rgb = dlib_resnet.recorded_mean(onnx_path)
        self.cache = cache or engine_cache(engines_dir)
        self._engine: Any = None
        self._context: Any = None
        self._device: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        cuda.init()
        if cuda.Device.count() < 1:
            raise ModelFileError("no CUDA GPU found")
        self._ctx = cuda.Device(0).retain_primary_context()
        try:
            with self._pushed():
                try:
                    self._load(self.cache.load_or_build(self.spec))
                except ModelFileError as exc:
                    # a cached engine whose record matched but that TensorRT rejects: drop it, build once more
                    log.error("%s; rebuilding it", exc)
                    for path in reversed(self.cache.paths(self.spec)):
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                    self._load(self.cache.load_or_build(self.spec))
        except EngineCacheError as exc:
            self.close()
            raise ModelFileError(str(exc)) from None
        except BaseException:
            self.close()
            raise
        log.info("dlib ResNet on TensorRT %s (%s, %s, batch <= %d)", trt.__version__,
                 self.cache.device.gpu_name, self.cache.key(self.spec)["precision"], self.batch_size)

    @contextlib.contextmanager
    def _pushed(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def _load(self, data: bytes) -> None:
        trt, cuda = self._trt, self._cuda_mod
        runtime = trt.Runtime(_logger(trt))
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelFileError("TensorRT could not deserialize the dlib-resnet engine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if ins != [dlib_resnet.INPUT_NAME] or outs != [dlib_resnet.OUTPUT_NAME]:
            raise ModelFileError(f"dlib-resnet engine has inputs {ins} and outputs {outs}")
        context = engine.create_execution_context()
        if context is None:
            raise ModelFileError("TensorRT could not create an execution context (GPU memory?)")
        self._free_buffers()
        self._runtime, self._engine, self._context = runtime, engine, context
        self.stream = cuda.Stream()
        size = dlib_resnet.CHIP_SIZE
        shapes = {dlib_resnet.INPUT_NAME: (self.batch_size, 3, size, size),
                  dlib_resnet.OUTPUT_NAME: (self.batch_size, DIM)}
        for name, shape in shapes.items():
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if dtype != np.float32:
                raise ModelFileError(f"dlib-resnet engine tensor {name} is {dtype}, expected float32")
            self._host[name] = cuda.pagelocked_empty(int(np.prod(shape)), np.float32)
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            context.set_tensor_address(name, int(self._device[name]))

    def _infer(self, x: np.ndarray) -> np.ndarray:
        cuda = self._cuda_mod
        name_in, name_out = dlib_resnet.INPUT_NAME, dlib_resnet.OUTPUT_NAME
        if not self._context.set_input_shape(name_in, x.shape):
            raise ModelFileError(f"input shape {x.shape} rejected by the dlib-resnet engine profile")
        host_in = self._host[name_in][: x.size]
        host_in[:] = x.ravel()
        cuda.memcpy_htod_async(self._device[name_in], host_in, self.stream)
        if not self._context.execute_async_v3(self.stream.handle):
            raise ModelFileError(f"TensorRT execute_async_v3 failed for input {x.shape}")
        host_out = self._host[name_out][: x.shape[0] * DIM]
        cuda.memcpy_dtoh_async(host_out, self._device[name_out], self.stream)
        self.stream.synchronize()
        return host_out.reshape(x.shape[0], DIM).copy()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips)
        out = np.zeros((len(chips), DIM), dtype=np.float32)
        if self._context is None:
            raise ModelFileError("the TensorRT embedder is closed")
        with self._pushed():
            for start in range(0, len(chips), self.batch_size):
                x = dlib_resnet.preprocess(chips[start:start + self.batch_size], self.mean_rgb)
                out[start:start + len(x)] = self._infer(x)
        return out

    def _free_buffers(self) -> None:
        for mem in self._device.values():
            mem.free()
        self._device.clear()
        self._host.clear()

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            with self._pushed():
                self._free_buffers()
                self._context = None
                self._engine = None
            with contextlib.suppress(Exception):
                ctx.detach()
            self._ctx = None
