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


@pytest.mark.slow
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


PHOTOS = FR / "examples" / "knn_examples" / "train" / "biden"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_bad_output_paths_are_refused_before_the_run_starts(tmp_path):
    """Issue 25.6: every path the run writes is checked first: one clear line, exit 2, nothing half done."""
    conf = config_file(tmp_path)
    (tmp_path / "a-folder").mkdir()
    cases = [
        (["--frames-out", "/nonexistent/dir/f.jsonl"], "/nonexistent/dir does not exist"),
        (["--frames-out", str(tmp_path / "a-folder")], "is a folder, not a file"),
        (["--show", str(tmp_path / "out.gifx")], ".gifx is not a picture or video format"),
        (["--show", str(tmp_path / "missing" / "a.mp4")], f"{tmp_path / 'missing'} does not exist"),
    ]
    for args, words in cases:
        run = face_agent(conf, "run", "--source", str(PHOTOS), *args)
        assert run.returncode == 2 and "Traceback" not in run.stderr, (args, run.stderr)
        lines = [x for x in run.stderr.splitlines() if x.startswith("face-agent: ")]
        assert len(lines) == 1 and words in lines[0], (args, run.stderr)
    assert not (tmp_path / "storage" / "events.db").exists()  # refused before anything was opened

    # [paths] storage naming a file, or on /proc: `config check` and `run` say the same, in one line
    for storage, words in ((tmp_path / "a-file", "is not a folder"), (Path("/proc/face-agent"), "virtual file system")):
        (tmp_path / "a-file").write_text("x")
        conf = config_file(tmp_path, "").read_text().replace('storage = "storage"', f'storage = "{storage}"')
        (tmp_path / "agent.toml").write_text(conf)
        check = face_agent(tmp_path / "agent.toml", "config", "check")
        assert check.returncode == 2 and words in check.stderr, check.stderr
        run = face_agent(tmp_path / "agent.toml", "run", "--source", str(PHOTOS))
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        lines = [x for x in run.stderr.splitlines() if x.startswith("face-agent: ")]
        assert len(lines) == 1 and words in lines[0] and "full" not in lines[0], run.stderr


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found")
def test_good_output_paths_are_written(tmp_path):
    conf = config_file(tmp_path)
    run = face_agent(conf, "run", "--source", str(PHOTOS), "--frames-out", str(tmp_path / "f.jsonl"),
                     "--show", str(tmp_path / "a.mp4"))
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == len(list(PHOTOS.iterdir()))
    assert (tmp_path / "a.mp4").stat().st_size > 0
