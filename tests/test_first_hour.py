"""A newcomer's first hour (issue 26): undo of forget, Ctrl-C in enroll, a busy web port, cached refusals and
duplicates named right, the conversion saying what it does, and the docs matching the commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FR, ROOT, SHARED, wait_for

from agent.config import tomllib

KNN = FR / "examples" / "knn_examples"
OBAMA = sorted((KNN / "train" / "obama").iterdir())
BIDEN = sorted((KNN / "train" / "biden").iterdir())
TWO = KNN / "test" / "obama_and_biden.jpg"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# ---- forget has a real undo ------------------------------------------------------------------------------

@pytest.mark.slow
def test_restore_undoes_forget_under_the_same_name(tmp_path, cli):
    cli("enroll", "obama", *map(str, OBAMA))
    cli("enroll", "biden", *map(str, BIDEN))
    raw = tmp_path / "faces" / "train" / "raw"
    before = sorted(p.name for p in (raw / "biden").iterdir())
    code, out, _ = cli("forget", "biden")
    assert code == 0 and "undo: face-agent restore biden" in out, out

    code, out, _ = cli("restore")  # what can be restored
    assert code == 0 and re.search(r"^biden +\d{8}-\d{6} +2  biden-\d{8}-\d{6}$", out, re.M), out
    code, out, _ = cli("restore", "biden")
    assert code == 0 and "restored biden: 2 photos back in" in out and "2 people enrolled" in out, out
    assert sorted(p.name for p in (raw / "biden").iterdir()) == before  # the same files, the same name
    assert not list((tmp_path / "faces" / "train" / "trash").iterdir())
    code, out, _ = cli("people", "--json")
    assert sorted(json.loads(out)) == ["biden", "obama"]  # not "biden-20261207-025315"
    code, out, _ = cli("identify", "--json", str(TWO))
    assert sorted(f["name"] for f in json.loads(out)["faces"] if f["name"]) == ["biden", "obama"]
    code, _, err = cli("restore", "biden")  # nothing left to restore
    assert code == 1 and "no forgotten photos of 'biden'" in err


@pytest.mark.slow
def test_restore_picks_a_forget_and_never_mixes_people(tmp_path, cli):
    cli("enroll", "biden", *map(str, BIDEN))
    cli("forget", "biden")
    time.sleep(1.1)  # a second forget, a second later: another trash folder
    cli("enroll", "biden", str(BIDEN[0]))
    cli("forget", "biden")
    trash = sorted(p.name for p in (tmp_path / "faces" / "train" / "trash").iterdir())
    assert len(trash) == 2
    cli("enroll", "biden", str(BIDEN[1]))  # enrolled again meanwhile
    code, _, err = cli("restore", "biden")
    assert code == 1 and "'biden' has photos again" in err and "--as" in err, err
    code, out, _ = cli("restore", "biden", "--from", trash[0], "--as", "Joe Biden")
    assert code == 0 and "restored Joe Biden: 2 photos" in out and "1 older forget(s) of biden remain" in out, out
    raw = tmp_path / "faces" / "train" / "raw"
    assert len(list((raw / "Joe Biden").iterdir())) == 2 and len(list((raw / "biden").iterdir())) == 1
    code, _, err = cli("restore", "nobody")
    assert code == 1 and "no forgotten photos of 'nobody'" in err


# ---- enroll: Ctrl-C, refusals and duplicates ---------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_in_enroll_exits_130_with_a_message(tmp_path, shared):
    raw = tmp_path / "faces" / "train" / "raw"
    people = sorted(p for p in (SHARED / "lfw-subset").iterdir() if p.is_dir())[:12]
    for person in people:
        shutil.copytree(person, raw / person.name)
    (tmp_path / "agent.toml").write_text('[paths]\nfaces = "faces"\nstorage = "storage"\nsvm = "svm"\n'
                                         'engines = "engines"\n[mqtt]\nenabled = false\n')
    # SIGINT as at a terminal even when the tests run in a background job (which starts with SIGINT ignored,
    # inherited by the child, whose Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "enroll"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    cache = tmp_path / "storage" / "embeddings.db"

    def analysed() -> int:
        try:
            with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=1) as conn:
                return conn.execute("SELECT count(*) FROM photos").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        assert wait_for(lambda: analysed() >= 2 or proc.poll() is not None, 300), "enroll analysed nothing"
        assert proc.poll() is None, "enroll finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "enroll interrupted" in err and "cached" in err and "run `face-agent enroll` again" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def test_a_cached_refusal_names_its_own_file_and_duplicate_names_the_copy(tmp_path, cli):
    raw = tmp_path / "faces" / "train" / "raw"
    (raw / "ada").mkdir(parents=True)
    (raw / "ada" / "fake.jpg").write_text("not a picture at all")
    cli("enroll")
    (raw / "bob").mkdir()
    (raw / "bob" / "notes.jpg").write_text("not a picture at all")  # the same bytes: a cached refusal
    code, out, _ = cli("enroll")
    line = next(x for x in out.splitlines() if "notes.jpg" in x)
    assert line.startswith("unreadable") and "bob: notes.jpg: not an image" in line, out
    assert "fake.jpg" not in line, line

    obama = raw / "obama"
    obama.mkdir()
    shutil.copy(OBAMA[0], obama / "obama.jpg")
    os.utime(obama / "obama.jpg", (time.time() - 3600, time.time() - 3600))  # the original, an hour old
    cli("enroll")
    shutil.copy(OBAMA[0], obama / "a copy.jpg")  # the copy just added sorts first
    code, out, _ = cli("enroll")
    assert "duplicate      obama: a copy.jpg: a copy of obama.jpg (the older file, which is kept)" in out, out
    code, out, _ = cli("enroll", "--json")
    status = {Path(p["path"]).name: p["status"] for p in json.loads(out)["photos"]}
    assert status["obama.jpg"] == "enrolled" and status["a copy.jpg"] == "duplicate"


# ---- web on a busy port ----------------------------------------------------------------------------------

def test_web_on_a_busy_port_is_one_clear_error(tmp_path):
    pytest.importorskip("uvicorn")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    (tmp_path / "agent.toml").write_text('[paths]\nstorage = "storage"\n[mqtt]\nenabled = false\n')
    try:
        done = subprocess.run([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "web", "--port",
                               str(port)], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        busy.close()
    assert done.returncode == 1, done
    assert "web console on" not in done.stdout + done.stderr  # it never said it was on
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}: already in use" in lines[0], done.stderr


# ---- the first run: the ResNet conversion says what it does ---------------------------------------------

def test_the_resnet_conversion_says_what_it_does(tmp_path, caplog):
    import logging

    from agent.config import EmbeddingSection
    from agent.vision.embed import converted_model

    caplog.set_level(logging.INFO, logger="agent.vision.embed")
    converted_model(EmbeddingSection(), tmp_path / "engines")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("converting dlib's face ResNet") and "once" in m for m in messages), messages
    assert any(re.match(r"converted the ResNet in [\d.]+ s", m) for m in messages), messages


# ---- docs match the commands -----------------------------------------------------------------------------

def test_docs_say_what_the_commands_do():
    readme = (ROOT / "README.md").read_text()
    for field in ("`margin`", "`effective_distance`", "`rejected`"):  # identify --json
        assert field in readme, field
    assert re.search(r"face-agent status .*exit 0 ok, 1 degraded,\s+#\s+3 not running", readme)
    assert "face-agent restore PERSON" in readme and "apt install mosquitto" in readme
    assert "[mqtt] enabled = false" in readme and "--resend-expired" in readme
    assert "gir1.2-gst-rtsp-server-1.0" in readme and "sub-stream" in readme
    # the set-up line no longer lists only some of what make test installs
    assert "(+ Debian mosquitto, systemd-analyze if missing)" not in readme
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)  # SPDX: no setuptools deprecation warning
    status_help = subprocess.run([sys.executable, "-m", "agent", "status", "--help"], env=ENV, capture_output=True,
                                 text=True, timeout=60).stdout
    assert "3 not running" in " ".join(status_help.split())


def test_tune_says_it_saved_a_report(tmp_path, cli):
    cli("enroll", "obama", *map(str, OBAMA))
    cli("enroll", "biden", *map(str, BIDEN))
    code, out, _ = cli("tune")
    saved = re.search(r"report saved to (\S+/tune\.txt) ", out)
    assert code == 0 and saved and Path(saved.group(1)).is_file(), out
    assert Path(saved.group(1)).is_relative_to(tmp_path)
