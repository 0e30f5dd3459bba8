"""Keep the heap from growing: a fixed glibc mmap threshold.

The detector allocates large short-lived buffers of ever-changing sizes (a P-Net input per pyramid scale,
R-/O-Net batches sized by the candidates of the frame, ONNX Runtime's im2col buffers). glibc's malloc
raises its mmap threshold dynamically each time such a buffer is freed, after which the next ones come
from the heap, which fragments and is never returned to the system: on the Hamilton clip the agent's
resident memory grew from 150 to 336 MiB. A fixed threshold (which turns the dynamic one off) keeps those
buffers mmapped and returned on free: the same clip peaks at about 196 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD = 256 * 1024  # bytes: allocations at least this large are mmapped and given back on free
_done = False


def limit_heap_growth() -> bool:
    """Set a fixed mmap threshold on glibc (a no-op elsewhere); True if it was set. Idempotent."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    _done = ok
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    return ok
