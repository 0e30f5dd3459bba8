"""Sightings and unknown people on a clip of strangers: cluster purity and count, sightings per minute, disk.

A clip is built from LFW people nobody enrolled (bench/identity_clips.py renders it): each person appears
`--appearances` times, each time from another photo, in the order a, b, c, ..., a, b, c, ..., separated by
hard cuts to another background, so every appearance is a new track. The real `face-agent run` (MQTT off,
`[sightings] privacy = "all"`) runs on it, then the clusters (`face-agent unknowns --json`) are judged
against who was really there (the actor on screen at each track's first frame):

- purity: of all the sightings in clusters, the share that belongs to its cluster's main person;
- clusters per person: clusters / people (1.0 = one cluster per stranger);
- sightings per minute of video, and disk (crop files + index) per hour of video at that rate;
- with --cost: the same clip run with --every-frame and `privacy = "off"` then `"all"` (fresh folders,
  `--repeat` times each): wall seconds per run (model loading included, the same in both) and the
  difference per frame, what keeping sightings costs the frame loop and the process.

    .venv/bin/python bench/bench_sightings.py --people 4 --appearances 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import identity_clips as ic  # noqa: E402

FRAMES_PER_APPEARANCE = 40


def strangers_clip(n_people: int = 4, appearances: int = 3, offset: int = 40,
                   frames: int = FRAMES_PER_APPEARANCE) -> ic.Clip:
    """n_people LFW people (from `offset` alphabetically), each `appearances` times (photos 5, 6, 7...),
    one at a time, a hard cut to another background between appearances."""
    people = ic.lfw_people()[offset:offset + n_people]
    actors, scenes = [], []
    start = 0
    for round_ in range(appearances):
        for k, person in enumerate(people):
            photo = ic.lfw_photos(person)[5 + round_ % 5]
            actors.append(ic.Actor("stranger:" + person.name, photo, start, start + frames,
                                   xy=(200 + 30 * k, 90 + 10 * round_)))
            scenes.append(ic.Scene(start, start + frames, background_seed=1 + len(scenes)))
            start += frames
    return ic.Clip("strangers", start, actors, scenes=scenes,
                   description=f"{n_people} strangers, {appearances} appearances each, hard cuts")


def track_people(clip: ic.Clip, events: list[dict[str, Any]]) -> dict[int, str]:
    """track id -> the actor on screen when the track started (one actor at a time in these clips)."""
    out = {}
    for e in events:
        if e["type"] == "track_started":
            frame = e["frame_index"]
            who = [a.label for a in clip.actors if a.start <= frame < a.end]
            if who:
                out[e["track_id"]] = who[0]
    return out


def cluster_scores(clusters: list[dict[str, Any]], sightings: list[dict[str, Any]],
                   people_of_tracks: dict[int, str]) -> dict[str, Any]:
    """Purity (sighting-weighted share of each cluster's main person), clusters per person, clusters of
    each person. `sightings`: rows with `cluster` (u-id) and `track_id`."""
    members: dict[str, Counter] = defaultdict(Counter)
    for s in sightings:
        if s["cluster"] is not None and s["track_id"] in people_of_tracks:
            members[s["cluster"]][people_of_tracks[s["track_id"]]] += 1
    total = sum(sum(c.values()) for c in members.values())
    pure = sum(c.most_common(1)[0][1] for c in members.values())
    per_person: dict[str, set] = defaultdict(set)
    for cid, c in members.items():
        per_person[c.most_common(1)[0][0]].add(cid)
    people = set(people_of_tracks.values())
    return {"clusters": len(clusters), "people": len(people), "purity": round(pure / total, 4) if total else None,
            "clusters_per_person": round(len(members) / len(people), 3) if people else None,
            "people_split": sorted(p for p, cs in per_person.items() if len(cs) > 1),
            "people_without_cluster": sorted(people - set(per_person))}


def stored_sightings(folder: Path) -> list[dict[str, Any]]:
    """Every sighting row of an agent folder (`cluster` as its u-id)."""
    from agent.config import load_config
    from agent.sightings import SightingStore, cluster_label

    store = SightingStore(load_config(folder / "agent.toml"))
    try:
        rows = store.sightings()
    finally:
        store.close()
    return [{**r, "cluster": None if r["cluster"] is None else cluster_label(r["cluster"])} for r in rows]


def agent(folder: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(folder / "agent.toml"), *args],
                         capture_output=True, text=True, cwd=folder, timeout=1200,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"face-agent {' '.join(args)} failed: {out.stderr[-3000:]}")
    return out


def cost(video: Path, frames: int, repeat: int) -> dict[str, Any]:
    """Wall seconds of `run --every-frame` with privacy off and all (best of `repeat`, fresh folders)."""
    best: dict[str, float] = {}
    for privacy in ("off", "all") * repeat:
        with tempfile.TemporaryDirectory(prefix="bench-sightings-cost-") as tmp:
            folder = Path(tmp)
            (folder / "agent.toml").write_text(f'[mqtt]\nenabled = false\n[sightings]\nprivacy = "{privacy}"\n')
            started = time.perf_counter()
            agent(folder, "run", "--source", str(video), "--every-frame")
            best[privacy] = min(best.get(privacy, 1e9), time.perf_counter() - started)
    return {"seconds_off": round(best["off"], 2), "seconds_all": round(best["all"], 2),
            "ms_per_frame": round((best["all"] - best["off"]) / frames * 1000, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--appearances", type=int, default=3)
    ap.add_argument("--offset", type=int, default=40, help="first LFW person (alphabetical index)")
    ap.add_argument("--cost", action="store_true", help="also time runs with privacy off and all")
    ap.add_argument("--repeat", type=int, default=2, help="runs per privacy setting with --cost")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sightings-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.toml").write_text('[mqtt]\nenabled = false\n[sightings]\nprivacy = "all"\n')
        clip = strangers_clip(args.people, args.appearances, args.offset)
        video = ic.render(clip, folder / "strangers.mp4")
        agent(folder, "run", "--source", str(video))
        events = [json.loads(x) for x in agent(folder, "events", "--json", "--limit", "0").stdout.splitlines()]
        clusters = json.loads(agent(folder, "unknowns", "--json").stdout)
        sightings = stored_sightings(folder)
        scores = cluster_scores(clusters, sightings, track_people(clip, events))
        minutes = clip.frames / ic.FPS / 60
        n = sum(c["sightings"] for c in clusters)
        disk = sum(f.stat().st_size for f in (folder / "storage").rglob("*") if f.is_file()
                   and (f.name.startswith("sightings") or "sightings" in f.parts))
        scores.update(video_minutes=round(minutes, 3), sightings=n, sightings_per_minute=round(n / minutes, 1),
                      disk_bytes=disk, disk_mb_per_hour=round(disk / 1e6 / minutes * 60, 1),
                      unknown_events_with_id=sum(1 for e in events if e["type"] == "unknown_face"
                                                 and e.get("unknown_id")),
                      unknown_events=sum(1 for e in events if e["type"] == "unknown_face"))
        if args.cost:
            scores["cost"] = cost(video, clip.frames, args.repeat)
        print(json.dumps(scores, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
