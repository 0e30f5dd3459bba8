"""The house's layout holds (docs/architecture.md): no room imports one above it, and the registries of
runners and readers agree with the config's choices and with each other."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "agent"

# the shells at the top: the command line, the run loop, the web console
TOP = ("agent.cli", "agent.commands", "agent.service", "agent.web")
# rooms that may import from nowhere above them: (room, rooms it must not import)
NEVER = {
    "agent.vision": TOP + ("agent.sync", "agent.gallery", "agent.sightings", "agent.naming", "agent.store",
                           "agent.cameras", "agent.frame_events", "agent.frame_output"),
    "agent.sync": TOP + ("agent.cameras", "agent.frame_events", "agent.frame_output"),
    "agent.config": TOP + ("agent.vision.pipeline", "agent.vision.mtcnn", "agent.sync", "agent.store",
                           "agent.gallery", "agent.sightings", "agent.events"),
    "agent.events": TOP + ("agent.store", "agent.sync", "agent.vision", "agent.gallery", "agent.sightings"),
}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _inside(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def imports() -> dict[str, set[str]]:
    """module -> the agent modules it imports (at the top or inside a function: a lazy import counts)."""
    found: dict[str, set[str]] = {}
    for path in sorted(AGENT.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[_module(path)] = {n for n in names if _inside(n, "agent")}
    return found


def test_no_module_imports_back_up():
    graph = imports()
    wrong = []
    for module, targets in graph.items():
        if not any(_inside(module, top) for top in TOP) and module != "agent.__main__":
            wrong += [f"{module} -> {t}" for t in targets if any(_inside(t, top) for top in TOP)]
        for room, banned in NEVER.items():
            if _inside(module, room):
                wrong += [f"{module} -> {t}" for t in targets
                          if any(_inside(t, b) for b in banned) and not _inside(t, room)]
    assert not wrong, "imports running back up (docs/architecture.md):\n" + "\n".join(sorted(set(wrong)))


def test_the_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The test above would fail on a vision module that imports the service, lazily or not."""
    fake = tmp_path / "agent" / "vision"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from agent.service import Service\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "AGENT", tmp_path / "agent")
    with pytest.raises(AssertionError, match="agent.vision.bad -> agent.service"):
        test_no_module_imports_back_up()


def test_runner_registry_drives_the_config_choices():
    from agent.config import DetectorSection, EmbeddingSection
    from agent.vision import backends
    from agent.vision.embed import EMBEDDERS

    def choices(cls: type, key: str) -> tuple[str, ...]:
        return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == key)

    assert choices(DetectorSection, "backend") == ("auto", *backends.runner_names("mtcnn"))
    assert choices(EmbeddingSection, "backend") == ("dlib", *backends.runner_names("resnet"))
    assert set(backends.RUNNERS) >= {"onnxruntime", "tensorrt"}
    assert set(EMBEDDERS) == set(backends.runner_names("resnet"))
    for name, kind in backends.RUNNERS.items():
        assert kind.name == name and kind.about
        if "mtcnn" in kind.networks:
            assert callable(kind.mtcnn_runner())  # imports without TensorRT installed


def test_every_uri_kind_has_a_reader_with_the_documented_attributes(tmp_path):
    from agent import sources

    (tmp_path / "clip.mp4").write_bytes(b"")
    kinds = {sources.parse_uri(uri)[0] for uri in ("0", "/dev/video0", "csi://0", "gst:videotestsrc ! appsink",
                                                   "rtsp://cam/1", str(tmp_path), str(tmp_path / "clip.mp4"))}
    assert kinds == set(sources.READERS)
    for kind, (make, live) in sources.READERS.items():
        assert live == (kind not in ("file", "folder"))
        reader = make(kind, tmp_path if kind in ("file", "folder") else 0, sources.SourceSection(),
                      sources.ImageCaps())
        for attribute in ("bgr", "fps", "index", "skipped"):
            assert hasattr(reader, attribute), (kind, attribute)
        for method in ("describe", "open", "read", "close"):
            assert callable(getattr(reader, method)), (kind, method)
        assert reader.index == -1 and reader.skipped == 0 and reader.describe()
