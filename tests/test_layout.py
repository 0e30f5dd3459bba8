"""The house's layout holds (docs/architecture.md): no room imports one above it, and the registries of
runners and readers agree with the config's choices and with each other."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "agent"

# the rooms from the top down, as docs/architecture.md lists them: a module imports only its own layer or
# those below it (a lazy import inside a function counts too)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("agent.__main__", "agent.cli", "agent.commands"),
    ("agent.web",),
    ("agent.service",),
    ("agent.cameras",),
    ("agent.frame_events", "agent.frame_output", "agent.run_report", "agent.health"),
    ("agent.sync",),
    ("agent.naming", "agent.evaluation"),
    ("agent.enrollment_ops",),
    ("agent.gallery",),
    ("agent.sightings",),
    # the kept files: the event log, the people registry, the eval/tune reports (`forget` redacts a name in
    # them: the gallery calls agent.evaluation.report, which needs nothing of evaluation but its EvalError)
    ("agent.store", "agent.dbcheck", "agent.people", "agent.database", "agent.evaluation.report",
     "=agent.evaluation"),
    ("agent.events",),
    ("agent.sources", "agent.rtsp", "agent.images"),
    ("agent.vision",),
    ("agent.topics", "agent.config"),
    # the base: the runner registry (agent/vision/backends/__init__.py: the config's backend choices come
    # from it) and the small helpers every room may use
    ("=agent.vision.backends", "=agent", "agent.files", "agent.logsafe", "agent.systemd", "agent.memory",
     "agent.child", "agent.times", "agent.periodic"),
)


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _inside(name: str, room: str) -> bool:
    return name == room[1:] if room.startswith("=") else name == room or name.startswith(room + ".")


def layer(module: str) -> int:
    """The layer of a module: the most specific room that holds it (0 = the top)."""
    best, length = -1, -1
    for index, rooms in enumerate(LAYERS):
        for room in rooms:
            if _inside(module, room) and len(room) > length:
                best, length = index, len(room)
    assert best >= 0, f"{module} is in no room of LAYERS (docs/architecture.md)"
    return best


def imports() -> dict[str, set[str]]:
    """module -> the agent modules it imports (at the top or inside a function: a lazy import counts)."""
    modules = {_module(path): path for path in AGENT.rglob("*.py")}

    def resolve(name: str) -> str:  # `from agent.x import y`: y is a module or a name in agent.x
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    found: dict[str, set[str]] = {}
    for module, path in sorted(modules.items()):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[module] = {resolve(n) for n in names if _inside(n, "agent")} - {module}
    return found


def test_no_module_imports_back_up():
    # a package may import its own modules (the runner registry imports the runner it is asked for)
    wrong = [f"{module} -> {target}" for module, targets in imports().items() for target in sorted(targets)
             if layer(target) < layer(module) and not target.startswith(module + ".")]
    assert not wrong, "imports running back up (docs/architecture.md):\n" + "\n".join(sorted(wrong))


def test_the_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The test above would fail on a vision module that imports the service, lazily or not."""
    fake = tmp_path / "agent" / "vision"
    fake.mkdir(parents=True)
    for name in ("__init__.py", "service.py", "vision/__init__.py"):
        (tmp_path / "agent" / name).write_text("")
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
