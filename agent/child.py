"""Run one of the package's modules in a child process (`python -m agent.x ...`).

For work that must not share the agent's process: dlib's SVM training holds the GIL for seconds (the video
loop would stall), and the first-use conversion of dlib's ResNet needs ~100 MiB that the agent would keep
as its peak memory for the rest of its life.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import agent

PACKAGE_ROOT = str(Path(agent.__file__).resolve().parents[1])


def run_module(module: str, *args: str, nice: int = 0, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` with this package importable; raises RuntimeError when it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=(lambda: os.nice(nice)) if nice else None)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done
