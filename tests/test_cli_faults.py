"""The command line as a careless operator uses it (issue 14): output cut short by a pipe, errors on
stderr, junk files given to `enroll`. Real subprocesses, real files, the real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FR, ROOT, SHARED, make_config

from agent.events import EventFactory
from agent.health import write_status
from agent.store import EventStore

F = EventFactory("edge-1", "door")


def face_agent(conf: Path, *args: str, stdout=None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(conf), *args], env=env,
                          stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def config_file(tmp: Path, extra: str = "") -> Path:
    path = tmp / "agent.toml"
    path.write_text('[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n'
                    '[mqtt]\nenabled = false\n' + extra)
    return path


def closed_pipe() -> int:
    """The write end of a pipe whose reader is gone (what `| head -3` leaves once head exits)."""
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("command", [["events", "--json", "--limit", "0"], ["events"], ["status"],
                                     ["status", "--json"]])
def test_output_into_a_closed_pipe_is_no_traceback(tmp_path, command):
    conf = config_file(tmp_path)
    cfg = make_config(tmp_path)
    with EventStore(cfg) as store:
        for i in range(300):
            store.add(F.track_started(i, (0, 0, 10, 10), (100, 100)))
    write_status(tmp_path / "storage" / "status.json", {"interval": 10.0, "health": {"state": "ok"}})
    w = closed_pipe()
    try:
        run = face_agent(conf, *command, stdout=w)
    finally:
        os.close(w)
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr, run.stderr
    assert run.returncode == 141, run.stderr


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_identify_errors_go_to_stderr(tmp_path):
    conf = config_file(tmp_path)
    (tmp_path / "notes.txt").write_text("not a photo")
    run = face_agent(conf, "identify", "--no-train", str(tmp_path / "notes.txt"), str(tmp_path / "missing.jpg"),
                     str(FR / "examples" / "obama.jpg"))
    assert run.returncode == 1
    assert "notes.txt" not in run.stdout and "missing.jpg" not in run.stdout, run.stdout
    assert "obama.jpg: 1 face" in run.stdout
    errors = [line for line in run.stderr.splitlines() if line.startswith("face-agent: ")]
    assert len(errors) == 2 and "notes.txt" in errors[0] and "missing.jpg" in errors[1], run.stderr
    # --json keeps one object per image on stdout (the error is part of the machine-readable answer)
    run = face_agent(conf, "identify", "--no-train", "--json", str(tmp_path / "missing.jpg"))
    assert run.returncode == 1 and "error" in json.loads(run.stdout)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_enroll_copies_only_enrollable_photos_and_says_what_failed(tmp_path, capsys):
    from test_hostile_requests import png_claiming

    from agent.cli import main

    conf = str(config_file(tmp_path))
    good = FR / "examples" / "knn_examples" / "train" / "biden" / "biden.jpg"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "empty.jpg").write_bytes(b"")
    (junk / "random.jpg").write_bytes(os.urandom(5000))
    (junk / "notes.txt").write_text("not a photo\n")
    (junk / "truncated.jpg").write_bytes(good.read_bytes()[:3000])
    (junk / "bomb.png").write_bytes(png_claiming(30000, 30000))
    files = sorted(str(p) for p in junk.iterdir())

    assert main(["--config", conf, "enroll", "biden", str(good), *files]) == 1
    out, err = capsys.readouterr()
    for name in ("empty.jpg", "random.jpg", "notes.txt", "truncated.jpg", "bomb.png"):
        assert f"{name}: not enrolled" in err, err
    assert "5 of 6 file(s) not enrolled" in err
    raw = tmp_path / "faces" / "train" / "raw"
    assert len(list((raw / "biden").iterdir())) == 1  # only the photo, none of the junk

    # a person made only of junk is not created, so `people` does not list them
    assert main(["--config", conf, "enroll", "junk_only", *files]) == 1
    capsys.readouterr()
    assert not (raw / "junk_only").exists()
    assert main(["--config", conf, "people", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"biden"}
    # and the next plain enroll has nothing to re-report
    assert main(["--config", conf, "enroll"]) == 0
    out, err = capsys.readouterr()
    assert "unreadable" not in out and "photos: nothing new, 1 already known (1 enrolled)" in out, out
