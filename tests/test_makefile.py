"""The Makefile: `make run` installs the runtime only, `make test` adds the test extras (README's two commands)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def recipe(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run for a fresh clone (a venv that does not exist yet)."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={venv}", "ARGS=--source 0"],
                         capture_output=True, text=True, check=True)
    return [line.replace(str(venv), "VENV") for line in out.stdout.splitlines()
            if line.strip() and not line.startswith("make")]


def test_make_run_installs_the_runtime_only(tmp_path):
    lines = recipe("run", tmp_path / "venv")
    installs = [line for line in lines if "pip install" in line]
    assert any(line.endswith("pip install -q -e .") for line in installs), lines
    for extra in ("[test]", "mtcnn", "pytest", "ruff", "matplotlib"):
        assert not any(extra in line for line in installs), (extra, lines)
    assert lines[-1] == "VENV/bin/face-agent run --source 0"


def test_make_test_adds_the_test_extras_and_runs_ruff_and_pytest(tmp_path):
    lines = recipe("test", tmp_path / "venv")
    installs = [line for line in lines if "pip install" in line]
    assert any(line.endswith("pip install -q -e .") for line in installs)
    assert any("'.[test]'" in line for line in installs) and any("mtcnn==" in line for line in installs)
    assert any(line.endswith("bin/ruff check .") for line in lines)
    assert any("bin/pytest" in line for line in lines)
    extras = (ROOT / "pyproject.toml").read_text()
    assert 'test = ["pytest' in extras and "matplotlib" in extras.split("[project.optional-dependencies]")[1]


def test_the_rtsp_camera_packages_are_installed_by_make_test_and_ci(tmp_path):
    """tests/test_rtsp.py's camera (gst-rtsp-server for the system python3) comes with a fresh clone's setup."""
    packages = ("python3-gi", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad",
                "gstreamer1.0-plugins-ugly", "gstreamer1.0-libav")
    deps = "\n".join(recipe("system-deps", tmp_path / "venv"))
    ci = (ROOT / ".ci" / "run").read_text()
    for package in packages:
        assert package in deps, (package, deps)
        assert package in ci, package
    assert "system-deps" in subprocess.run(["make", "-n", "-p", "-C", str(ROOT), "test"], capture_output=True,
                                           text=True).stdout.split("\ntest:")[1].splitlines()[0]
