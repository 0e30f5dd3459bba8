"""Test double of the `tensorrt` Python API subset face-agent uses (tests/fakegpu/README.md).

Builder + ONNX parser + builder config + optimisation profile -> a serialized "engine" (the ONNX graph and
what the build decided, as bytes); Runtime -> ICudaEngine (tensor names, modes, dtypes, profile shapes)
-> IExecutionContext (input shapes within the profile, tensor addresses, execute_async_v3 on a stream of
the pycuda double). The arithmetic is ONNX Runtime's on the bytes found at the tensor addresses in the
simulated device memory. The version is DEVICE.tensorrt_version (tests/fakegpu/fakegpu.py).
"""

from __future__ import annotations

import enum
import json
import struct
import threading
import weakref
from typing import Any

import numpy as np
from fakegpu import DEVICE

MAGIC = b"FAKETRT\x01"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return DEVICE.tensorrt_version
    raise AttributeError(name)


def _major() -> int:
    return int(str(DEVICE.tensorrt_version).split(".")[0])


# --------------------------------------------------------------------------------------------- enums

class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4


def nptype(dtype: DataType) -> type:
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32, DataType.BOOL: np.bool_}[dtype]


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    TF32 = 7


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:  # overridden
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity: Any = ILogger.Severity.WARNING):
        ILogger.__init__(self)
        self.min_severity = min_severity

    def log(self, severity: Any, msg: str) -> None:
        if severity <= self.min_severity:
            print(f"[TRT] {msg}")


def _error(logger: ILogger, msg: str) -> None:
    logger.log(ILogger.Severity.ERROR, msg)


# --------------------------------------------------------------------------------------------- builder

class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType = DataType.FLOAT):
        self.name = name
        self.shape = shape
        self.dtype = dtype


class INetworkDefinition:
    def __init__(self, flags: int):
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.onnx: bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


class _ParserError:
    def __init__(self, desc: str):
        self._desc = desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return f"In node -1 (parse): {self._desc}"


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger):
        self.network = network
        self.logger = logger
        self._errors: list[_ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> _ParserError:
        return self._errors[index]

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnxruntime as ort

        if _major() < 10 and not self.network.flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH):
            self._errors.append(_ParserError("the ONNX parser only supports networks with an explicit batch "
                                             "dimension (create the network with EXPLICIT_BATCH)"))
            return False
        try:
            session = ort.InferenceSession(bytes(model), providers=["CPUExecutionProvider"])
        except Exception as exc:
            self._errors.append(_ParserError(f"invalid ONNX model: {exc}"))
            return False

        def dims(shape: list) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else -1 for d in shape)

        self.network.inputs = [ITensor(i.name, dims(i.shape)) for i in session.get_inputs()]
        self.network.outputs = [ITensor(o.name, dims(o.shape)) for o in session.get_outputs()]
        self.network.onnx = bytes(model)
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        self.shapes[input] = tuple(tuple(int(d) for d in s) for s in (min, opt, max))

    def get_shape(self, input: str) -> list[tuple[int, ...]]:
        return list(self.shapes.get(input, ()))

    def valid(self) -> bool:
        for lo, opt, hi in self.shapes.values():
            if not (len(lo) == len(opt) == len(hi)) or not all(1 <= a <= b <= c for a, b, c in zip(lo, opt, hi)):
                return False
        return True


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags = {BuilderFlag.TF32}  # TensorRT's default: TF32 on
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return BuilderFlag(flag) in self.flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, limit: int) -> None:
        if int(limit) < 0:
            raise ValueError("pool limit must be >= 0")
        self.pools[MemoryPoolType(pool)] = int(limit)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pools.get(MemoryPoolType(pool), DEVICE.total_memory)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not profile.valid():
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)


class IHostMemory(bytes):
    """The serialized engine: supports the buffer protocol (memoryview, bytes), as TensorRT's does."""

    @property
    def nbytes(self) -> int:
        return len(self)


class Builder:
    def __init__(self, logger: ILogger):
        self.logger = logger

    @property
    def platform_has_fast_fp16(self) -> bool:
        return DEVICE.compute_capability >= (5, 3)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        if DEVICE.fires("build_fail"):
            _error(self.logger, "[optimizer.cpp::computeCosts] Error Code 10: Internal Error (could not find any "
                                "implementation for node (fakegpu build_fail))")
            return None
        if not network.inputs:
            _error(self.logger, "Network must have at least one input")
            return None
        profile = config.profiles[0] if config.profiles else None
        shapes = {}
        for tensor in network.inputs:
            dynamic = any(d == -1 for d in tensor.shape)
            if profile is None or tensor.name not in profile.shapes:
                if dynamic:
                    _error(self.logger, f"[network.cpp::validate] Error Code 4: Internal Error (Network has dynamic "
                                        f"or shape inputs, but no optimization profile has been defined for "
                                        f"{tensor.name}.)")
                    return None
                shapes[tensor.name] = (tensor.shape,) * 3
                continue
            lo, opt, hi = profile.shapes[tensor.name]
            if len(lo) != len(tensor.shape) or any(d != -1 and not (a == b == c == d)
                                                   for d, a, b, c in zip(tensor.shape, lo, opt, hi)):
                _error(self.logger, f"[optimizationProfile.cpp] Error Code 4: Internal Error ({tensor.name}: "
                                    f"profile {lo}..{hi} does not match the network's dimensions {tensor.shape})")
                return None
            shapes[tensor.name] = (lo, opt, hi)
        header = {"version": DEVICE.tensorrt_version, "device": DEVICE.name,
                  "fp16": config.get_flag(BuilderFlag.FP16), "tf32": config.get_flag(BuilderFlag.TF32),
                  "inputs": [[t.name, list(t.shape)] for t in network.inputs],
                  "outputs": [[t.name, list(t.shape)] for t in network.outputs],
                  "profile": {k: [list(s) for s in v] for k, v in shapes.items()}}
        blob = json.dumps(header).encode()
        return IHostMemory(MAGIC + struct.pack("<I", len(blob)) + blob + network.onnx)


# --------------------------------------------------------------------------------------------- runtime

class Runtime:
    def __init__(self, logger: ILogger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: Any) -> ICudaEngine | None:
        data = bytes(data)
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            _error(self.logger, "[runtime.cpp::deserializeCudaEngine] Error Code 1: Serialization (Serialization "
                                "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        (size,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
        try:
            header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + size])
        except ValueError:
            _error(self.logger, "[runtime.cpp::deserializeCudaEngine] Error Code 1: Serialization (corrupt plan)")
            return None
        if header.get("version") != DEVICE.tensorrt_version:
            _error(self.logger, f"[runtime.cpp::deserializeCudaEngine] Error Code 1: Serialization (The engine plan "
                                f"file is not compatible with this version of TensorRT, expecting library version "
                                f"{DEVICE.tensorrt_version} got {header.get('version')}, please rebuild.)")
            return None
        onnx = data[len(MAGIC) + 4 + size:]
        engine = ICudaEngine(header, onnx, self.logger)
        if not DEVICE.reserve(id(engine), len(onnx)):
            _error(self.logger, "[runtime.cpp] Error Code 2: OutOfMemory (engine weights)")
            return None
        weakref.finalize(engine, DEVICE.unreserve, id(engine))
        return engine


class ICudaEngine:
    def __init__(self, header: dict, onnx: bytes, logger: ILogger):
        self.header = header
        self.onnx = onnx
        self.logger = logger
        self._modes = {name: TensorIOMode.INPUT for name, _ in header["inputs"]}
        self._modes.update({name: TensorIOMode.OUTPUT for name, _ in header["outputs"]})
        self._shapes = {name: tuple(shape) for name, shape in header["inputs"] + header["outputs"]}
        self._names = [name for name, _ in header["inputs"]] + [name for name, _ in header["outputs"]]
        self._session: Any = None
        self._session_lock = threading.Lock()
        self._output_shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    @property
    def device_memory_size(self) -> int:
        return len(self.onnx) // 4

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._modes.get(name, TensorIOMode.NONE)

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._shapes.get(name, ())

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if profile_index != 0 or self._modes.get(name) != TensorIOMode.INPUT:
            _error(self.logger, f"get_tensor_profile_shape: {name!r} is not an input of profile {profile_index}")
            return []
        return [tuple(s) for s in self.header["profile"][name]]

    def create_execution_context(self) -> IExecutionContext | None:
        context = IExecutionContext(self)
        if DEVICE.fires("context_oom") or not DEVICE.reserve(id(context), self.device_memory_size):
            _error(self.logger, "[executionContext.cpp::ExecutionContext] Error Code 2: OutOfMemory (Requested size "
                                f"was {self.device_memory_size} bytes.)")
            return None
        weakref.finalize(context, DEVICE.unreserve, id(context))
        return context

    # -- the arithmetic ---------------------------------------------------------------------------
    def session(self) -> Any:
        import onnxruntime as ort

        with self._session_lock:
            if self._session is None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                self._session = ort.InferenceSession(self.onnx, options, providers=["CPUExecutionProvider"])
            return self._session

    def output_shapes(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        key = tuple(sorted(inputs.items()))
        if key not in self._output_shapes:
            feeds = {name: np.zeros(shape, np.float32) for name, shape in inputs.items()}
            outs = self.session().run([n for n, _ in self.header["outputs"]], feeds)
            self._output_shapes[key] = {n: tuple(o.shape) for (n, _), o in zip(self.header["outputs"], outs)}
        return self._output_shapes[key]


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self.engine = engine
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        engine = self.engine
        if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            _error(engine.logger, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name!r} is "
                                  "not an input tensor)")
            return False
        shape = tuple(int(d) for d in shape)
        lo, _, hi = engine.header["profile"][name]
        declared = engine.get_tensor_shape(name)
        if len(shape) != len(declared) or any(d != -1 and d != s for d, s in zip(declared, shape)) \
                or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            _error(engine.logger, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                                  f"failed, condition: satisfyProfile. Set dimension {list(shape)} for tensor {name} "
                                  f"does not satisfy any optimization profiles. Valid range for profile 0: "
                                  f"{list(lo)}..{list(hi)}.)")
            return False
        self._input_shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        engine = self.engine
        mode = engine.get_tensor_mode(name)
        if mode == TensorIOMode.INPUT:
            return self._input_shapes.get(name, engine.get_tensor_shape(name))
        if mode == TensorIOMode.OUTPUT:
            if not self.all_input_shapes_specified:
                return engine.get_tensor_shape(name)  # -1 where unknown
            return engine.output_shapes(self._input_shapes)[name]
        return ()

    @property
    def all_input_shapes_specified(self) -> bool:
        return all(n in self._input_shapes for n, _ in self.engine.header["inputs"])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            _error(self.engine.logger, f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Given "
                                       f"invalid tensor name: {name})")
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        import pycuda.driver as cuda

        engine = self.engine
        logger = engine.logger
        DEVICE.fires("execute")  # counts the calls (DEVICE.counters["execute"])
        stream = cuda.live_stream(int(stream_handle))
        if stream is None:
            _error(logger, "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid resource handle)")
            return False
        if stream.context.poisoned:  # the runtime answers with the sticky error of the context
            _error(logger, f"IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime ({stream.context.poisoned})")
            return False
        for name in self.engine._names:
            if engine.get_tensor_mode(name) == TensorIOMode.INPUT and name not in self._input_shapes:
                _error(logger, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check failed, "
                               f"condition: allInputDimensionsSpecified. Input shape of {name} is not set.)")
                return False
            if not self._addresses.get(name):
                _error(logger, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check failed, "
                               f"condition: mContext.profileObliviousBindings.at(profileObliviousIndex) || "
                               f"getPtrOrNull(mOutputAllocators, profileObliviousIndex). Neither address or "
                               f"allocator is set for {'input' if name in self._input_shapes else 'output'} "
                               f"tensor {name}.)")
                return False
        if DEVICE.fires("launch_failure"):
            _error(logger, "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (too many resources requested "
                           "for launch)")
            return False
        inputs = dict(self._input_shapes)
        addresses = dict(self._addresses)
        sticky = DEVICE.fires("illegal_address")
        hang = DEVICE.fires("hang")
        fp16 = bool(engine.header.get("fp16"))

        def kernel() -> None:
            from pycuda.driver import _device_bytes, _StickyError

            if hang:
                DEVICE.hang_release.wait()
            if sticky:
                raise _StickyError("illegal_address")
            feeds = {}
            for name, shape in inputs.items():
                nbytes = int(np.prod(shape)) * 4
                feeds[name] = _device_bytes(addresses[name], nbytes).view(np.float32).reshape(shape).copy()
            names = [n for n, _ in engine.header["outputs"]]
            outs = engine.session().run(names, feeds)
            for name, out in zip(names, outs):
                out = np.ascontiguousarray(out, np.float32)
                if fp16:
                    out = out.astype(np.float16).astype(np.float32)
                _device_bytes(addresses[name], out.nbytes)[:] = np.frombuffer(out.tobytes(), np.uint8)

        stream.enqueue(kernel)
        return True
