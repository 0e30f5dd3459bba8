"""glibc's mmap threshold: the trade between resident memory and CPU (`[service] mmap_threshold_kb`).

The detector allocates large short-lived buffers of ever-changing sizes (a P-Net input per pyramid scale,
R-/O-Net batches sized by the candidates of the frame, ONNX Runtime's im2col buffers). glibc's malloc
raises its mmap threshold dynamically each time such a buffer is freed, after which the next ones come
from the heap, which fragments and is not all returned to the system. A fixed threshold (which turns the
dynamic one off) keeps those buffers mmapped and returned on free, but every one of them is then a fresh
mapping whose pages fault in (and are zeroed) on every frame.

Measured on the Hamilton clip (bench/bench_video.py, 2 cores): a fixed 256 KiB threshold keeps the agent at
~230 MiB peak but costs about twice the CPU per frame (22.8 against 11.4 ms, full detection 70 against
26 ms); glibc's dynamic threshold peaks at ~290 MiB and levels off (7 passes over the clip: +30 MiB after the
first, then flat). The default is glibc's own (0); set 256 where memory matters more than frame rate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_done = False


def limit_heap_growth(threshold_kb: int = 256) -> bool:
    """Fix glibc's mmap threshold at `threshold_kb` KiB (0: leave glibc's dynamic threshold; a no-op off
    glibc); True if it was set. Idempotent: the first call that sets it wins."""
    global _done
    if _done:
        return True
    if threshold_kb <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_kb) * 1024))
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    _done = ok
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    return ok
