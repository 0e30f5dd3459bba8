"""A name never sits on the wrong face in video: clips with known identities, scored frame by frame.

The clips are built here from the shared LFW photos (bench/identity_clips.py: people replacing each other
at one spot with a hard cut and with a short gap, two people crossing, shot cuts to another person) plus
the shared Hamilton clip. Everything goes through the real `face-agent` command: enroll, then
`run --frames-out` (the per-frame output a user or a test reads), and every face shown on every frame is
judged against who is really there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from agent.events import SCHEMA_VERSION
from bench import identity_clips as ic

ROOT = Path(__file__).resolve().parents[1]
FRAME_SCHEMA = json.loads((ROOT / "agent" / "schemas" / "frame.schema.json").read_text())
MIN_NAMED_SHARE = 0.85  # of an enrolled person's face-frames, once the appearance has had 10 frames
MAX_SETTLE_FRAMES = 2  # frames from a person's first frame to their name: confirmed on its 2nd detection (min_hits
# 2), a new track embedded on consecutive frames (settle_embed_every 1), named by 2 votes or 1 very certain one


class Agent:
    """`face-agent` with a config of its own in a temporary folder (MQTT off: the log is what we read)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "agent.toml"
        self.config.write_text("[mqtt]\nenabled = false\n")

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(self.config), *args],
                             capture_output=True, text=True, cwd=self.folder, timeout=600,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    def run(self, source: Path, name: str, *extra: str) -> tuple[dict[int, list[dict]], list[dict]]:
        """Run on `source`; (frame -> shown faces, the events of this run)."""
        frames_out = self.folder / f"{name}.jsonl"
        before = {e["event_id"] for e in self.events()}
        self("run", "--source", str(source), "--frames-out", str(frames_out), *extra)
        validator = jsonschema.Draft202012Validator(FRAME_SCHEMA)
        for line in frames_out.read_text().splitlines():
            errors = [e.message for e in validator.iter_errors(json.loads(line))]
            assert not errors, (line, errors)
        return ic.read_frames(frames_out), [e for e in self.events() if e["event_id"] not in before]

    def events(self) -> list[dict]:
        out = self("events", "--json")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cast_agent(tmp_path_factory, request):
    if not ic.LFW.is_dir():
        pytest.skip(f"{ic.LFW} not found")
    agent = Agent(tmp_path_factory.mktemp("identity"))
    enrolled, strangers = ic.cast()
    ic.enroll_all(agent, enrolled)
    clips = {clip.name: clip for clip in ic.standard_clips(list(enrolled), strangers)}
    return agent, clips


def _check_events(clip: ic.Clip, events: list[dict]) -> None:
    """Every event says where it happened; every identification is of the person really at its box."""
    track_events = [e for e in events if e["track_id"] is not None]
    assert track_events and all(e["schema_version"] == SCHEMA_VERSION and e["frame_index"] is not None
                                and e["media_time"] is not None for e in track_events)
    for e in track_events:
        assert e["media_time"] == pytest.approx(e["frame_index"] / ic.FPS, abs=0.002)
    for e in (e for e in events if e["type"] == "identified"):
        face = {"box": e["box"], "status": "named", "name": e["name"]}
        owner = ic.owner(clip, e["frame_index"], face)
        assert owner is not None and owner.label == e["name"], (e["frame_index"], e["name"], owner)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["replace_cut", "replace_gap", "crossing", "scene_cut"])
def test_no_wrong_name_on_any_frame(cast_agent, name):
    agent, clips = cast_agent
    clip = clips[name]
    mp4 = ic.render(clip, agent.folder / f"{name}.mp4")
    shown, events = agent.run(mp4, name)
    s = ic.score(clip, shown)
    print(ic.format_scores([s]), s["per_person"], s["settle_frames"])
    assert s["wrong_name"] == 0, s["wrong_examples"]
    assert s["name_on_nothing"] == 0
    assert s["named_share"] >= MIN_NAMED_SHARE, s
    assert all(f is not None and f <= MAX_SETTLE_FRAMES for f in s["settle_frames"]), s["settle_frames"]
    _check_events(clip, events)
    # a name is ended with its track, never handed on: each track carries at most one name in its events
    names: dict[int, set] = {}
    for e in events:
        if e["name"]:
            names.setdefault(e["track_id"], set()).add(e["name"])
    assert all(len(v) == 1 for v in names.values()), names


@pytest.mark.slow
def test_checks_off_the_old_tracker_puts_names_on_the_wrong_people(cast_agent, tmp_path):
    """The same replacement clip with the identity checks switched off (positions only, as before): names
    stay on the wrong people. This is what the tests above would have caught."""
    agent, clips = cast_agent
    clip = clips["replace_gap"]
    mp4 = ic.render(clip, agent.folder / "replace_gap_old.mp4")
    old = Agent(tmp_path / "old")
    old.config.write_text(agent.config.read_text() + "[tracker]\nsplit_distance = 1.99\ncut_threshold = 255.0\n"
                          "jump_ratio = 100.0\nresize_ratio = 100.0\nlook_threshold = -1.0\nshow_coasting = 15\n")
    for sub in ("faces", "svm", "storage"):  # the same enrolled people
        subprocess.run(["cp", "-r", str(agent.folder / sub), str(old.folder / sub)], check=True)
    shown, _ = old.run(mp4, "old", "--max-frames", str(clip.frames))
    # coasting hides names, unless checks are off: then the old behaviour shows
    assert ic.score(clip, shown)["wrong_name"] > 0


@pytest.mark.slow
def test_show_draws_what_frames_out_says(cast_agent):
    agent, clips = cast_agent
    clip = clips["scene_cut"]
    mp4 = ic.render(clip, agent.folder / "show.mp4")
    annotated = agent.folder / "show-annotated.avi"  # MJPEG: colours survive
    shown, _ = agent.run(mp4, "show", "--show", str(annotated))
    cap = cv2.VideoCapture(str(annotated))
    checked = 0
    for index in range(clip.frames):
        ok, bgr = cap.read()
        assert ok, f"annotated video ends at frame {index}"
        for face in shown.get(index, []):
            b = face["box"]
            top_edge = bgr[max(0, b["top"]), b["left"] + 3:b["right"] - 3].astype(int)
            colour = {"named": (0, 200, 0), "unknown": (0, 160, 255), "pending": (200, 200, 200)}[face["status"]]
            assert np.abs(np.median(top_edge, axis=0) - colour).max() < 60, (index, face)
            checked += 1
    assert not cap.read()[0] and checked > 100


@pytest.mark.slow
def test_hamilton_clip_no_wrong_name_after_the_cut(tmp_path):
    """The shared Hamilton clip with Lin-Manuel, Alex and Obama enrolled, as the issue tried it: at the cut
    to the audience (frame 211) Lin-Manuel's track ends with his name and nobody there is called
    Lin-Manuel; he is named on most of his own close-up frames."""
    if not ic.HAMILTON.is_file():
        pytest.skip(f"{ic.HAMILTON} not found")
    agent = Agent(tmp_path / "hamilton")
    ic.enroll_all(agent, ic.hamilton_enrollment())
    shown, events = agent.run(ic.HAMILTON, "hamilton")
    truth = ic.hamilton_truth()
    s = ic.score(truth, shown)
    print(ic.format_scores([s]), s["per_person"])
    assert s["wrong_name"] == 0, s["wrong_examples"]
    assert s["name_on_nothing"] == 0
    assert s["per_person"]["lin_manuel"]["share"] >= MIN_NAMED_SHARE
    # at least the face_recognition loop's 139 named face-frames (bench/bench_video.py): his small turned face
    # at frames 10-19 (37-40 px) keeps his name because it still verifies his track ([tracker]
    # verify_min_face_size)
    assert s["named_all"] >= 139, s["per_person"]
    lin = [f for a, f in zip((a for a in truth.actors if a.enrolled), s["settle_frames"]) if a.label == "lin_manuel"]
    assert lin and all(f is not None and f <= MAX_SETTLE_FRAMES for f in lin), s["settle_frames"]
    assert not [e for e in events if e["name"] == "lin_manuel" and e["type"] == "identified"
                and e["frame_index"] >= 211]
    assert [e for e in events if e["type"] == "track_ended" and e["name"] == "lin_manuel"
            and e["frame_index"] == 211]  # the cut ends his track, with his name
    assert all(f["name"] != "lin_manuel" for i in range(211, 275) for f in shown.get(i, []))


@pytest.mark.slow
def test_an_empty_scene_skips_the_detector_and_a_person_coming_in_is_named_not_unknown(cast_agent, tmp_path):
    """A door camera (bench/identity_clips.idle_clip: an empty, noisy scene, a walk-in from the side, a sudden
    appearance). With the motion gate the full detector is skipped where nobody is tracked and nothing moved,
    and what is shown is at least as good as without it (better: it detects on the first frame that moved);
    the person walking in half cut off by the frame's edge is never shown nor reported as unknown (`cut_off`),
    only pending until the name."""
    agent, _ = cast_agent
    enrolled, _ = ic.cast()
    clip = ic.idle_clip(list(enrolled))
    mp4 = ic.render(clip, agent.folder / "idle.mp4")
    gated = Agent(tmp_path / "gated")
    ungated = Agent(tmp_path / "ungated")
    ungated.config.write_text(gated.config.read_text() + "[tracker]\nmotion_threshold = 0.0\n")
    scores, skipped = {}, {}
    for name, run_agent in (("gated", gated), ("ungated", ungated)):
        for sub in ("faces", "svm", "storage"):  # the same enrolled people
            subprocess.run(["cp", "-r", str(agent.folder / sub), str(run_agent.folder / sub)], check=True)
        shown, events = run_agent.run(mp4, name)
        scores[name] = s = ic.score(clip, shown)
        print(name, ic.format_scores([s]), s["per_person"], s["settle_frames"])
        assert s["wrong_name"] == 0 and s["name_on_nothing"] == 0, s["wrong_examples"]
        status = json.loads((run_agent.folder / "storage" / "status.json").read_text())
        skipped[name] = status["stats"]["cameras"]["camera"]["still_skipped"]
        # the walk-in: the track that starts at the frame's left edge shows pending, then the name, never unknown
        walk_in = next(f["track_id"] for frame in range(clip.actors[0].start, clip.actors[0].start + 10)
                       for f in shown.get(frame, []) if f["box"]["left"] < 5)  # found while half cut off
        statuses = [f["status"] for frame in range(clip.actors[0].start, clip.actors[1].end)
                    for f in shown.get(frame, []) if f["track_id"] == walk_in]
        assert "unknown" not in statuses and statuses[-1] == "named", statuses
        assert not [e for e in events if e["track_id"] == walk_in and e["type"] == "unknown_face"]
        assert [e["name"] for e in events if e["track_id"] == walk_in and e["type"] == "identified"] \
            == [clip.actors[0].label]
    assert skipped["ungated"] == 0
    # about 250 of the 400 frames have nobody; the detector is due on most of them and skipped while still
    assert skipped["gated"] >= 150, skipped
    gated, ungated = scores["gated"], scores["ungated"]
    assert gated["face_frames"] == ungated["face_frames"]
    assert gated["named_right"] >= ungated["named_right"] and gated["named_all"] >= ungated["named_all"]
    assert all(g <= u for g, u in zip(gated["settle_frames"], ungated["settle_frames"]))
    # the sudden appearance in the empty scene: the gate sees it move and detects on that very frame
    assert gated["settle_frames"][2] == 0, gated["settle_frames"]


def test_the_montage_is_the_hard_case_of_issue_29():
    """bench/identity_clips.montage_clip, the clip of bench_video.py --clips montage: 720p, hard cuts every 1-3 s
    but for one long shot of 720p or more, shots from LFW photos at several sizes and from real footage, a crowd
    of 15+ faces of 30-100 px with enrolled people in it; every enrolled person of the clip is enrolled."""
    if not (ic.HAMILTON.is_file() and ic.WALKERS.is_file() and ic.LFW.is_dir()):
        pytest.skip("the shared clips are missing")
    enrolled, strangers = ic.montage_cast()
    clip = ic.montage_clip(list(enrolled), strangers)
    assert clip.size == (1280, 720) and clip.frames == 500
    shots = sorted({(s.start, s.end) for s in clip.scenes} | {(f.start, f.end) for f in clip.footage})
    assert shots[0][0] == 0 and shots[-1][1] == clip.frames
    assert all(a[1] == b[0] for a, b in zip(shots, shots[1:]))  # one after another, nothing in between
    seconds = [(end - start) / ic.FPS for start, end in shots]
    assert sum(s > 3 for s in seconds) == 1 and all(1 <= s <= 3 for s in seconds if s <= 3), seconds
    long_shot = next(f for f in clip.footage if (f.end - f.start) / ic.FPS > 3)
    assert long_shot.path == ic.WALKERS  # 1920x1080
    assert {f.path for f in clip.footage} == {ic.HAMILTON, ic.WALKERS}
    crowd = [a for a in clip.actors if a.photo is not None and a.start == 110]
    faces = [0.6 * a.side for a in crowd]  # MTCNN's box of a pasted LFW photo: ~0.6 of its side
    assert len(crowd) >= 15 and min(faces) >= 30 and max(faces) <= 100
    assert sum(a.enrolled for a in crowd) == 6
    sides = {a.side for a in clip.actors if a.photo is not None}
    assert min(sides) <= 60 and max(sides) >= 300  # LFW people from small to close-up
    people = ic.montage_enrollment()
    assert {a.label for a in clip.actors if a.enrolled} <= set(people)
    for label in people:
        assert all(p.is_file() for p in people[label])
