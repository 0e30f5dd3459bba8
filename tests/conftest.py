"""Shared fixtures and helpers: the real photos in ../shared/faces, configs in tmp folders, wait_for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "faces"
FR = SHARED / "face_recognition"
DLIB = SHARED / "dlib"
COMPREFACE = SHARED / "CompreFace"


def pytest_collection_modifyitems(config, items):
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"{SHARED} not found")
        for item in items:
            if "shared" in item.fixturenames:
                item.add_marker(skip)


class CliAgent:
    """`face-agent` as a user runs it: its own agent.toml (`toml`) in `folder`, a process per command."""

    def __init__(self, folder: Path, toml: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.toml").write_text(toml)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(self.folder / "agent.toml"), *args],
                             capture_output=True, text=True, cwd=self.folder, timeout=900,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        if check:
            assert out.returncode == 0, out.stderr[-3000:]
        return out

    def events(self, *args: str) -> list[dict]:
        """The whole event log (`events --json --limit 0`, more filters in `args`), each event as published."""
        out = self("events", "--json", "--limit", "0", *args).stdout
        return [json.loads(x) for x in out.splitlines() if x.strip()]

    def run(self, video: Path) -> list[dict]:
        """Run on a video; the events of this run."""
        before = {e["event_id"] for e in self.events()}
        self("run", "--source", str(video))
        return [e for e in self.events() if e["event_id"] not in before]


def wait_for(predicate, timeout: float = 15.0) -> bool:
    """Poll `predicate` every 50 ms for up to `timeout` seconds: True as soon as it holds (a condition to wait
    on, instead of a sleep long enough on a slow machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


def make_config(tmp: Path, **sections):
    """A Config whose every state folder lies under `tmp`; sections override defaults."""
    from agent.config import config_from_dict

    data = {"paths": {"storage": "storage", "engines": "engines", "svm": "svm", "faces": "faces"}}
    for name, values in sections.items():
        if isinstance(values, list):  # [[sources]]
            data[name] = values
        else:
            data.setdefault(name, {}).update(values)
    return config_from_dict(data, base_dir=tmp, env={})


@pytest.fixture
def mosquitto_factory(tmp_path):
    """Make real mosquitto brokers (tests/broker.py: Broker(folder, users=..., acl=...)); all stopped at
    the end."""
    from broker import Broker

    made = []

    def make(name: str = "broker", **kwargs) -> Broker:
        made.append(Broker(tmp_path / name, **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def mosquitto(mosquitto_factory):
    """A started real mosquitto on a free 127.0.0.1 port (anonymous, persistence on); stop()/start() to
    simulate outages."""
    return mosquitto_factory().start()


@pytest.fixture(scope="session")
def analyzer(tmp_path_factory):
    """One FaceAnalyzer (MTCNN + dlib models loaded once) for the whole session."""
    from agent.vision.recognizer import FaceAnalyzer

    return FaceAnalyzer(make_config(tmp_path_factory.mktemp("analyzer")))


FAKEGPU = ROOT / "tests" / "fakegpu"
_FAKE_MODULES = ("tensorrt", "pycuda", "fakegpu")


def _drop_fake_modules() -> None:
    import sys

    for name in list(sys.modules):
        if name.split(".")[0] in _FAKE_MODULES:
            del sys.modules[name]


@pytest.fixture
def fakegpu(monkeypatch):
    """The TensorRT/pycuda test double (tests/fakegpu/README.md) in place of the real packages: yields the
    simulated device (`fakegpu.DEVICE`: reset, inject faults, read memory); everything is removed after."""
    import sys

    from agent.vision.backends import trt_probe

    _drop_fake_modules()
    monkeypatch.syspath_prepend(str(FAKEGPU))
    monkeypatch.setattr(trt_probe, "_LOGGER", None)  # the ILogger subclass is made from the double's class
    monkeypatch.setattr(trt_probe, "_NEWER_WARNED", False)
    import fakegpu as control
    import pycuda.driver

    control.DEVICE.reset()
    pycuda.driver._reset()
    yield control.DEVICE
    control.DEVICE.release_hangs()  # let abandoned worker threads finish
    _drop_fake_modules()
    sys.modules.pop("tensorrt", None)


@pytest.fixture
def cli(tmp_path, capsys, shared):
    """`cli(*argv)` runs `face-agent -q -c <tmp>/agent.toml *argv` in this process (MQTT off, every state folder
    in tmp_path); returns (exit code, stdout, stderr)."""
    from agent.cli import main

    (tmp_path / "agent.toml").write_text('[paths]\nfaces = "faces"\nstorage = "storage"\nsvm = "svm"\n'
                                         'engines = "engines"\n[mqtt]\nenabled = false\n')

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["-q", "-c", str(tmp_path / "agent.toml"), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
