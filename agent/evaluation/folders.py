"""`face-agent eval DIR`: recognition measured on folders of photos, one folder per person, by repeated
splits into enrolled photos, queries and strangers (the terms are explained in agent/evaluation/__init__.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.config import Config, RecognitionSection
from agent.evaluation import EvalError
from agent.evaluation.metrics import (
    GRID,
    distance_summary,
    equal_error,
    genuine_impostor,
    number_or_none,
    open_set_eer,
    ratio,
    rounded_list,
    spread_summary,
    threshold_for_far,
)
from agent.gallery import DUPLICATE, SEVERAL_FACES, Gallery, InvalidNameError, PhotoResult, validate_person_name
from agent.images import ImageError, is_image_path, load_image
from agent.vision.classifier import Classifier, train
from agent.vision.recognizer import FaceAnalyzer, principal_face

log = logging.getLogger(__name__)

USABLE = "usable"  # a photo with one (dominant) face, embedded
CONFLICT = "conflict"  # the same photo (by hash) in the folders of different people
FAILURES = ("no_face", "several_faces", "too_small", "unreadable")


@dataclass
class Sample:
    person: str
    path: Path
    sha256: str
    embedding: np.ndarray  # the (dominant or principal) face
    faces: np.ndarray | None = None  # every face of a several-faces photo (a query only), principal first

def eval_config(cfg: Config, cache_dir: Path) -> Config:
    """The config with every state folder moved into `cache_dir`, so evaluation never touches the gallery."""
    cache_dir = Path(cache_dir).resolve()
    paths = dataclasses.replace(cfg.paths, storage=str(cache_dir), faces=str(cache_dir / "faces"),
                                svm=str(cache_dir / "svm"))
    return dataclasses.replace(cfg, paths=paths)

def scan_folder(root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """{person: [photo paths]} from `root/<person>/<photo>`, and warnings about what was skipped."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{root}: not a folder (expected {root}/<person>/<photos>)")
    people: dict[str, list[Path]] = {}
    warnings = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            warnings.append(f"{entry}: not in a person folder, ignored")
            continue
        try:
            name = validate_person_name(entry.name)
        except InvalidNameError as exc:
            warnings.append(f"{entry}: folder skipped ({exc})")
            continue
        photos = sorted(p for p in entry.iterdir() if p.is_file() and is_image_path(p))
        if photos:
            people[name] = photos
        else:
            warnings.append(f"{entry}: no images")
    if not people:
        raise EvalError(f"{root}: no <person>/<photo> folders with images")
    return people, warnings

def embed_photos(people: dict[str, list[Path]], gallery: Gallery, progress: bool = False
                 ) -> tuple[dict[str, list[Sample]], list[dict]]:
    """Every photo through the enrollment path once: usable samples per person (exact duplicates merged,
    photos filed under several people dropped) and one record per file (status, reason)."""
    settings = gallery.settings_key()
    jobs = [(person, path) for person, paths in people.items() for path in paths]
    records: list[dict] = []
    samples: dict[str, list[Sample]] = defaultdict(list)
    first: dict[tuple[str, str], Path] = {}
    for person, path in tqdm(jobs, desc="embedding", unit="photo", disable=not progress, leave=False):
        result, emb = gallery.process_photo(person, path, settings)
        rec = photo_record(result)
        faces = _all_faces(gallery, path) if result.status == SEVERAL_FACES else None
        if faces is not None and (person, result.sha256) not in first:
            first[(person, result.sha256)] = path
            rec.update(status=USABLE, reason=f"{result.reason}: a query only")
            samples[person].append(Sample(person, path, result.sha256, faces[0], faces))
        elif result.ok and (person, result.sha256) in first:
            rec.update(status=DUPLICATE, reason=f"same photo as {first[(person, result.sha256)].name}")
        elif result.ok:
            first[(person, result.sha256)] = path
            samples[person].append(Sample(person, path, result.sha256, np.asarray(emb, dtype=np.float32)))
        records.append(rec)
    owners: dict[str, set[str]] = defaultdict(set)
    for person, sha in first:
        owners[sha].add(person)
    conflicts = {sha for sha, who in owners.items() if len(who) > 1}
    if conflicts:
        for rec in records:
            if rec["sha256"] in conflicts and rec["status"] in (USABLE, DUPLICATE):
                others = sorted(owners[rec["sha256"]] - {rec["person"]})
                rec.update(status=CONFLICT, reason=f"same photo is also in the folder of {', '.join(others)}")
        for person in list(samples):
            samples[person] = [s for s in samples[person] if s.sha256 not in conflicts]
    return {p: s for p, s in sorted(samples.items()) if s}, records

def _all_faces(gallery: Gallery, path: Path) -> np.ndarray | None:
    """Embeddings of every face of a photo, its principal face first (None if unreadable / no face)."""
    cfg = gallery.cfg
    try:
        rgb = load_image(path, cfg.images.max_pixels, cfg.images.max_bytes, cfg.images.memory_mb)
    except ImageError:
        return None
    detections = gallery.analyzer.detect(rgb)
    k = principal_face(detections, rgb.shape[1], rgb.shape[0], cfg.enrollment.dominance)
    if k is None:
        return None
    detections.insert(0, detections.pop(k))
    return np.asarray(gallery.analyzer.embed(rgb, detections)[1], dtype=np.float32)

def photo_record(result: PhotoResult) -> dict:
    return {"person": result.person, "path": str(result.path), "status": USABLE if result.ok else result.status,
            "reason": result.reason, "sha256": result.sha256}

def split_people(samples: dict[str, list[Sample]], enroll_k: int, strangers: set[str],
                 rng: np.random.Generator) -> tuple[list[Sample], list[Sample]]:
    """(enrollment, queries): per enrolled person `enroll_k` random photos (always keeping one as a query
    when there are at least two), every photo of a stranger as a query. Samples are already unique by
    hash per person and conflicting photos are gone, so a photo is never on both sides."""
    enroll, queries = [], []
    for person in sorted(samples):
        items = [s for s in samples[person] if s.faces is None]
        queries += [s for s in samples[person] if s.faces is not None]  # several faces: never enrolled
        if person in strangers:
            queries += items
            continue
        if not items:
            continue
        order = rng.permutation(len(items))
        k = len(items) if len(items) == 1 else min(enroll_k, len(items) - 1)
        enroll += [items[i] for i in order[:k]]
        queries += [items[i] for i in order[k:]]
    return enroll, queries

def evaluate_split(enroll: list[Sample], queries: list[Sample], strangers: set[str],
                   recognition: RecognitionSection) -> dict:
    """Train the real classifier on `enroll`, then score every query (distances + sweep of thresholds)."""
    clf = train(np.stack([s.embedding for s in enroll]), [s.person for s in enroll], recognition)
    index = {p: k for k, p in enumerate(clf.people)}
    out = {"enrolled": clf.people, "strangers": sorted(strangers), "enrollment": [str(s.path) for s in enroll],
           "svm_cv_accuracy": clf.summary.cv_score, "queries": []}
    counts = {k: np.zeros(len(GRID), dtype=int) for k in ("named_right", "named_wrong", "stranger_unknown",
                                                          "stranger_named")}
    if not queries:
        out["counts"] = {k: v.tolist() for k, v in counts.items()}
        return out
    Q = np.stack([query_face(clf, s) for s in queries])
    D = clf.centroid_distances(Q)
    at_config = clf.predict(Q)
    for i, (s, p) in enumerate(zip(queries, at_config)):
        own = index.get(s.person)
        genuine, impostor, j = genuine_impostor(D[i], clf.spreads, own, recognition)
        out["queries"].append({
            "person": s.person, "path": str(s.path), "kind": "stranger" if own is None else "enrolled",
            "genuine": number_or_none(genuine) if genuine is not None else None,
            "impostor": number_or_none(impostor) if impostor is not None else None,
            "impostor_person": clf.people[j] if j is not None else None,
            "candidate": p.candidate, "svm": p.svm_name, "name": p.name, "reason": p.reason or None})
    enrolled_q = np.array([s.person in index for s in queries])
    truth = [s.person for s in queries]
    for g, t in enumerate(GRID):
        clf.rule = dataclasses.replace(recognition, distance_threshold=float(t))
        names = [p.name for p in clf.predict(Q)]
        right = np.array([n == who for n, who in zip(names, truth)])
        named = np.array([n is not None for n in names])
        counts["named_right"][g] = int((right & enrolled_q).sum())
        counts["named_wrong"][g] = int((named & ~right & enrolled_q).sum())
        counts["stranger_unknown"][g] = int((~named & ~enrolled_q).sum())
        counts["stranger_named"][g] = int((named & ~enrolled_q).sum())
    clf.rule = recognition
    out["counts"] = {k: v.tolist() for k, v in counts.items()}
    return out

def query_face(clf: Classifier, sample: Sample) -> np.ndarray:
    """The embedding of the face that is the sample's person: for a several-faces photo the face the
    classifier names as that person, as `identify` would show it, else its principal face."""
    if sample.faces is None or len(sample.faces) == 1:
        return sample.embedding
    for face, p in zip(sample.faces, clf.predict(sample.faces)):
        if p.name == sample.person:
            return face
    return sample.embedding

def evaluate_folder(root: Path, cfg: Config, analyzer: FaceAnalyzer | None = None, cache_dir: Path | None = None,
                    enroll_k: int = 3, seed: int = 0, repeats: int = 1, strangers: int = 0,
                    stranger_names: list[str] | None = None, target_far: float = 0.01,
                    progress: bool = False) -> dict:
    """The whole `face-agent eval DIR` report as a JSON-ready dict."""
    if enroll_k < 1:
        raise EvalError(f"--enroll-k must be at least 1, got {enroll_k}")
    if repeats < 1:
        raise EvalError(f"--repeats must be at least 1, got {repeats}")
    if not 0.0 < target_far < 1.0:
        raise EvalError(f"--target-far must be between 0 and 1, got {target_far}")
    if strangers < 0:
        raise EvalError(f"--strangers must be 0 or more, got {strangers}")
    people, warnings = scan_folder(root)
    cache_dir = Path(cache_dir) if cache_dir else cfg.path("storage") / "eval"
    gallery = Gallery(eval_config(cfg, cache_dir), analyzer=analyzer)
    try:
        samples, records = embed_photos(people, gallery, progress)
    finally:
        gallery.close()
    fixed = set()
    for name in stranger_names or []:
        try:
            clean = validate_person_name(name)
        except InvalidNameError as exc:
            raise EvalError(f"--stranger {name!r}: {exc}") from None
        if clean not in samples:
            raise EvalError(f"--stranger {clean!r}: no usable photos of that person in {root}")
        fixed.add(clean)
    if fixed and strangers:
        raise EvalError("give either --strangers N or --stranger NAME..., not both")
    n_strangers = len(fixed) or strangers
    if len(samples) - n_strangers < 1:
        raise EvalError(f"{len(samples)} people with usable photos and {n_strangers} strangers: nobody left to "
                        "enroll")
    recognition = cfg.recognition
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        chosen = fixed or set(rng.choice(sorted(samples), size=strangers, replace=False).tolist())
        enroll, queries = split_people(samples, enroll_k, chosen, rng)
        split = evaluate_split(enroll, queries, chosen, recognition)
        split["seed"] = seed + r
        g = np.array([q["genuine"] for q in split["queries"] if q["genuine"] is not None])
        i = np.array([q["impostor"] for q in split["queries"] if q["impostor"] is not None])
        split["eer"] = equal_error(g, i)
        split["chosen"] = threshold_for_far(i, target_far, g)
        splits.append(split)
    report = _summarise(splits, target_far, recognition.distance_threshold)
    usable = {p: len(s) for p, s in samples.items()}
    for p in people:
        if usable.get(p, 0) == 1:
            warnings.append(f"{p}: only 1 usable photo: always enrolled, never queried")
        elif p not in usable:
            warnings.append(f"{p}: no usable photo")
    report.update({
        "command": "eval",
        "dir": str(root),
        "settings": {"enroll_k": enroll_k, "seed": seed, "repeats": repeats, "strangers": n_strangers,
                     "stranger_names": sorted(fixed), "target_far": target_far,
                     "configured_threshold": recognition.distance_threshold, "cache": str(cache_dir)},
        "photos": {"files": len(records), "usable": sum(usable.values()),
                   "by_status": dict(Counter(r["status"] for r in records)),
                   "failures": [r for r in records if r["status"] in FAILURES],
                   "duplicates": [r for r in records if r["status"] == DUPLICATE],
                   "conflicts": [r for r in records if r["status"] == CONFLICT]},
        "people": usable,
        "splits": splits,
    })
    report["warnings"] = warnings + report["warnings"]
    return report

def _summarise(splits: list[dict], target_far: float, configured: float) -> dict:
    """Pool every split's queries: closed-set accuracy, distance view, classifier sweep."""
    queries = [q for s in splits for q in s["queries"]]
    genuine = [q["genuine"] for q in queries if q["genuine"] is not None]
    impostor = [q["impostor"] for q in queries if q["impostor"] is not None]
    enrolled = [q for q in queries if q["kind"] == "enrolled"]
    n_enrolled, n_strangers = len(enrolled), len(queries) - len(enrolled)
    per_split = [_split_accuracy(s) for s in splits]
    closed = {"queries": n_enrolled,
              "nearest_correct": sum(q["candidate"] == q["person"] for q in enrolled),
              "svm_correct": sum(q["svm"] == q["person"] for q in enrolled if q["svm"] is not None),
              "svm_queries": sum(q["svm"] is not None for q in enrolled)}
    closed["accuracy"] = ratio(closed["nearest_correct"], n_enrolled)
    closed["svm_accuracy"] = ratio(closed["svm_correct"], closed["svm_queries"])
    accs = [a for a in per_split if a is not None]
    if len(splits) > 1:
        closed["spread"] = {
            "accuracy": spread_summary(accs),
            "eer_rate": spread_summary([s["eer"]["rate"] for s in splits if s["eer"]]),
            "eer_threshold": spread_summary([s["eer"]["threshold"] for s in splits if s["eer"]]),
            "chosen_threshold": spread_summary([s["chosen"]["threshold"] for s in splits if s["chosen"]])}
    report = {"closed_set": closed, "distances": distance_summary(genuine, impostor, target_far, configured),
              "queries": {"enrolled": n_enrolled, "strangers": n_strangers}, "warnings": []}
    total = {k: np.sum([s["counts"][k] for s in splits], axis=0) for k in splits[0]["counts"]}
    curves = report["distances"]["curves"]
    curves["tar"] = rounded_list(total["named_right"] / n_enrolled) if n_enrolled else None
    curves["trr"] = rounded_list(total["stranger_unknown"] / n_strangers) if n_strangers else None
    curves["false_accepts"] = (total["named_wrong"] + total["stranger_named"]).tolist()
    for label, point in report["distances"]["at"].items():
        if label == "configured":  # the stored predictions were made at the configured threshold
            clf_point = _counts_at_configured(queries)
        else:  # the chosen threshold is a point of the sweep grid
            clf_point = {k: int(v[int(np.argmin(np.abs(GRID - point["threshold"])))]) for k, v in total.items()}
        point.update({"tar": ratio(clf_point["named_right"], n_enrolled),
                      "trr": ratio(clf_point["stranger_unknown"], n_strangers),
                      "named_right": clf_point["named_right"], "enrolled_named_wrong": clf_point["named_wrong"],
                      "strangers_named": clf_point["stranger_named"],
                      "false_accepts": clf_point["named_wrong"] + clf_point["stranger_named"]})
    if n_strangers and n_enrolled:
        report["open_set_eer"] = open_set_eer(curves["tar"], curves["trr"])
    report["warnings"] += threshold_warnings(report["distances"], target_far)
    return report

def threshold_warnings(d: dict, target_far: float) -> list[str]:
    out = []
    chosen = d["chosen"]
    if chosen and not chosen["measurable"]:
        rule = ("the equal-error point" if chosen["basis"] == "equal_error" else "just below the closest impostor")
        out.append(f"only {chosen['impostors']} impostor distances: a false-accept rate of {target_far:.1%} cannot "
                   f"be measured (one false accept is {1 / chosen['impostors']:.1%}), so the chosen threshold is "
                   f"{rule}. More people (or strangers) and photos give a firmer number")
    if chosen is None:
        out.append("no impostor distances (fewer than two people and no strangers): no threshold can be chosen")
    if not d["genuine"]["n"]:
        out.append("no genuine distances (nobody has a second photo to compare): add photos")
    return out

def _counts_at_configured(queries: list[dict]) -> dict:
    enrolled = [q for q in queries if q["kind"] == "enrolled"]
    strangers = [q for q in queries if q["kind"] == "stranger"]
    return {"named_right": sum(q["name"] == q["person"] for q in enrolled),
            "named_wrong": sum(q["name"] not in (None, q["person"]) for q in enrolled),
            "stranger_unknown": sum(q["name"] is None for q in strangers),
            "stranger_named": sum(q["name"] is not None for q in strangers)}

def _split_accuracy(split: dict) -> float | None:
    enrolled = [q for q in split["queries"] if q["kind"] == "enrolled"]
    return ratio(sum(q["candidate"] == q["person"] for q in enrolled), len(enrolled))
