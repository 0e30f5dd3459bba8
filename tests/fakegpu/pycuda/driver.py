"""Test double of `pycuda.driver` on the simulated device (tests/fakegpu/fakegpu.py).

What real pycuda does and this double does too (tests/fakegpu/README.md): `init()` first; every call that
touches the device needs a current context on the calling thread (`LogicError: ... invalid device
context`); a per-thread context stack (`Context.push`/`Context.pop`); the primary context is shared and
reference-counted (`Device.retain_primary_context`, `Context.detach`); async copies and kernels run in
stream order when the stream is synchronised; a sticky error poisons the context for good; error classes
named as pycuda's (`Error`, `LogicError`, `LaunchError`, `MemoryError`, `RuntimeError`).
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
from fakegpu import DEVICE, STICKY


class Error(Exception):
    pass


class LogicError(Error):
    pass


class LaunchError(Error):
    pass


class MemoryError(Error):  # noqa: A001 - pycuda's name
    pass


class RuntimeError(Error):  # noqa: A001 - pycuda's name
    pass


class device_attribute:  # noqa: N801 - pycuda's name
    MULTIPROCESSOR_COUNT = 16
    COMPUTE_CAPABILITY_MAJOR = 75
    COMPUTE_CAPABILITY_MINOR = 76
    INTEGRATED = 18


_ids = itertools.count(1)


def _stack() -> list:
    local = DEVICE.local
    if not hasattr(local, "stack"):
        local.stack = []
    return local.stack


def _current(call: str) -> Context:
    """The calling thread's current context, or what the driver answers without one; raises the sticky
    error of a poisoned context."""
    if not DEVICE.initialised:
        raise LogicError(f"{call} failed: initialization error (cuda.init() not called)")
    stack = _stack()
    if not stack:
        raise LogicError(f"{call} failed: invalid device context - no currently active context?")
    ctx = stack[-1]
    ctx.check(call)
    return ctx


def init(flags: int = 0) -> None:
    if not DEVICE.present:
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")
    DEVICE.initialised = True


def get_driver_version() -> int:
    return DEVICE.driver_version


def get_version() -> tuple[int, int, int]:
    """The CUDA version pycuda was built against."""
    return (DEVICE.driver_version // 1000, DEVICE.driver_version % 1000 // 10, 0)


class Device:
    def __init__(self, number: int):
        if not DEVICE.initialised:
            raise LogicError("cuDeviceGet failed: initialization error (cuda.init() not called)")
        if number != 0 or not DEVICE.present:
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self.number = number

    @staticmethod
    def count() -> int:
        if not DEVICE.initialised:
            raise LogicError("cuDeviceGetCount failed: initialization error (cuda.init() not called)")
        return 1 if DEVICE.present else 0

    def name(self) -> str:
        return DEVICE.name

    def compute_capability(self) -> tuple[int, int]:
        return DEVICE.compute_capability

    def total_memory(self) -> int:
        return DEVICE.total_memory

    def get_attribute(self, attribute: int) -> int:
        values = {device_attribute.MULTIPROCESSOR_COUNT: DEVICE.multiprocessors,
                  device_attribute.COMPUTE_CAPABILITY_MAJOR: DEVICE.compute_capability[0],
                  device_attribute.COMPUTE_CAPABILITY_MINOR: DEVICE.compute_capability[1],
                  device_attribute.INTEGRATED: 1}
        if attribute not in values:
            raise LogicError(f"cuDeviceGetAttribute failed: invalid argument ({attribute})")
        return values[attribute]

    def retain_primary_context(self) -> Context:
        """The device's primary context (the one the CUDA runtime, hence TensorRT, uses), one more user."""
        if DEVICE.primary is None or DEVICE.primary.released:
            DEVICE.primary = Context(primary=True)
        DEVICE.primary.users += 1
        return DEVICE.primary

    def make_context(self, flags: int = 0) -> Context:
        ctx = Context(primary=False)
        ctx.users = 1
        ctx.push()
        return ctx


class Context:
    def __init__(self, primary: bool):
        self.primary = primary
        self.users = 0
        self.released = False
        self.poisoned = ""  # the sticky error, once one happened
        self.id = next(_ids)

    def check(self, call: str) -> None:
        if self.released:
            raise LogicError(f"{call} failed: invalid device context (context was released)")
        if self.poisoned:
            raise LaunchError(f"{call} failed: {self.poisoned}")

    def poison(self, kind: str) -> None:
        self.poisoned = STICKY[kind]

    def push(self) -> None:
        if self.released:
            raise LogicError("cuCtxPushCurrent failed: invalid device context")
        _stack().append(self)

    @staticmethod
    def pop() -> None:
        stack = _stack()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        stack.pop()

    @staticmethod
    def get_current() -> Context | None:
        stack = _stack()
        return stack[-1] if stack else None

    @staticmethod
    def synchronize() -> None:
        _current("cuCtxSynchronize")

    def detach(self) -> None:
        """One user less; the last one releases it (the primary context: everything in it is freed)."""
        if self.released:
            raise LogicError("cuCtxDetach failed: invalid device context")
        self.users -= 1
        if self.users <= 0:
            self.released = True
            DEVICE.release_context(self)
            stack = _stack()
            while self in stack:
                stack.remove(self)


class DeviceAllocation:
    def __init__(self, alloc: Any):
        self._alloc = alloc
        self.freed = False

    def __int__(self) -> int:
        return self._alloc.address

    __index__ = __int__

    def free(self) -> None:
        """pycuda frees in the context the memory was allocated in (it activates that context itself)."""
        if self.freed:
            return
        ctx = self._alloc.context
        ctx.check("cuMemFree")
        DEVICE.allocations.pop(self._alloc.address, None)
        self.freed = True

    def __del__(self) -> None:
        if not getattr(self, "freed", True) and not self._alloc.context.released \
                and not self._alloc.context.poisoned:
            DEVICE.allocations.pop(self._alloc.address, None)


def mem_alloc(nbytes: int) -> DeviceAllocation:
    ctx = _current("cuMemAlloc")
    if nbytes <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument")
    try:
        return DeviceAllocation(DEVICE.allocate(int(nbytes), ctx))
    except builtins.MemoryError:
        raise MemoryError("cuMemAlloc failed: out of memory") from None


def mem_get_info() -> tuple[int, int]:
    _current("cuMemGetInfo")
    return DEVICE.free, DEVICE.total_memory


_pinned: dict[int, np.ndarray] = {}  # id of each page-locked buffer's base -> the buffer


def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    _current("cuMemHostAlloc")
    array = np.empty(shape, dtype, order=order)
    _pinned[id(array)] = array
    return array


def _is_pinned(array: np.ndarray) -> bool:
    while array is not None:
        if id(array) in _pinned and _pinned[id(array)] is array:
            return True
        array = array.base if isinstance(array.base, np.ndarray) else None
    return False


def _address(dest: Any) -> int:
    return int(dest)


class Stream:
    def __init__(self, flags: int = 0):
        self.context = _current("cuStreamCreate")
        self.handle = next(_streams)
        self._ops: list[Callable[[], None]] = []
        _live_streams[self.handle] = self

    def enqueue(self, op: Callable[[], None]) -> None:
        self._ops.append(op)

    def synchronize(self) -> None:
        """Run what was queued, in order; a sticky error poisons the context and surfaces here, as
        `cuStreamSynchronize failed: ...` does."""
        _current("cuStreamSynchronize")
        ops, self._ops = self._ops, []
        for op in ops:
            try:
                op()
            except _StickyError as exc:
                self.context.poison(exc.kind)
                raise LaunchError(f"cuStreamSynchronize failed: {STICKY[exc.kind]}") from None

    def is_done(self) -> bool:
        return not self._ops

    def __del__(self) -> None:
        _live_streams.pop(getattr(self, "handle", None), None)


_streams = itertools.count(0x5000)
_live_streams: dict[int, Stream] = {}


class _StickyError(Exception):
    """Raised inside a queued op: the kernel broke the context."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def _device_bytes(address: int, nbytes: int) -> np.ndarray:
    alloc = DEVICE.find(address, nbytes)
    if alloc is None:
        raise _StickyError("illegal_address")
    start = address - alloc.address
    return alloc.data[start:start + nbytes]


def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream | None = None) -> None:
    _current("cuMemcpyHtoDAsync")
    src = np.asarray(src)
    if not _is_pinned(src):
        DEVICE.pageable_copies += 1
    address = _address(dest)

    def op() -> None:
        # the host buffer is read when the copy runs (stream order), as the GPU's DMA does
        current = np.frombuffer(np.ascontiguousarray(src).tobytes(), np.uint8)
        _device_bytes(address, current.size)[:] = current

    if stream is None:
        op()
    else:
        stream.enqueue(op)


def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
    _current("cuMemcpyDtoHAsync")
    if not _is_pinned(dest):
        DEVICE.pageable_copies += 1
    address = _address(src)

    def op() -> None:
        raw = _device_bytes(address, dest.nbytes)
        dest.reshape(-1).view(np.uint8)[:] = raw

    if stream is None:
        op()
    else:
        stream.enqueue(op)


def memcpy_dtod_async(dest: Any, src: Any, size: int, stream: Stream | None = None) -> None:
    _current("cuMemcpyDtoDAsync")
    to, frm = _address(dest), _address(src)

    def op() -> None:
        _device_bytes(to, size)[:] = _device_bytes(frm, size)

    if stream is None:
        op()
    else:
        stream.enqueue(op)


def memcpy_htod(dest: Any, src: np.ndarray) -> None:
    try:
        memcpy_htod_async(dest, src, None)
    except _StickyError as exc:
        _current("cuMemcpyHtoD").poison(exc.kind)
        raise LaunchError(f"cuMemcpyHtoD failed: {STICKY[exc.kind]}") from None


def memcpy_dtoh(dest: np.ndarray, src: Any) -> None:
    try:
        memcpy_dtoh_async(dest, src, None)
    except _StickyError as exc:
        _current("cuMemcpyDtoH").poison(exc.kind)
        raise LaunchError(f"cuMemcpyDtoH failed: {STICKY[exc.kind]}") from None


def live_stream(handle: int) -> Stream | None:
    """(for the tensorrt double) the stream with this handle, if it exists."""
    return _live_streams.get(handle)


def _reset() -> None:
    _pinned.clear()
    _live_streams.clear()

