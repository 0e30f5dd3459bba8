#!/usr/bin/env python3
"""Cost of the inference watchdog (GuardedRunner) and how fast it falls back, on the CPU.

    PYTHONPATH=. python bench/bench_watchdog.py [--calls 2000] [--timeout 0.5]

1. per-call overhead: the same R-Net batch through ONNX Runtime directly and through GuardedRunner
   (every call handed to the worker thread and waited for), alternated over 3 rounds, median us per call;
2. time for the first call of a backend that stalls forever to come back from the CPU fallback
   (stall, rebuild, stall again, fallback load): about 2 x timeout plus the ONNX Runtime load.
The machine may be shared: read the per-round figures, not one number.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision.backends.onnxruntime import OnnxRuntimeMtcnnRunner  # noqa: E402
from agent.vision.backends.watchdog import GuardedRunner  # noqa: E402


class Stalling:
    name = "stalling"

    def __init__(self, release: threading.Event):
        self.release = release

    def run(self, net, batch):
        self.release.wait(3600)
        raise RuntimeError("released")

    def close(self):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args()

    batch = np.random.default_rng(0).uniform(-1, 1, (1, 3, 24, 24)).astype(np.float32)
    plain = OnnxRuntimeMtcnnRunner(threads=1)
    guarded = GuardedRunner(lambda: OnnxRuntimeMtcnnRunner(threads=1), OnnxRuntimeMtcnnRunner, timeout=5.0)
    results: dict[str, list[float]] = {"plain": [], "guarded": []}
    for _ in range(3):
        for name, backend in (("plain", plain), ("guarded", guarded)):
            start = time.perf_counter()
            for _ in range(args.calls):
                backend.run("rnet", batch)
            results[name].append((time.perf_counter() - start) / args.calls * 1e6)
    for name, values in results.items():
        print(f"{name:8s} R-Net batch 1: median {statistics.median(values):7.0f} us/call  "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print(f"overhead: {statistics.median(results['guarded']) - statistics.median(results['plain']):.0f} us/call")

    release = threading.Event()
    start = time.perf_counter()
    stalled = GuardedRunner(lambda: Stalling(release), OnnxRuntimeMtcnnRunner, timeout=args.timeout)
    stalled.run("rnet", batch)
    print(f"stall -> rebuild -> stall -> CPU fallback: {time.perf_counter() - start:.2f} s "
          f"(timeout {args.timeout} s; degraded={stalled.degraded})")
    release.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
