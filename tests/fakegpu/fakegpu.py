"""The simulated GPU behind the tensorrt and pycuda test doubles: memory, contexts, streams, faults.

One DEVICE per process (like device 0). Tests reset it (`DEVICE.reset()`) and switch faults on
(`DEVICE.inject`). See README.md in this folder for what the doubles check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

STICKY = {
    "illegal_address": "an illegal memory access was encountered",
    "launch_failure": "unspecified launch failure",
}


@dataclass
class Fault:
    kind: str
    after: int = 0  # let this many matching operations pass first
    times: int = 1  # then fire this many times (-1: forever)
    seen: int = 0


@dataclass
class Allocation:
    address: int
    nbytes: int
    context: object
    data: np.ndarray = field(repr=False)  # uint8 view of the device memory


class Device:
    """Device 0: an Orin-like integrated GPU by default."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self, name: str = "Orin (fakegpu)", compute_capability: tuple[int, int] = (8, 7),
              multiprocessors: int = 8, total_memory: int = 8 << 30, driver_version: int = 12020,
              tensorrt_version: str = "10.3.0", present: bool = True) -> None:
        with self._lock:
            self.name = name
            self.compute_capability = compute_capability
            self.multiprocessors = multiprocessors
            self.total_memory = total_memory
            self.driver_version = driver_version
            self.tensorrt_version = tensorrt_version
            self.present = present
            self.initialised = False
            self.allocations: dict[int, Allocation] = {}
            self.reserved: dict[int, int] = {}  # engine/context memory by owner id
            self._next_address = 0x7F0000000000  # bump allocator: addresses are never reused
            self.faults: list[Fault] = []
            self.hang_release = threading.Event()
            self.primary = None  # the primary context object (pycuda.driver._PrimaryContext)
            self.counters: dict[str, int] = {}
            self.pageable_copies = 0
            self.local = threading.local()

    # -- faults ------------------------------------------------------------------------------------
    def inject(self, kind: str, after: int = 0, times: int = 1) -> None:
        """Make the (after+1)-th and following `times` operations of `kind` fail (see README.md)."""
        with self._lock:
            self.faults.append(Fault(kind, after, times))

    def fires(self, kind: str) -> bool:
        with self._lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1
            for fault in self.faults:
                if fault.kind != kind:
                    continue
                fault.seen += 1
                if fault.seen > fault.after and (fault.times < 0 or fault.seen <= fault.after + fault.times):
                    return True
            return False

    def release_hangs(self) -> None:
        self.hang_release.set()

    # -- memory ------------------------------------------------------------------------------------
    @property
    def used(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in self.allocations.values()) + sum(self.reserved.values())

    @property
    def free(self) -> int:
        return self.total_memory - self.used

    def allocate(self, nbytes: int, context: object) -> Allocation:
        with self._lock:
            if nbytes > self.free or self.fires("alloc_oom"):
                raise MemoryError("out of memory")
            address = self._next_address
            # 256-byte aligned like cudaMalloc, with a gap so that an overrun never lands in a neighbour
            self._next_address += (int(nbytes) + 255) // 256 * 256 + 0x10000
            alloc = Allocation(address, int(nbytes), context, np.zeros(int(nbytes), np.uint8))
            self.allocations[address] = alloc
            return alloc

    def find(self, address: int, nbytes: int) -> Allocation | None:
        """The live allocation holding [address, address + nbytes), or None (an illegal access)."""
        with self._lock:
            for alloc in self.allocations.values():
                if alloc.address <= address and address + nbytes <= alloc.address + alloc.nbytes:
                    return alloc
            return None

    def reserve(self, owner: int, nbytes: int) -> bool:
        with self._lock:
            if nbytes > self.free:
                return False
            self.reserved[owner] = self.reserved.get(owner, 0) + int(nbytes)
            return True

    def unreserve(self, owner: int) -> None:
        with self._lock:
            self.reserved.pop(owner, None)

    def release_context(self, context: object) -> None:
        """The primary context was released for good: everything allocated in it is gone."""
        with self._lock:
            for address in [a for a, alloc in self.allocations.items() if alloc.context is context]:
                del self.allocations[address]


DEVICE = Device()
