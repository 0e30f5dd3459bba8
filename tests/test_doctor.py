"""`face-agent doctor` says what the configured setup needs and is missing, and exits 1 when something is.

The checks run against this machine's real packages: pip's OpenCV (built without GStreamer, as every
opencv-python wheel is) and dlib-bin. A missing dlib is shown by blocking its import (`sys.modules["dlib"]
= None` makes `import dlib` raise ImportError, as on an aarch64 venv without it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import cv2
import pytest

from agent.cli import main


def _has_gstreamer() -> bool:
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def _config(tmp_path: Path, uri: str = "0") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text('[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n'
                    f'[source]\nuri = {json.dumps(uri)}\nwidth = 640\nheight = 480\n')
    return path


def _doctor(config: Path, capsys) -> tuple[int, dict, str]:
    code = main(["-c", str(config), "doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert main(["-c", str(config), "doctor"]) == code
    return code, report, capsys.readouterr().out


def test_a_camera_source_on_this_machine_has_no_problems(tmp_path, capsys):
    code, report, text = _doctor(_config(tmp_path, "0"), capsys)
    assert report["problems"] == [] and code == 0
    assert report["gpu_platform"] == "JetPack 6 (Python 3.10, TensorRT 8.6 or 10.x)"
    assert report["opencv_gstreamer"] is _has_gstreamer()
    assert "supported: JetPack 6 (Python 3.10, TensorRT 8.6 or 10.x)" in text
    assert re.search(r"opencv +\S+ \(.*cv2.*\), GStreamer: (yes|no)", text)
    assert text.rstrip().endswith("no problems found")


@pytest.mark.skipif(_has_gstreamer(), reason="this OpenCV has GStreamer")
@pytest.mark.parametrize("uri", ["csi://0", "gst:videotestsrc ! videoconvert ! appsink"])
def test_gstreamer_source_without_gstreamer_in_opencv_fails(tmp_path, capsys, uri):
    code, report, text = _doctor(_config(tmp_path, uri), capsys)
    assert code == 1 and report["opencv_gstreamer"] is False
    assert len(report["problems"]) == 1
    problem = report["problems"][0]
    assert f"[source] uri {uri!r} needs OpenCV built with GStreamer" in problem
    assert "--system-site-packages" in problem
    assert "1 problem(s):" in text and "no problems found" not in text


def test_missing_dlib_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    code, report, text = _doctor(_config(tmp_path), capsys)
    assert code == 1
    assert report["dlib"].startswith("not available (") and "dlib" in report["dlib"]
    assert any(p.startswith("dlib is not available") and "aligns every face" in p for p in report["problems"])
    assert "deploy/install.sh builds it from source" in text


def test_embedder_on_tensorrt_without_tensorrt_is_a_problem(tmp_path, capsys):
    """Review point 5: doctor checks the embedder's backend too, not only the detector's."""
    from agent.vision.backends.trt_probe import tensorrt_status

    if tensorrt_status()[0]:
        pytest.skip("TensorRT is usable here")
    config = _config(tmp_path)
    config.write_text(config.read_text() + '[embedding]\nbackend = "tensorrt"\n')
    code, report, text = _doctor(config, capsys)
    assert code == 1 and report["embedder"]["configured"] == "tensorrt"
    assert report["embedder"]["runs_on"].startswith("onnxruntime (degraded")
    assert any(p.startswith('[embedding] backend = "tensorrt" but') for p in report["problems"])
    assert re.search(r"embedder backend +tensorrt \(runs on onnxruntime", text)
