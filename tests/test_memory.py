"""[service] mmap_threshold_kb: 0 leaves glibc's dynamic mmap threshold alone, N fixes it (in a fresh process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _set(threshold_kb: int) -> str:
    code = ("from agent.memory import limit_heap_growth; "
            f"print(limit_heap_growth({threshold_kb}), limit_heap_growth(0))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_zero_keeps_glibcs_dynamic_threshold_and_a_size_fixes_it_once():
    assert _set(0) == "False False"  # nothing set, and a later call may still set nothing
    assert _set(256) == "True True"  # set; later calls keep the first setting
