"""The open-set gate however people are enrolled and however far away the camera sees them (issue 22).

    python bench/bench_gate.py                 # the photo tables (a few minutes the first time: embeddings cached)
    python bench/bench_gate.py --visits 6      # + the one-visit figure on identity clips (~1 min a person)

Data: ../shared/faces/lfw-subset split by PEOPLE as in bench_openset.py (split A enrolls the 1st, 3rd, ...
person, B the 2nd, 4th, ...; the other 72 are strangers whose 10 photos must stay unknown). The gallery is always
the enrolled people's first n full-size photos; probes (their last 5 photos) and strangers are seen at four
sizes: the photo itself and camera views with the face at about 60, 40 and 30 px (bench/openset_cache.py
`camera_view`: scaled, sigma 0.6 px blur, JPEG quality 60), each embedded with the real models once and cached.

Tables (markdown, pasted into docs/evaluation.md):
1. photos per person (1/2/3/5) x face size at the shipped defaults, exactly as `identify` decides
   (`Classifier.predict` with each face's size, then the quality limits): FAR = stranger photos named (as
   anybody), ID = probe photos named as the right person. SVMs linear (as bench_openset's photo-count table).
2. gallery size: FAR / ID with 1-20 people enrolled (random draws from the enrolled half, both splits).
3. one visit, photos: every enrolled person whose gallery is ONE visit - 8 near-identical views of one photo
   (shifted, scaled, lit a little differently: the kept faces of a track) - against the same person enrolled
   from that one photo, and with near-duplicates counted as separate photos (the rule before).
4. with --visits N: one visit on identity clips. N LFW people appear once (photo 5, 45 frames); the agent's run
   keeps the track's faces and `face-agent name --track` enrolls them; a later visit (photos 7, 8 and 9, each
   45 frames, after cuts) is scored per frame against the same person enrolled from one still frame of the
   first visit instead (bench/identity_clips.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import identity_clips as ic  # noqa: E402
from bench_openset import Photos, principal_faces, split, trained  # noqa: E402
from openset_cache import LFW, RESULTS, cache_path, load_or_embed  # noqa: E402

from agent.config import Config, config_from_dict  # noqa: E402
from agent.images import load_image  # noqa: E402
from agent.vision.classifier import CONFIDENCE_SLOPE, Classifier, gate_thresholds, train  # noqa: E402
from agent.vision.recognizer import FaceAnalyzer  # noqa: E402

FACE_SIZES = (None, 60, 40, 30)  # None: the photo itself
PHOTOS_PER_PERSON = (1, 2, 3, 5)
GALLERY_SIZES = (1, 2, 3, 5, 9, 20, 40)
GALLERY_DRAWS = 10  # random galleries per size and split
CALIBRATION_SIZES = (2, 3, 5, 8, 10, 15, 20, 30, 40, 72)
WIDENINGS = np.arange(0, 0.1001, 0.0025)
VISIT_VIEWS = 8


def seen_at(cfg: Config, face_size: int | None) -> Photos:
    """Every lfw-subset photo's principal face seen at this face size (None: the photo), quality as judged now."""
    return principal_faces(load_or_embed("onnxruntime", face_size=face_size), cfg)


def named(clf: Classifier, seen: Photos, idx: np.ndarray) -> np.ndarray:
    """What identify says for these photos: the name, or None."""
    preds = clf.predict(seen.embedding[idx], seen.side[idx])
    return np.array([p.name if q == "" else None for p, q in zip(preds, seen.quality[idx])], dtype=object)


def rates(clf: Classifier, seen: Photos, probes: np.ndarray, strangers: np.ndarray) -> dict:
    right = named(clf, seen, probes) == seen.person[probes]
    false = named(clf, seen, strangers) != None  # noqa: E711 (element-wise)
    return {"far": float(false.mean()), "id": float(right.mean()), "strangers_named": int(false.sum()),
            "strangers": len(strangers), "named_right": int(right.sum()), "probes": len(probes)}


def first_n(photos: Photos, gallery: np.ndarray, n: int) -> np.ndarray:
    rank = {i: sorted(np.flatnonzero(photos.person == photos.person[i]), key=lambda j: photos.file[j]).index(i)
            for i in gallery}
    return np.array([i for i in gallery if rank[i] < n])


def photo_table(cfg: Config, full: Photos, views: dict) -> list[dict]:
    rule = dataclasses.replace(cfg.recognition, kernel="linear")
    rows = []
    for n in PHOTOS_PER_PERSON:
        for size, seen in views.items():
            row: dict = {"photos": n, "face_size": size}
            for name, parity in (("A", 0), ("B", 1)):
                gallery, probes, strangers = split(full, parity)
                g = first_n(full, gallery, n)
                clf = trained(full, g, rule, f"{cache_path('onnxruntime', cfg).stem}-split{name}-{n}photos-linear")
                row[name] = rates(clf, seen, probes, strangers)
            rows.append(row)
    return rows


def gallery_table(cfg: Config, full: Photos, views: dict) -> list[dict]:
    rule = dataclasses.replace(cfg.recognition, kernel="linear")
    rows = []
    for n in (1, 3, 5):
        for k in GALLERY_SIZES:
            acc: dict = {size: [] for size in (None, 40)}
            for parity in (0, 1):
                gallery, probes, strangers = split(full, parity)
                people = sorted(set(full.person[gallery]))
                for seed in range(GALLERY_DRAWS):
                    chosen = np.random.default_rng(seed).choice(people, size=k, replace=False)
                    g = first_n(full, gallery[np.isin(full.person[gallery], chosen)], n)
                    p = probes[np.isin(full.person[probes], chosen)]
                    clf = train(full.embedding[g], list(full.person[g]), rule)
                    for size in acc:
                        acc[size].append(rates(clf, views[size], p, strangers))
            for size, runs in acc.items():
                rows.append({"photos": n, "people": k, "face_size": size, "runs": len(runs),
                             "far": float(np.mean([r["far"] for r in runs])),
                             "far_max": float(np.max([r["far"] for r in runs])),
                             "id": float(np.mean([r["id"] for r in runs]))})
    return rows


def _gallery_bonus(views: np.ndarray, rule) -> np.ndarray:
    """How much wider each person's gate is for the gallery's size (`gate_thresholds` with and without it)."""
    return gate_thresholds(views, rule) - gate_thresholds(views, dataclasses.replace(rule, gallery_bonus=0.0))


def _named_if_wider(clf: Classifier, seen: Photos, idx: np.ndarray) -> np.ndarray:
    """(len(WIDENINGS), len(idx)) whether each face is named with its candidate's gate without the gallery
    bonus, then wider by each of WIDENINGS, exactly as `Classifier.predict` decides otherwise."""
    preds = clf.predict(seen.embedding[idx], seen.side[idx])
    bonus = _gallery_bonus(clf.views, clf.rule)
    e = np.array([p.effective for p in preds])
    gate = np.array([p.gate - bonus[clf.people.index(p.candidate)] for p in preds])
    usable = np.array([(not clf.svm_veto or p.svm_name in (None, p.candidate)) and q == ""
                       for p, q in zip(preds, seen.quality[idx])])
    wider = gate[None, :] + WIDENINGS[:, None]
    confidence = 1.0 / (1.0 + np.exp(-CONFIDENCE_SLOPE * (wider - e[None, :])))
    return (e[None, :] <= wider) & usable[None, :] & (confidence >= clf.rule.min_confidence)


def widening_table(cfg: Config, views: dict) -> list[dict]:
    """How `[recognition] small_gallery` was chosen: per photos per person (1-5) and people enrolled, the
    largest widening of the gate without the gallery bonus (few_views_penalty kept) that keeps the mean FAR over
    GALLERY_DRAWS random galleries per split at or under 1%, at every face size; and the bonus the shipped
    settings give there."""
    rule = dataclasses.replace(cfg.recognition, kernel="linear")
    full, rows = views[None], []
    for n in (1, 2, 3, 4, 5):
        for k in CALIBRATION_SIZES:
            far = {size: np.zeros(len(WIDENINGS)) for size in views}
            runs = 0
            for parity in (0, 1):
                gallery, _, strangers = split(full, parity)
                people = sorted(set(full.person[gallery]))
                for seed in range(GALLERY_DRAWS):
                    chosen = np.random.default_rng(1000 + seed).choice(people, size=k, replace=False)
                    g = first_n(full, gallery[np.isin(full.person[gallery], chosen)], n)
                    clf = train(full.embedding[g], list(full.person[g]), rule)
                    runs += 1
                    for size, seen in views.items():
                        far[size] += _named_if_wider(clf, seen, strangers).mean(1)
            safe = min(float(WIDENINGS[far[size] / runs <= 0.01].max(initial=0.0)) for size in views)
            shipped = float(_gallery_bonus(np.full(k, n), rule)[0])
            rows.append({"photos": n, "people": k, "safe": safe, "shipped": shipped})
            print(f"photos {n} people {k}: largest safe widening {safe:.4f}, shipped {shipped:.4f}", flush=True)
    return rows


def visit_views(rgb: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """VISIT_VIEWS near-identical frames of one photo, as a camera keeps them over one visit: shifted a few
    px, scaled by up to 8%, brightness and contrast within 10%, sensor noise and JPEG 80."""
    h, w = rgb.shape[:2]
    out = []
    for _ in range(VISIT_VIEWS):
        s = rng.uniform(0.92, 1.08)
        m = np.float32([[s, 0, rng.uniform(-4, 4) + (1 - s) * w / 2], [0, s, rng.uniform(-4, 4) + (1 - s) * h / 2]])
        img = cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        img = img.astype(np.float64) * rng.uniform(0.9, 1.1) + rng.uniform(-12, 12) + rng.normal(0, 2, img.shape)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 80])
        out.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return out


def visit_embeddings(cfg: Config, full: Photos) -> dict[str, np.ndarray]:
    """Per LFW person: (VISIT_VIEWS, 128) embeddings of one visit built from their first photo (cached)."""
    path = RESULTS / f"visits_{cache_path('onnxruntime', cfg).stem}_{VISIT_VIEWS}.npz"
    if path.is_file():
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    analyzer = FaceAnalyzer(cfg)
    out = {}
    for person in tqdm(sorted(set(full.person)), desc="embedding one visit per person", unit="person"):
        first = sorted(f for f, p in zip(full.file, full.person) if p == person)[0]
        embs = []
        for rgb in visit_views(load_image(LFW / person / first), np.random.default_rng(len(out))):
            dets = analyzer.detect(rgb)
            if dets:
                biggest = max(dets, key=lambda d: d.area)
                embs.append(analyzer.embed(rgb, [biggest])[1][0])
        out[person] = np.array(embs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def visit_table(cfg: Config, full: Photos, views: dict) -> list[dict]:
    """All 72 enrolled people from one visit (near-duplicates), from one photo, and the visit without
    counting near-duplicates once (duplicate_distance 0: the rule before this bench)."""
    visits = visit_embeddings(cfg, full)
    rule = dataclasses.replace(cfg.recognition, kernel="linear")
    rows = []
    for label, how in (("one photo", "photo"), ("one visit (8 near-identical faces)", "visit"),
                       ("one visit, near-duplicates not merged", "visit-nodedup")):
        row: dict = {"enrolled_from": label}
        for name, parity in (("A", 0), ("B", 1)):
            gallery, probes, strangers = split(full, parity)
            g = first_n(full, gallery, 1)
            if how == "photo":
                X, names = full.embedding[g], list(full.person[g])
            else:
                X = np.concatenate([visits[p] for p in full.person[g]])
                names = [p for p in full.person[g] for _ in range(len(visits[p]))]
            r = rule if how != "visit-nodedup" else dataclasses.replace(rule, duplicate_distance=0.0)
            clf = train(X, names, r)
            row[name] = {str(size): rates(clf, seen, probes, strangers) for size, seen in views.items()}
            row[name]["views_per_person"] = float(np.mean(clf.views))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------
# one visit on identity clips, through the real agent and CLI
# ------------------------------------------------------------------------------------------------------

def cli(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(work / "agent.toml"), *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)


def run_clip(work: Path, clip: ic.Clip, tag: str) -> dict:
    video = ic.render(clip, work / f"{tag}.mp4")
    frames = work / f"{tag}.jsonl"
    cli(work, "run", "--source", str(video), "--frames-out", str(frames))
    return ic.read_frames(frames)


def clip_visits(people: list[str], others: dict[str, list[Path]]) -> list[dict]:
    """For each person: named from the kept faces of one visit (`name --track`) vs enrolled from one still frame
    of it; both scored per frame on a later visit (other photos, after cuts)."""
    rows = []
    for person in tqdm(people, desc="one visit, identity clips", unit="person"):
        later = ic.Clip("later", 3 * 45, [ic.Actor(person, ic.clip_photo(person, k), 45 * i, 45 * (i + 1))
                                          for i, k in enumerate((7, 8, 9))],
                        scenes=[ic.Scene(45 * i, 45 * (i + 1), 10 + i) for i in range(3)])
        visit = ic.Clip("visit", 45, [ic.Actor("?", ic.clip_photo(person, 5), 0, 45)])
        row = {"person": person}
        for how in ("one still frame", "name --track"):
            with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
                work = Path(tmp)
                (work / "agent.toml").write_text('[mqtt]\nenabled = false\n[sightings]\nprivacy = "all"\n')
                for name, photos in others.items():
                    cli(work, "enroll", name, *map(str, photos))
                if how == "name --track":
                    shown = run_clip(work, visit, "visit")
                    track = max((f["track_id"] for faces in shown.values() for f in faces), default=None)
                    try:  # a visit with no usable face (turned away, blurry) keeps nothing to name
                        cli(work, "name", "--track", str(track), person)
                    except subprocess.CalledProcessError as exc:
                        row[how] = {"refused": exc.stderr.strip().splitlines()[-1] if exc.stderr else "failed"}
                        continue
                else:
                    still = work / "still.png"
                    ic.render(visit, work / "visit.mp4")
                    ok, frame = cv2.VideoCapture(str(work / "visit.mp4")).read()
                    cv2.imwrite(str(still), frame)
                    cli(work, "enroll", person, str(still))
                row[how] = ic.score(later, run_clip(work, later, "later"))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------

def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def size_label(size) -> str:
    return "photo" if size in (None, "None") else f"~{size} px"


def print_tables(report: dict) -> None:
    print("| photos per person | face size | A: FAR / ID | B: FAR / ID |")
    print("|---|---|---|---|")
    for r in report["photos"]:
        cells = [f"{pct(r[s]['far'])} ({r[s]['strangers_named']}/{r[s]['strangers']}) / {pct(r[s]['id'])} "
                 f"({r[s]['named_right']}/{r[s]['probes']})" for s in ("A", "B")]
        print(f"| {r['photos']} | {size_label(r['face_size'])} | {cells[0]} | {cells[1]} |")
    print()
    print("| photos per person | people enrolled | face size | FAR mean (max of the draws) | ID |")
    print("|---|---|---|---|---|")
    for r in report["gallery"]:
        print(f"| {r['photos']} | {r['people']} ({r['runs']} draws) | {size_label(r['face_size'])} "
              f"| {pct(r['far'])} ({pct(r['far_max'])}) | {pct(r['id'])} |")
    print()
    sizes = [k for k in report["visits"][0]["A"] if k != "views_per_person"]
    print("| 72 people enrolled from | views per person | " + " | ".join(
        f"{size_label(s)}: A FAR / ID, B FAR / ID" for s in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for r in report["visits"]:
        cells = [f"{pct(r['A'][s]['far'])} / {pct(r['A'][s]['id'])}, {pct(r['B'][s]['far'])} / {pct(r['B'][s]['id'])}"
                 for s in sizes]
        print(f"| {r['enrolled_from']} | {r['A']['views_per_person']:.1f} | " + " | ".join(cells) + " |")
    if report.get("clip_visits"):
        print()
        print("| person | enrolled from | later visit: named share | named face-frames | wrong | settle (frames) |")
        print("|---|---|---|---|---|---|")
        for r in report["clip_visits"]:
            for how in ("one still frame", "name --track"):
                s = r.get(how)
                if not s or "refused" in s:
                    print(f"| {r['person']} | {how} | {(s or {}).get('refused', 'no track')} | | | |")
                    continue
                print(f"| {r['person']} | {how} | {pct(s['named_share'])} | {s['named_all']} | {s['wrong_name']} "
                      f"| {s['settle_frames']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visits", type=int, default=0, help="also the one-visit clips for this many LFW people")
    ap.add_argument("--json", type=Path, default=RESULTS / "gate.json")
    ap.add_argument("--calibrate", action="store_true",
                    help="only the table small_gallery was chosen from: the largest safe widening per photo count "
                         "and gallery size, against what the shipped settings give")
    args = ap.parse_args()
    cfg = config_from_dict({}, base_dir=ROOT, env={})  # the shipped defaults
    views = {size: seen_at(cfg, size) for size in FACE_SIZES}
    full = views[None]
    if args.calibrate:
        rows = widening_table(cfg, views)
        over = [r for r in rows if r["shipped"] > r["safe"] + 1e-9]
        print(f"shipped widening above the safe one in {len(over)} of {len(rows)} cases" + "".join(
            f"\n  photos {r['photos']}, people {r['people']}: {r['shipped']:.4f} > {r['safe']:.4f}" for r in over))
        return 0
    report = {"photos": photo_table(cfg, full, views), "gallery": gallery_table(cfg, full, views),
              "visits": visit_table(cfg, full, views), "defaults": dataclasses.asdict(cfg.recognition)}
    if args.visits:
        enrolled, _ = ic.cast(n_enrolled=3)  # a small household beside the visitors (the identity clips' three)
        visitors = [p.name for p in ic.lfw_people()[7::7]][:args.visits]  # photos 5, 7, 8, 9 in the clips
        report["clip_visits"] = clip_visits(visitors, enrolled)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print_tables(report)
    worst = max(max(r["A"]["far"], r["B"]["far"]) for r in report["photos"])
    print(f"\nworst FAR over photos per person x face size: {pct(worst)}" + ("" if worst <= 0.01 else "  (> 1%)"))
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
