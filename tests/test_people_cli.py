"""What a newcomer meets at the command line: enroll reports, stored names, forget into the trash, rename,
identify's text output and the log lines of every command. Real models on the real photos."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DLIB, FR, ROOT

KNN = FR / "examples" / "knn_examples"
OBAMA = sorted((KNN / "train" / "obama").iterdir())
BIDEN = sorted((KNN / "train" / "biden").iterdir())
DOG = DLIB / "examples" / "faces" / "dogs.jpg"
TWO = KNN / "test" / "obama_and_biden.jpg"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_enroll_says_what_is_new_known_and_refused_and_keeps_original_names(tmp_path, cli):
    code, out, err = cli("enroll", "obama", *map(str, OBAMA), str(DOG))
    assert code == 1  # something was refused (and not copied: issue 14)
    assert "photos: 3 new (2 enrolled; 1 refused: 1 no_face)" in out
    assert f"face-agent: {DOG}: not enrolled: no_face" in err
    raw = tmp_path / "faces" / "train" / "raw" / "obama"
    expected = {f"{p.stem}-{sha(p)[:8]}{p.suffix.lower()}" for p in OBAMA}
    assert {p.name for p in raw.iterdir()} == expected  # the original name stays visible
    chips = {p.name for p in (tmp_path / "faces" / "train" / "aligned" / "obama").iterdir()}
    assert chips == {f"{p.stem}-{sha(p)[:8]}.png" for p in OBAMA}  # a chip names its photo

    hand_copied = raw / "dogs.jpg"  # put into the folder by hand: refused there (known by its content)
    hand_copied.write_bytes(DOG.read_bytes())
    code, out, _ = cli("enroll")  # nothing new
    assert code == 0
    assert re.search(r"no_face +obama: dogs\.jpg: no face found", out)
    assert "photos: nothing new, 3 already known (2 enrolled; 1 refused: 1 no_face)" in out
    assert "classifier up to date" in out

    code, out, _ = cli("enroll", "--json", "obama", *map(str, OBAMA), str(BIDEN[0]))  # 2 known, 1 new
    photos = json.loads(out)["photos"]
    by_source = {p["source"]: p for p in photos}
    assert set(by_source) == {str(p) for p in [*OBAMA, BIDEN[0]]} | {str(hand_copied)}
    assert by_source[str(BIDEN[0])]["cached"] is False and by_source[str(OBAMA[0])]["cached"] is True
    assert by_source[str(OBAMA[0])]["path"] == str(raw / f"{OBAMA[0].stem}-{sha(OBAMA[0])[:8]}.jpg")
    assert len(list(raw.iterdir())) == 4  # photos already there were not copied twice


def test_old_hash_named_photos_and_chips_keep_working(tmp_path, cli):
    code, _, _ = cli("enroll", "obama", *map(str, OBAMA))
    assert code == 0
    raw = tmp_path / "faces" / "train" / "raw" / "obama"
    aligned = tmp_path / "faces" / "train" / "aligned" / "obama"
    # what an older version left: a photo named by its hash, and a user-named photo with a <sha16> chip
    first, second = sorted(raw.iterdir())
    sha1, sha2 = sha(first), sha(second)
    legacy_photo = raw / f"{sha1[:16]}.jpg"
    first.rename(legacy_photo)
    (aligned / f"{first.stem}.png").rename(aligned / f"{sha1[:16]}.png")
    mine = raw / "my photo.jpg"
    second.rename(mine)
    (aligned / f"{second.stem}.png").rename(aligned / f"{sha2[:16]}.png")

    code, out, _ = cli("enroll")
    assert code == 0 and "photos: nothing new, 2 already known (2 enrolled)" in out  # nothing analysed again
    # the <sha16> photo keeps its <sha16> chip; the user's photo gets its chip renamed after it
    assert {p.name for p in aligned.iterdir()} == {f"{sha1[:16]}.png", f"my photo-{sha2[:8]}.png"}
    code, out, _ = cli("enroll", "obama", str(OBAMA[0]), str(OBAMA[1]))  # the same photos again
    assert {p.name for p in raw.iterdir()} == {legacy_photo.name, mine.name}  # recognised, not copied
    code, out, _ = cli("enroll", "--json")
    assert all(p["cached"] and p["status"] == "enrolled" for p in json.loads(out)["photos"])


@pytest.mark.slow
def test_forget_moves_the_photos_to_the_trash_and_says_so(tmp_path, cli):
    cli("enroll", "obama", *map(str, OBAMA))
    cli("enroll", "biden", *map(str, BIDEN))
    code, out, _ = cli("forget", "biden")
    assert code == 0 and "forgot biden; 1 people remain" in out
    trash = list((tmp_path / "faces" / "train" / "trash").iterdir())
    assert len(trash) == 1 and re.fullmatch(r"biden-\d{8}-\d{6}", trash[0].name)
    assert f"their photos were moved to {trash[0]}" in out
    assert sorted(p.read_bytes() for p in trash[0].iterdir()) == sorted(p.read_bytes() for p in BIDEN)
    assert not (tmp_path / "faces" / "train" / "raw" / "biden").exists()
    assert not (tmp_path / "faces" / "train" / "aligned" / "biden").exists()
    code, out, _ = cli("people", "--json")
    assert list(json.loads(out)) == ["obama"]
    code, _, err = cli("forget", "biden")
    assert code == 1 and "'biden' is not enrolled" in err
    # undo: move the folder back and enroll
    trash[0].rename(tmp_path / "faces" / "train" / "raw" / "biden")
    code, out, _ = cli("enroll")
    assert "classifier retrained: 2 people" in out


@pytest.mark.slow
def test_rename_moves_photos_and_chips_without_analysing_again(tmp_path, cli):
    cli("enroll", "obama", *map(str, OBAMA))
    cli("enroll", "biden", *map(str, BIDEN))
    code, out, _ = cli("rename", "biden", "Joe Biden")
    assert code == 0 and "renamed biden to Joe Biden" in out and "classifier retrained: 2 people" in out
    train = tmp_path / "faces" / "train"
    assert not (train / "raw" / "biden").exists() and not (train / "aligned" / "biden").exists()
    assert len(list((train / "aligned" / "Joe Biden").iterdir())) == 2
    code, out, _ = cli("enroll", "--json")
    assert all(p["cached"] for p in json.loads(out)["photos"])  # the cache followed
    code, out, _ = cli("identify", "--json", str(TWO))
    assert sorted(f["name"] for f in json.loads(out)["faces"] if f["name"]) == ["Joe Biden", "obama"]
    code, _, err = cli("rename", "Joe Biden", "obama")
    assert code == 1 and "'obama' is already enrolled" in err
    code, _, err = cli("rename", "nobody", "somebody")
    assert code == 1 and "'nobody' is not enrolled" in err
    code, _, err = cli("rename", "obama", "a/b")
    assert code == 2 and "not allowed" in err


@pytest.mark.slow
def test_identify_text_has_no_none_and_says_a_path_once(tmp_path, cli):
    missing = tmp_path / "x.jpg"
    code, out, err = cli("identify", str(FR / "examples" / "obama.jpg"), str(missing))
    assert code == 1
    assert f"face-agent: {missing}: error: no such file" in err.splitlines()  # on stderr, the path once
    assert err.count(str(missing)) == 1 and str(missing) not in out
    assert "None" not in out and "unknown (nobody_enrolled)" in out  # nobody enrolled: no nearest person
    assert all(line == line.rstrip() for line in out.splitlines())
    cli("enroll", "biden", *map(str, BIDEN))
    code, out, _ = cli("identify", str(FR / "examples" / "obama.jpg"))
    assert "None" not in out and re.search(r"unknown \(nearest biden, (far|svm_disagrees|low_confidence)\)", out)


def test_engines_list_shows_the_converted_resnet(tmp_path, cli):
    cli("identify", str(FR / "examples" / "obama.jpg"))  # converts the ResNet into engines/
    code, out, _ = cli("engines", "list")
    assert code == 0
    assert re.search(r"dlib_face_recognition_resnet_model_v1-[0-9a-f]{16}\.onnx\n  the dlib ResNet converted to ONNX",
                     out)
    assert "[ok]" in out and "no TensorRT engines in" in out
    code, out, _ = cli("engines", "list", "--json")
    onnx = json.loads(out)["onnx"]
    assert len(onnx) == 1 and onnx[0]["status"] == "ok" and onnx[0]["bytes"] > 20_000_000


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_absence_is_said_once_by_doctor_not_by_every_command(tmp_path, shared):
    (tmp_path / "agent.toml").write_text('[mqtt]\nenabled = false\n[paths]\nfaces = "faces"\nstorage = "storage"\n'
                                         'svm = "svm"\nengines = "engines"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agent", "-c", "agent.toml", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    identify = run("identify", str(FR / "examples" / "obama.jpg"))  # default verbosity: INFO
    assert identify.returncode == 0, identify.stderr
    assert "TensorRT" not in identify.stderr, identify.stderr
    assert not [line for line in identify.stderr.splitlines() if line != line.rstrip() or "None" in line]
    doctor = run("doctor")
    assert doctor.stdout.count("TensorRT not usable") == 1, doctor.stdout
    assert "TensorRT not usable" not in doctor.stderr


@pytest.mark.slow
def test_no_orphan_chip_and_no_person_without_photos(tmp_path, cli):
    """Issue 25.7: a photo whose name has spaces ("my photo.jpg") gets one chip, the one of its stored copy
    (my_photo-<sha8>.png), not a second named after the original; removing a photo removes its chip, a chip
    left without its photo is pruned at the next scan, and removing the last photo (`face-agent remove`, as the
    web page's Remove and remote `remove_images`) forgets the person: no chip, no folder, not listed."""
    from agent.config import load_config
    from agent.gallery import Gallery

    spaced = tmp_path / "my photo.jpg"
    spaced.write_bytes(BIDEN[0].read_bytes())
    code, _out, err = cli("enroll", "Joe Biden", str(spaced), str(BIDEN[1]))
    assert code == 0, err
    assert cli("enroll", "obama", *map(str, OBAMA))[0] == 0
    aligned = tmp_path / "faces" / "train" / "aligned" / "Joe Biden"
    raw = tmp_path / "faces" / "train" / "raw" / "Joe Biden"
    assert {p.stem for p in aligned.iterdir()} == {p.stem for p in raw.iterdir()}, sorted(aligned.iterdir())
    assert len(list(aligned.iterdir())) == 2

    (aligned / "my photo-12345678.png").write_bytes(b"left by an older version")  # an orphan from before
    code, _out, _err = cli("enroll", "--retrain")
    assert {p.stem for p in aligned.iterdir()} == {p.stem for p in raw.iterdir()}

    first, last = sorted(p.name for p in raw.iterdir())
    code, _out, err = cli("remove", "Joe Biden", first)
    assert code == 0, err
    assert [p.stem for p in aligned.iterdir()] == [p.stem for p in raw.iterdir()] == [Path(last).stem]
    (aligned / "my photo-87654321.png").write_bytes(b"left by an older version")  # an orphan: forget takes it too
    code, _out, err = cli("remove", "Joe Biden", last)
    assert code == 0, err
    assert not aligned.exists() and not raw.exists()
    gallery = Gallery(load_config(tmp_path / "agent.toml"))
    assert "Joe Biden" not in gallery.people_on_disk() and "Joe Biden" not in gallery.summary()
    gallery.close()
    raw.mkdir(parents=True)  # an empty folder made by hand is nobody either
    code, out, _err = cli("people")
    assert code == 0 and "Joe Biden" not in out, out

def test_identify_a_huge_picture_within_the_memory_budget_in_its_own_coordinates(tmp_path, cli):
    """Issue 25: a 6300x6300 PNG (52 KB) took `identify` 50 s at 2.5 GB RSS; it is now decoded reduced to
    [images] memory_mb's pixel budget and its faces are still reported in the picture's own pixels."""
    from PIL import Image

    assert cli("enroll", "obama", *map(str, OBAMA))[0] == 0
    face = Image.open(FR / "examples" / "obama.jpg").convert("RGB")
    canvas = Image.new("RGB", (6300, 6300), (200, 200, 200))
    canvas.paste(face.resize((face.width * 2, face.height * 2)), (2000, 2000))
    huge = tmp_path / "huge.png"
    canvas.save(huge, optimize=True)
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('peak', next(line.split()[1] for line in open('/proc/self/status')"
            " if line.startswith('VmHWM')), file=sys.stderr))\n"
            f"sys.argv = ['face-agent', '-q', '-c', {str(tmp_path / 'agent.toml')!r}, 'identify', '--json', "
            f"'--no-train', {str(huge)!r}]\n"
            "runpy.run_module('agent', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stderr.split("peak")[-1].split()[0]) / 1024
    assert peak_mib < 1000, f"identify of a 6300x6300 picture peaked at {peak_mib:.0f} MiB"
    report = json.loads(done.stdout)
    assert (report["width"], report["height"]) == (6300, 6300) and report["decoded_scale"] < 0.4
    [found] = report["faces"]
    assert found["name"] == "obama"
    reference = json.loads(cli("identify", "--json", str(FR / "examples" / "obama.jpg"))[1])["faces"][0]["box"]
    for key in ("left", "top", "right", "bottom"):  # where the face is in the picture's own pixels
        assert found["box"][key] == pytest.approx(2000 + 2 * reference[key], abs=40), key


def test_file_names_cannot_forge_log_lines_or_terminal_output(tmp_path):
    """Issue 25: a photo named with a newline and an ANSI escape produced a fake CRITICAL line; enroll and
    identify printed names raw. Every name from outside is now escaped, in log lines and in the output."""
    (tmp_path / "agent.toml").write_text('[paths]\nfaces = "faces"\nstorage = "storage"\nsvm = "svm"\n'
                                         'engines = "engines"\n[mqtt]\nenabled = false\n')
    raw = tmp_path / "faces" / "train" / "raw" / "obama"
    raw.mkdir(parents=True)
    for photo in OBAMA:
        (raw / photo.name).write_bytes(photo.read_bytes())
    forged = "\n2026-12-07 03:00:00,000 CRITICAL agent.service: forged\x1b[31m"
    (raw / f"dup{forged}.jpg").write_bytes(OBAMA[0].read_bytes())
    (raw / f"dog{forged}\x1b[2J.jpg").write_bytes(DOG.read_bytes())
    (raw / f"bad{forged}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    config = str(tmp_path / "agent.toml")
    output = ""
    for argv in (["-vv", "enroll"], ["-vv", "identify", *map(str, sorted(raw.iterdir())), f"{raw}/x{forged}.jpg"],
                 ["-vv", "eval", "--folder", str(tmp_path / "faces" / "train" / "raw")]):
        done = subprocess.run([sys.executable, "-m", "agent", "-c", config, *argv], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        output += done.stdout + done.stderr
    assert "\x1b" not in output
    assert not [line for line in output.splitlines() if line.startswith(("2026-12-07 03:00:00", "CRITICAL"))]
    assert "dog\\n2026-12-07 03:00:00,000 CRITICAL agent.service: forged\\x1b[31m\\x1b[2J.jpg: no face found" in output
    assert "bad\\n2026-12-07" in output and "x\\n2026-12-07" in output


def test_every_log_line_is_escaped_even_when_a_call_forgot_to(tmp_path):
    code = ("import logging\nfrom agent.cli import setup_logging\nsetup_logging(1)\n"
            "logging.getLogger('x').warning('photo %s', 'a\\n2026 CRITICAL forged\\x1b[2J')\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
            "    logging.getLogger('x').exception('failed on %s', 'b\\nc')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = done.stderr.splitlines()
    assert lines[0].endswith("WARNING x: photo a\\n2026 CRITICAL forged\\x1b[2J")
    assert lines[1].endswith("ERROR x: failed on b\\nc") and lines[2] == "Traceback (most recent call last):"


def test_remove_photos_and_the_last_one_forgets_the_person(tmp_path, cli):
    """Issue 28.2: `face-agent remove` goes through agent.enrollment_ops as the web's Remove and remote
    `remove_images`: one photo removed (by name or sha256), the person kept and retrained; an unknown photo
    named; the last photo removed, the person forgotten (photo in the trash, `restore` brings it back)."""
    from agent.config import load_config
    from agent.events import EventFactory
    from agent.store import EventStore

    assert cli("enroll", "biden", *map(str, BIDEN))[0] == 0
    assert cli("enroll", "obama", *map(str, OBAMA))[0] == 0
    cfg = load_config(tmp_path / "agent.toml")
    with EventStore(cfg) as events:
        events.add(EventFactory(cfg.agent.id, "door").identified(1, "biden", 0.9, 3, (10, 10, 60, 70), (160, 120)))
    raw = tmp_path / "faces" / "train" / "raw" / "biden"
    first, last = sorted(raw.iterdir())
    code, out, err = cli("remove", "biden", sha(first), "nope.jpg")
    assert code == 1 and "removed 1 photo of biden; 1 left" in out and "nope.jpg: no such photo of biden" in err
    assert "classifier retrained: 2 people" in out
    assert json.loads(cli("people", "--json")[1])["biden"]["photos"] == 1
    code, out, err = cli("remove", "biden", last.name)
    assert code == 0, err
    assert "biden had no photos left and was forgotten everywhere on this agent" in out
    assert "undo: face-agent restore biden" in out and "classifier retrained: 1 people" in out
    assert not raw.exists() and not (tmp_path / "faces" / "train" / "aligned" / "biden").exists()
    assert "biden" not in json.loads(cli("people", "--json")[1])
    with EventStore(cfg) as events:
        assert not [e for e in events.query(limit=None) if e.type == "identified"]  # forget erased them
    code, _out, err = cli("remove", "biden", last.name)
    assert code == 1 and "'biden' is not enrolled" in err
    code, out, _err = cli("restore", "biden")
    assert code == 0 and "restored biden: 1 photos back" in out
    assert [p.name for p in raw.iterdir()] == [last.name]
