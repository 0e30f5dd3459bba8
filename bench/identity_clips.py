"""Video clips with known identities, built from the shared photos, and per-frame scoring of what was shown.

Used by the tests (tests/test_identity_clips.py) and by bench/bench_video.py. Nothing from ../shared is
written into the project: clips are made in a temporary folder.

A clip is a list of scenes; a scene has a background and actors. An actor is one photo of one person
(its central 150x150 region, where LFW's deep-funneled photos hold the face) pasted at a position that
moves a little every frame, from frame `start` to `end` (exclusive). Later actors are in front. The
ground truth of a frame is every actor on it, with its label (an enrolled person's name, or
"stranger:<who>") and the rectangle it covers, less any part hidden behind actors in front.

Scoring (`score`) reads the agent's per-frame output (`face-agent run --frames-out`, schema
agent/schemas/frame.schema.json) and judges every face on every frame against who is really there:
- a shown face is matched to the front-most actor whose visible rectangle holds the box centre;
- wrong_name: face-frames shown with a name that is not the actor's (must be 0);
- name_on_nothing: named boxes on no actor at all (a coasting box left behind);
- named_share: of the enrolled actors' face-frames, after each appearance's first `grace` frames, the
  share shown with the right name; named_all: enrolled face-frames shown with the right name, all frames;
- settle_frames: per appearance of an enrolled person, frames from its first frame to its first frame
  shown with the right name (None: never).
"""

from __future__ import annotations

import json
import statistics
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "faces"
LFW = SHARED / "lfw-subset"
FRAME_SIZE = (640, 360)  # (w, h)
ACTOR_SIDE = 150  # px: the pasted photo's side
FPS = 25.0


@dataclass
class Actor:
    label: str  # enrolled name, or "stranger:<who>"; "?" = not scored (identity unknown)
    photo: Path | None  # None: `region` only (ground truth for a real clip)
    start: int
    end: int  # exclusive
    xy: tuple[float, float] = (245, 105)  # top-left at `start`
    velocity: tuple[float, float] = (0.0, 0.0)  # px per frame
    jitter: float = 1.5  # px of pseudo-random shake per frame (a hand-held look)
    region: tuple[int, int, int, int] | None = None  # fixed (left, top, right, bottom) for real clips
    side: int = ACTOR_SIDE  # px: the pasted photo's side (the face is about 0.6 of it)

    def box(self, frame: int) -> tuple[int, int, int, int]:
        if self.region is not None:
            return self.region
        t = frame - self.start
        dx = self.jitter * np.sin(1.7 * t + zlib.crc32(self.label.encode()) % 7)  # not hash(): salted per process
        dy = self.jitter * np.cos(1.3 * t)
        x = int(round(self.xy[0] + self.velocity[0] * t + dx))
        y = int(round(self.xy[1] + self.velocity[1] * t + dy))
        return x, y, x + self.side, y + self.side

    @property
    def enrolled(self) -> bool:
        return not (self.label.startswith("stranger:") or self.label == "?")


@dataclass
class Scene:
    start: int
    end: int  # exclusive
    background_seed: int = 0


@dataclass
class Footage:
    """Frames `first`, `first + 1`, ... of a real video, resized to the clip's size, on frames start..end-1."""
    start: int
    end: int  # exclusive
    path: Path
    first: int = 0


@dataclass
class Clip:
    name: str
    frames: int
    actors: list[Actor]
    scenes: list[Scene] = field(default_factory=list)
    description: str = ""
    sensor_noise: float = 0.0  # grey levels: Gaussian noise drawn anew for every frame (a real camera's)
    size: tuple[int, int] = FRAME_SIZE  # (w, h)
    footage: list[Footage] = field(default_factory=list)  # real video shots (the rest: backgrounds and photos)

    def truth(self, frame: int) -> list[tuple[Actor, tuple[int, int, int, int], float]]:
        """(actor, its rectangle, visible share of it) on `frame`, front-most first."""
        on = [a for a in self.actors if a.start <= frame < a.end]
        out = []
        for k, actor in enumerate(reversed(on)):
            box = actor.box(frame)
            area = (box[2] - box[0]) * (box[3] - box[1])
            covered = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=bool)
            for front in list(reversed(on))[:k]:
                fb = front.box(frame)
                x1, y1 = max(fb[0], box[0]) - box[0], max(fb[1], box[1]) - box[1]
                x2, y2 = min(fb[2], box[2]) - box[0], min(fb[3], box[3]) - box[1]
                if x2 > x1 and y2 > y1:
                    covered[y1:y2, x1:x2] = True
            if actor.photo is not None:  # a pasted photo: the part outside the frame is not seen either
                w, h = self.size
                covered[:max(0, -box[1]), :] = covered[:, :max(0, -box[0])] = True
                covered[max(0, h - box[1]):, :] = covered[:, max(0, w - box[0]):] = True
            out.append((actor, box, 1.0 - covered.sum() / max(1, area)))
        return out


# ------------------------------------------------------------------------------------------------ people


def lfw_people() -> list[Path]:
    return sorted(p for p in LFW.iterdir() if p.is_dir())


def lfw_photos(person: Path) -> list[Path]:
    return sorted(person.glob("*.jpg"))


def cast(n_enrolled: int = 3, n_strangers: int = 2, offset: int = 0) -> tuple[dict[str, list[Path]], list[Path]]:
    """Enrolled people (name -> their first 5 photos, for enrollment) and stranger folders, from LFW
    (every second person enrolled, in alphabetical order from `offset`)."""
    people = lfw_people()[offset:offset + 2 * max(n_enrolled, n_strangers)]
    enrolled = {p.name.lower(): lfw_photos(p)[:5] for p in people[0::2][:n_enrolled]}
    strangers = people[1::2][:n_strangers]
    return enrolled, strangers


def clip_photo(name: str, which: int = 5) -> Path:
    """Photo number `which` (0-based; 5..9 are never enrolled) of an LFW person (folder or enrolled name)."""
    folder = next(p for p in lfw_people() if p.name.lower() == name.lower() or p.name == name)
    return lfw_photos(folder)[which]


# ------------------------------------------------------------------------------------------------ clips


def standard_clips(enrolled: Sequence[str], strangers: Sequence[Path]) -> list[Clip]:
    """The four identity clips of issue 11 from three enrolled people (a, b, c) and two strangers (s, t)."""
    a, b, c = enrolled[:3]
    s, t = (p.name for p in strangers[:2])
    n = 45  # frames per appearance

    def one_after_another(labels: list[tuple[str, str]], gap: int) -> list[Actor]:
        actors, frame = [], 0
        for i, (label, who) in enumerate(labels):
            actors.append(Actor(label, clip_photo(who, 5 + i % 5), frame, frame + n))
            frame += n + gap
        return actors

    order = [(a, a), ("stranger:" + s, s), (b, b), (c, c), ("stranger:" + t, t), (a, a)]
    clips = [
        Clip("replace_cut", n * len(order), one_after_another(order, 0),
             description="people replace each other at one spot with hard cuts, no gap"),
        Clip("replace_gap", (n + 6) * len(order), one_after_another(order, 6),
             description="people replace each other at one spot after 6 empty frames (< max_missed)"),
    ]
    # (c) crossing: a walks right, b walks left in front of a, then s and c cross the other way
    clips.append(Clip("crossing", 150, [
        Actor(a, clip_photo(a, 6), 0, 75, xy=(40, 110), velocity=(5.5, 0.0)),
        Actor(b, clip_photo(b, 6), 0, 75, xy=(450, 100), velocity=(-5.5, 0.0)),
        Actor("stranger:" + s, clip_photo(s, 6), 75, 150, xy=(40, 100), velocity=(5.5, 0.0)),
        Actor(c, clip_photo(c, 6), 75, 150, xy=(450, 110), velocity=(-5.5, 0.0)),
    ], description="two people cross, the one walking left in front; then a stranger and another person"))
    # (d) scene cut: a different background and a different person at about the same place
    clips.append(Clip("scene_cut", 150, [
        Actor(a, clip_photo(a, 7), 0, 50, xy=(240, 100)),
        Actor(b, clip_photo(b, 7), 50, 100, xy=(255, 110)),
        Actor("stranger:" + t, clip_photo(t, 7), 100, 150, xy=(230, 95)),
    ], scenes=[Scene(0, 50, 1), Scene(50, 100, 2), Scene(100, 150, 3)],
        description="shot cuts to other backgrounds, another person at about the same place"))
    return clips


def idle_clip(enrolled: Sequence[str]) -> Clip:
    """A door camera: an empty scene most of the time, with a camera's noise on every frame (400 frames). The
    first enrolled person walks in from the left edge (half in the frame at first) and stops; later the second
    appears at once (a fast entry between two full detections) and leaves. Checks the motion gate (the empty
    stretches skip the full detector, and every face is still named as soon as without the gate) and faces
    cut off by the frame's edge (no "unknown" for a person coming in)."""
    a, b = enrolled[:2]
    return Clip("idle", 400, [
        Actor(a, clip_photo(a, 8), 100, 135, xy=(-75, 105), velocity=(5.0, 0.0), jitter=0.0),
        Actor(a, clip_photo(a, 8), 135, 200, xy=(100, 105), jitter=0.0),
        Actor(b, clip_photo(b, 8), 263, 300, xy=(400, 100), jitter=0.0),
    ], description="an empty scene with a walk-in, a sudden appearance and empty stretches between",
        sensor_noise=4.0)


MONTAGE_SIZE = (1280, 720)  # (w, h): the montage's frames (720p; its footage is resized to it)
WALKERS = SHARED / "facenet-pytorch" / "examples" / "video.mp4"  # 1920x1080, 105 frames, nobody enrolled


def montage_cast() -> tuple[dict[str, list[Path]], list[Path]]:
    """The montage's people: 6 enrolled LFW people (5 photos each) and 12 LFW strangers (cast's order, less
    Atal Bihari Vajpayee: one of his first 5 photos holds two faces of about one size, which enroll refuses)."""
    enrolled, strangers = cast(n_enrolled=7, n_strangers=12)
    enrolled.pop("atal_bihari_vajpayee", None)
    return dict(list(enrolled.items())[:6]), strangers


def montage_clip(enrolled: Sequence[str], strangers: Sequence[Path]) -> Clip:
    """A talk-show-like montage at 1280x720 (500 frames, 20 s at 25 fps): 9 shots with hard cuts every 1.2-2.6 s,
    except one long 4.2 s shot, from different sources and at different sizes:
    LFW photos pasted large, medium and small on backgrounds; the Hamilton clip (640x360, upscaled) on stage,
    in profile (not scored) and in the audience (Obama enrolled); facenet-pytorch's walkers (1080p,
    downscaled: the long shot, nobody enrolled); and a crowd of 18 LFW faces of ~30-100 px (6 enrolled people
    among 12 strangers) for 60 frames. `enrolled`: the 6 montage_cast names, with hamilton_enrollment's
    lin_manuel, alex and obama enrolled too."""
    e = list(enrolled[:6])
    s = [p.name for p in strangers[:12]]
    w, h = MONTAGE_SIZE
    whole = (0, 0, w, h)
    actors: list[Actor] = []
    scenes: list[Scene] = []
    footage: list[Footage] = []

    def stage(start: int, end: int, seed: int, cast_: list[tuple[str, str, int, tuple[float, float],
                                                                  tuple[float, float]]]) -> None:
        scenes.append(Scene(start, end, seed))
        for k, (label, who, side, xy, velocity) in enumerate(cast_):
            actors.append(Actor(label, clip_photo(who.removeprefix("stranger:"), 5 + k % 5), start, end, xy=xy,
                                velocity=velocity, side=side))

    # 1: two people close up (faces ~215 and ~180 px)
    stage(0, 45, 11, [(e[0], e[0], 360, (180, 200), (0, 0)), ("stranger:" + s[0], s[0], 300, (760, 230), (0, 0))])
    # 2: Lin-Manuel Miranda alone on stage (Hamilton 82-146, upscaled x2)
    footage.append(Footage(45, 110, HAMILTON, 82))
    actors.append(Actor("lin_manuel", None, 45, 110, region=whole))
    # 3: the crowd: 18 faces of ~30-100 px in three rows, enrolled people among strangers
    scenes.append(Scene(110, 170, 14))
    sides = [50, 165, 60, 140, 70, 120, 85, 100, 55, 150, 65, 110, 75, 130, 90, 160, 52, 95]
    who = ["stranger:" + x for x in s]
    for k, person in zip((1, 4, 8, 11, 13, 16), e):  # enrolled people at 165, 70, 55, 110, 130, 52 px sides
        who.insert(k, person)
    for k, (label, side) in enumerate(zip(who, sides)):
        row, col = divmod(k, 6)
        cx, cy = (col + 0.5) * w / 6, (row + 0.5) * h / 3
        actors.append(Actor(label, clip_photo(label.removeprefix("stranger:"), 5 + k % 5), 110, 170,
                            xy=(cx - side / 2, cy - side / 2), jitter=0.5, side=side))
    # 4: two people at medium size, one walking
    stage(170, 220, 12, [(e[1], e[1], 220, (100, 250), (6.0, 0)), (e[2], e[2], 180, (900, 200), (0, 0))])
    # 5: the long shot: facenet-pytorch's walkers (1080p, 105 frames), nobody enrolled
    footage.append(Footage(220, 325, WALKERS, 0))
    actors.append(Actor("stranger:walkers", None, 220, 325, region=whole))
    # 6: the Hamilton audience (211-260): Barack Obama enrolled, everybody else a stranger
    footage.append(Footage(325, 375, HAMILTON, 211))
    actors.append(Actor("stranger:audience", None, 325, 375, region=whole))
    actors.append(Actor("obama", None, 325, 375, region=(600, 30, 820, 330)))
    # 7: three smaller faces (~54, ~48 and ~72 px)
    stage(375, 425, 13, [(e[3], e[3], 90, (200, 300), (0, 0)), ("stranger:" + s[1], s[1], 80, (600, 280), (0, 0)),
                         (e[4], e[4], 120, (950, 320), (-3.0, 0))])
    # 8: the Hamilton close-up in profile (20-49): not scored
    footage.append(Footage(425, 455, HAMILTON, 20))
    actors.append(Actor("?", None, 425, 455, region=whole))
    # 9: a close-up and a stranger
    stage(455, 500, 15, [(e[5], e[5], 260, (250, 220), (0, 0)), ("stranger:" + s[2], s[2], 200, (800, 260), (0, 0))])
    return Clip("montage", 500, actors, scenes=scenes, size=MONTAGE_SIZE, footage=footage,
                description="a 720p montage: cuts every 1.2-2.6 s between LFW photos at several sizes, Hamilton "
                            "shots, a crowd of 18 small faces and the 1080p walkers as the long shot")


def montage_enrollment() -> dict[str, list[Path]]:
    """Who is enrolled for the montage: its 6 LFW people (photos 0-4) and the Hamilton clip's three."""
    enrolled, _ = montage_cast()
    return {**enrolled, **hamilton_enrollment()}


def background(seed: int, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A smooth, textured RGB background (no faces), different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(30, 220, size=(9, 16, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _actor_image(path: Path, out_side: int = ACTOR_SIDE) -> np.ndarray:
    from agent.images import load_image

    rgb = load_image(path)
    h, w = rgb.shape[:2]
    side = min(h, w) * 3 // 5
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = rgb[y0:y0 + side, x0:x0 + side]
    return cv2.resize(crop, (out_side, out_side), interpolation=cv2.INTER_AREA if out_side <= side else cv2.INTER_CUBIC)


class _Reels:
    """Frames of the clip's footage, read in order (one open capture per video), as RGB at the clip's size."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self._open: dict[Path, tuple[cv2.VideoCapture, list[int]]] = {}

    def frame(self, path: Path, index: int) -> np.ndarray:
        cap, at = self._open.get(path, (None, [0]))
        if cap is None or at[0] > index:
            if cap is not None:
                cap.release()
            cap, at = cv2.VideoCapture(str(path)), [0]
            self._open[path] = (cap, at)
        while at[0] < index:
            cap.grab()
            at[0] += 1
        ok, bgr = cap.read()
        at[0] += 1
        if not ok:
            raise ValueError(f"{path}: no frame {index}")
        interpolation = cv2.INTER_AREA if bgr.shape[1] > self.size[0] else cv2.INTER_CUBIC
        return cv2.cvtColor(cv2.resize(bgr, self.size, interpolation=interpolation), cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        for cap, _ in self._open.values():
            cap.release()


def render(clip: Clip, path: Path) -> Path:
    """Write the clip as an MP4 (mp4v) at `path`."""
    w, h = clip.size
    images = {(a.photo, a.side): _actor_image(a.photo, a.side) for a in clip.actors if a.photo is not None}
    backgrounds: dict[int, np.ndarray] = {}
    reels = _Reels(clip.size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    try:
        for frame in range(clip.frames):
            scene = next((s for s in clip.scenes if s.start <= frame < s.end), None)
            shot = next((f for f in clip.footage if f.start <= frame < f.end), None)
            seed = scene.background_seed if scene else 0
            if shot is not None:
                img = reels.frame(shot.path, shot.first + frame - shot.start)
            else:
                if seed not in backgrounds:
                    backgrounds[seed] = background(seed, clip.size)
                img = backgrounds[seed].copy()
            for actor in clip.actors:
                if not actor.start <= frame < actor.end or actor.photo is None:
                    continue
                x1, y1, x2, y2 = actor.box(frame)
                sx1, sy1 = max(0, -x1), max(0, -y1)
                dx1, dy1, dx2, dy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
                if dx2 > dx1 and dy2 > dy1:
                    img[dy1:dy2, dx1:dx2] = images[actor.photo, actor.side][sy1:sy1 + dy2 - dy1, sx1:sx1 + dx2 - dx1]
            if clip.sensor_noise:
                noise = np.random.default_rng(frame).normal(0, clip.sensor_noise, img.shape)
                img = np.clip(img + noise, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
        reels.close()
    return path


# ------------------------------------------------------------------------------------------------ scoring

MIN_VISIBLE = 0.5  # an actor less than half visible is not a face-frame to be named


def read_frames(path: Path, camera: str | None = None) -> dict[int, list[dict[str, Any]]]:
    """frame index -> shown faces, from a --frames-out JSON Lines file (of one `camera`, when given)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if camera is None or record.get("camera") == camera:
                out[record["frame"]] = record["faces"]
    return out


def owner(clip: Clip, frame: int, face: dict[str, Any]) -> Actor | None:
    """The actor whose box holds the centre of a shown face's box on `frame` (None: nobody, a box on nothing)."""
    b = face["box"]
    cx, cy = (b["left"] + b["right"]) / 2, (b["top"] + b["bottom"]) / 2
    for actor, box, _ in clip.truth(frame):
        if box[0] <= cx < box[2] and box[1] <= cy < box[3]:
            return actor
    return None


def score(clip: Clip, shown: dict[int, list[dict[str, Any]]], grace: int = 10) -> dict[str, Any]:
    """Per-frame figures of what was shown on `clip` (see the module docstring)."""
    wrong, on_nothing, face_frames, enrolled_frames, named_right, named_all = 0, 0, 0, 0, 0, 0
    wrong_examples: list[tuple[int, str, str]] = []
    first_named: dict[int, int] = {}
    per_person: dict[str, list[int]] = {}  # enrolled label -> [face-frames after grace, named right]
    for frame in range(clip.frames):
        faces = shown.get(frame, [])
        named_actors = set()
        for face in faces:
            if face["status"] != "named":
                continue
            actor = owner(clip, frame, face)
            if actor is None:
                on_nothing += 1
            elif actor.label != "?" and face["name"] != actor.label:
                wrong += 1
                wrong_examples.append((frame, face["name"], actor.label))
            elif face["name"] == actor.label:
                named_actors.add(id(actor))
        for actor, _, visible in clip.truth(frame):
            if visible < MIN_VISIBLE or actor.label == "?":
                continue
            face_frames += 1
            if not actor.enrolled:
                continue
            if id(actor) in named_actors:
                first_named.setdefault(id(actor), frame)
                named_all += 1
            if frame - actor.start >= grace:
                enrolled_frames += 1
                named_right += id(actor) in named_actors
                tally = per_person.setdefault(actor.label, [0, 0])
                tally[0] += 1
                tally[1] += id(actor) in named_actors
    settle = [first_named[id(a)] - a.start if id(a) in first_named else None
              for a in clip.actors if a.enrolled]
    settled = [s for s in settle if s is not None]
    return {"clip": clip.name, "frames": clip.frames, "face_frames": face_frames, "wrong_name": wrong,
            "name_on_nothing": on_nothing, "enrolled_face_frames": enrolled_frames, "named_right": named_right,
            "named_share": named_right / enrolled_frames if enrolled_frames else None, "named_all": named_all,
            "settle_frames": settle, "settle_median": statistics.median(settled) if settled else None,
            "per_person": {k: {"face_frames": v[0], "named": v[1], "share": round(v[1] / v[0], 3) if v[0] else None}
                           for k, v in per_person.items()},
            "wrong_examples": wrong_examples[:10]}


def format_scores(rows: Iterable[dict[str, Any]]) -> str:
    lines = [f"{'clip':12s} {'runner':16s} {'face-frames':>11s} {'wrong':>5s} {'on-nothing':>10s} "
             f"{'named share':>11s} {'named (all)':>11s} {'settle (median, frames)':>24s}"]
    for r in rows:
        share = f"{r['named_share'] * 100:.1f}%" if r["named_share"] is not None else "-"
        settle = f"{r['settle_median']}" if r["settle_median"] is not None else "never"
        lines.append(f"{r['clip']:12s} {r.get('runner', 'face-agent'):16s} {r['face_frames']:11d} "
                     f"{r['wrong_name']:5d} {r['name_on_nothing']:10d} {share:>11s} {r['named_all']:11d} {settle:>24s}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ Hamilton

HAMILTON = SHARED / "face_recognition" / "examples" / "short_hamilton_clip.mp4"


def hamilton_truth(lin: str = "lin_manuel", alex: str = "alex", obama: str = "obama") -> Clip:
    """Ground truth of the shared Hamilton clip (640x360, 275 frames; shots cut at frames 20, 82 and 211),
    read off its frames: 0-19 Lin-Manuel on stage (right) and Alex Lacamoire at the piano (left, ~26 px);
    20-81 a close-up in profile whose identity is not scored; 82-210 Lin-Manuel alone; 211-274 the
    audience: Barack Obama (centre), Michelle Obama right of him, a woman on the left, all else strangers."""
    whole = (0, 0, 640, 360)
    return Clip("hamilton", 275, [
        Actor(lin, None, 0, 20, region=(495, 25, 600, 125)),
        Actor(alex, None, 0, 20, region=(30, 165, 100, 235)),
        Actor("?", None, 20, 82, region=whole),
        Actor(lin, None, 82, 211, region=whole),
        Actor("stranger:audience", None, 211, 275, region=whole),
        Actor(obama, None, 211, 275, region=(300, 15, 410, 165)),  # in front of the rest of the audience
    ], description="the shared Hamilton clip with lin-manuel-miranda, alex-lacamoire and obama enrolled")


def hamilton_enrollment(lin: str = "lin_manuel", alex: str = "alex", obama: str = "obama") -> dict[str, list[Path]]:
    fr = SHARED / "face_recognition" / "examples"
    return {lin: [fr / "lin-manuel-miranda.png"], alex: [fr / "alex-lacamoire.png"],
            obama: sorted((fr / "knn_examples" / "train" / "obama").glob("*.jpg"))}


def enroll_all(run: Callable[..., Any], people: dict[str, list[Path]]) -> None:
    """Enroll every person through the CLI: `run(args...)` runs `face-agent args...`."""
    for name, photos in people.items():
        run("enroll", name, *map(str, photos))
