"""How well does recognition work on *your* people? `face-agent eval` and `face-agent tune` (docs/evaluation.md).

Terms used throughout. Distances are the *effective distances* of the open-set rule
(`agent.vision.classifier.effective_distance`), exactly what `[recognition] distance_threshold` gates at
runtime: tune, eval and the agent share one decision rule and one meaning of the threshold.
- genuine distance: a query photo's effective distance to its own person (nearest-other person as the
  second one);
- impostor distance: its effective distance to the nearest other person, as if its own person were not
  enrolled. A stranger's photo is an impostor probe for everybody; an enrolled person's photo is one for the
  *other* people, so false accepts are measured even without strangers;
- FAR(t) = impostor distances <= t, FRR(t) = genuine distances > t: the distance gate alone (the SVM can
  only turn more faces into "unknown"). The equal-error point and the threshold chosen for a target FAR
  come from these;
- TAR(t) / TRR(t): the real classifier (distance gate + SVM) naming enrolled people's queries right /
  calling strangers' photos unknown; false accepts = a stranger named, or an enrolled person named wrong.

Photos are embedded once through the normal enrollment path (`Gallery.process_photo`: MTCNN, dlib
alignment, the embedding cache keyed by photo hash and settings) in a cache folder of its own, never in
the live gallery. A photo with several faces and none dominant cannot be enrolled, but is still a query, as
in `identify`: its face is the one named as the folder's person if there is one, else
`recognizer.principal_face`. Detection quality against a dlib image-dataset XML is measured by `evaluate_detections`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.config import Config, RecognitionSection
from agent.gallery import DUPLICATE, SEVERAL_FACES, Gallery, InvalidNameError, PhotoResult, validate_person_name
from agent.images import ImageError, is_image_path, load_image
from agent.vision.classifier import Classifier, effective_distance, leave_one_out, train
from agent.vision.recognizer import FaceAnalyzer, principal_face
from agent.vision.tracker import iou_matrix

log = logging.getLogger(__name__)

USABLE = "usable"  # a photo with one (dominant) face, embedded
CONFLICT = "conflict"  # the same photo (by hash) in the folders of different people
FAILURES = ("no_face", "several_faces", "too_small", "unreadable")
STEP = 0.005  # threshold resolution of the sweep and of the chosen threshold
GRID = np.round(np.arange(0.0, 0.6001, STEP), 3)  # thresholds at which the classifier is swept
FINE = np.round(np.arange(-0.3, 1.0001, 0.001), 3)  # thresholds for the equal-error point
MIN_PHOTOS = 3  # tune: people with fewer usable photos get a warning


class EvalError(ValueError):
    """Input that cannot be evaluated; str() says why."""


@dataclass
class Sample:
    person: str
    path: Path
    sha256: str
    embedding: np.ndarray  # the (dominant or principal) face
    faces: np.ndarray | None = None  # every face of a several-faces photo (a query only), principal first


# ------------------------------------------------------------------------------------------------------
# Photos in, embeddings out
# ------------------------------------------------------------------------------------------------------

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
        rec = _record(result)
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
        rgb = load_image(path, cfg.images.max_pixels, cfg.images.max_bytes)
    except ImageError:
        return None
    detections = gallery.analyzer.detect(rgb)
    k = principal_face(detections, rgb.shape[1], rgb.shape[0], cfg.enrollment.dominance)
    if k is None:
        return None
    detections.insert(0, detections.pop(k))
    return np.asarray(gallery.analyzer.embed(rgb, detections)[1], dtype=np.float32)


def _record(result: PhotoResult) -> dict:
    return {"person": result.person, "path": str(result.path), "status": USABLE if result.ok else result.status,
            "reason": result.reason, "sha256": result.sha256}


# ------------------------------------------------------------------------------------------------------
# Distances and rates
# ------------------------------------------------------------------------------------------------------

def genuine_impostor(D: np.ndarray, spreads: np.ndarray, own: int | None, rule: RecognitionSection
                     ) -> tuple[float | None, float | None, int | None]:
    """One query's effective distances from its centroid distances D (n_people,): to its own person
    (genuine; None without one) and to the nearest other person as if its own were not enrolled
    (impostor; None when nobody else is enrolled), and that other person's index."""
    others = np.isfinite(D)
    genuine = None
    if own is not None:
        others[own] = False
        if np.isfinite(D[own]):
            c2 = D[others].min() if others.any() else np.inf
            genuine = float(effective_distance(D[own], c2, spreads[own], rule))
    idx = np.flatnonzero(others)
    if not len(idx):
        return genuine, None, None
    order = idx[np.argsort(D[idx])]
    j = int(order[0])
    c2 = D[order[1]] if len(order) > 1 else np.inf
    return genuine, float(effective_distance(D[j], c2, spreads[j], rule)), j


def rates(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at each threshold: share of impostor distances <= t, of genuine distances > t."""
    g, i = np.sort(genuine), np.sort(impostor)
    far = np.searchsorted(i, thresholds, side="right") / len(i) if len(i) else np.full(len(thresholds), np.nan)
    frr = 1.0 - np.searchsorted(g, thresholds, side="right") / len(g) if len(g) else np.full(len(thresholds),
                                                                                              np.nan)
    return far, frr


def equal_error(genuine: np.ndarray, impostor: np.ndarray) -> dict | None:
    """The threshold where FAR = FRR (middle of the range where they are closest) and that rate."""
    if not len(genuine) or not len(impostor):
        return None
    far, frr = rates(genuine, impostor, FINE)
    return _crossing(far, frr, FINE, 3)


def _crossing(far: np.ndarray, frr: np.ndarray, thresholds: np.ndarray, digits: int) -> dict:
    """FAR - FRR never decreases with the threshold, so the points where |FAR - FRR| is smallest are one
    run (a plateau where both are equal, e.g. both 0 for separated distributions, or the two sides of a
    jump); its middle is the equal-error threshold."""
    gap = np.abs(far - frr)
    best = np.flatnonzero(np.isclose(gap, np.nanmin(gap)))
    mid = int(best[len(best) // 2])
    return {"rate": round(float((far[mid] + frr[mid]) / 2), 4), "threshold": round(float(thresholds[mid]), digits)}


def threshold_for_far(impostor: np.ndarray, target_far: float, genuine: np.ndarray | None = None
                      ) -> dict | None:
    """The largest threshold (rounded down to STEP) at which at most `target_far` of impostors pass.

    With fewer than 1 / target_far impostor distances that rate cannot be measured: "just below the closest
    impostor" would then follow the few people at hand (two people far apart would give 1.0 and let every
    stranger in), so the threshold is capped at the equal-error point, the middle between the genuine and
    impostor distances when they do not overlap. `basis` says which rule applied."""
    if not len(impostor):
        return None
    imp = np.sort(impostor)
    allowed = int(math.floor(target_far * len(imp) + 1e-9))
    if allowed >= len(imp):
        value = float(GRID[-1])
    else:
        value = _round_down(float(imp[allowed]) - 1e-6)
        value = float(min(max(value, 0.0), GRID[-1]))
    measurable = len(imp) * target_far >= 1.0
    basis = "target_far"
    eer = equal_error(np.asarray(genuine), imp) if genuine is not None and not measurable else None
    if eer is not None and _round_down(eer["threshold"]) < value:
        value, basis = _round_down(eer["threshold"]), "equal_error"
    passed = int((imp <= value).sum())
    return {"threshold": round(value, 3), "target_far": target_far, "impostors_accepted": passed,
            "impostors": len(imp), "measurable": measurable, "basis": basis}


def _round_down(x: float) -> float:
    return round(math.floor(x / STEP + 1e-9) * STEP, 3)


def distance_summary(genuine: list[float], impostor: list[float], target_far: float,
                     configured: float) -> dict:
    """Distributions, equal-error point, chosen threshold and FAR/FRR on the sweep grid."""
    g, i = np.asarray(genuine, dtype=np.float64), np.asarray(impostor, dtype=np.float64)
    far, frr = rates(g, i, GRID)
    out = {
        "genuine": _describe(g),
        "impostor": _describe(i),
        "eer": equal_error(g, i),
        "chosen": threshold_for_far(i, target_far, g),
        "curves": {"thresholds": GRID.tolist(), "far": _list(far), "frr": _list(frr)},
        "at": {},
    }
    points = {"configured": configured}
    if out["chosen"]:
        points["chosen"] = out["chosen"]["threshold"]
    for label, t in points.items():
        a, r = rates(g, i, np.array([t]))
        out["at"][label] = {"threshold": t, "far": _num(a[0]), "frr": _num(r[0]),
                            "impostors_accepted": int((i <= t).sum()), "impostors": len(i),
                            "genuine_accepted": int((g <= t).sum()), "genuine": len(g)}
    return out


def _describe(x: np.ndarray) -> dict:
    if not len(x):
        return {"n": 0}
    q = np.percentile(x, [0, 5, 50, 95, 100])
    return {"n": int(len(x)), "min": round(float(q[0]), 4), "p5": round(float(q[1]), 4),
            "median": round(float(q[2]), 4), "p95": round(float(q[3]), 4), "max": round(float(q[4]), 4)}


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else round(float(v), 4)


def _list(a: np.ndarray) -> list:
    return [_num(v) for v in a]


# ------------------------------------------------------------------------------------------------------
# face-agent eval: enrollment / query splits on a folder of people
# ------------------------------------------------------------------------------------------------------

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
           "svm_cv_accuracy": clf.meta.get("cross_validation", {}).get("balanced_accuracy"), "queries": []}
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
            "genuine": _num(genuine) if genuine is not None else None,
            "impostor": _num(impostor) if impostor is not None else None,
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
    closed["accuracy"] = _ratio(closed["nearest_correct"], n_enrolled)
    closed["svm_accuracy"] = _ratio(closed["svm_correct"], closed["svm_queries"])
    accs = [a for a in per_split if a is not None]
    if len(splits) > 1:
        closed["spread"] = {
            "accuracy": _spread(accs),
            "eer_rate": _spread([s["eer"]["rate"] for s in splits if s["eer"]]),
            "eer_threshold": _spread([s["eer"]["threshold"] for s in splits if s["eer"]]),
            "chosen_threshold": _spread([s["chosen"]["threshold"] for s in splits if s["chosen"]])}
    report = {"closed_set": closed, "distances": distance_summary(genuine, impostor, target_far, configured),
              "queries": {"enrolled": n_enrolled, "strangers": n_strangers}, "warnings": []}
    total = {k: np.sum([s["counts"][k] for s in splits], axis=0) for k in splits[0]["counts"]}
    curves = report["distances"]["curves"]
    curves["tar"] = _list(total["named_right"] / n_enrolled) if n_enrolled else None
    curves["trr"] = _list(total["stranger_unknown"] / n_strangers) if n_strangers else None
    curves["false_accepts"] = (total["named_wrong"] + total["stranger_named"]).tolist()
    for label, point in report["distances"]["at"].items():
        if label == "configured":  # the stored predictions were made at the configured threshold
            clf_point = _counts_at_configured(queries)
        else:  # the chosen threshold is a point of the sweep grid
            clf_point = {k: int(v[int(np.argmin(np.abs(GRID - point["threshold"])))]) for k, v in total.items()}
        point.update({"tar": _ratio(clf_point["named_right"], n_enrolled),
                      "trr": _ratio(clf_point["stranger_unknown"], n_strangers),
                      "named_right": clf_point["named_right"], "enrolled_named_wrong": clf_point["named_wrong"],
                      "strangers_named": clf_point["stranger_named"],
                      "false_accepts": clf_point["named_wrong"] + clf_point["stranger_named"]})
    if n_strangers and n_enrolled:
        report["open_set_eer"] = _open_set_eer(curves["tar"], curves["trr"])
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


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, dtype=float)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4), "min": round(float(v.min()), 4),
            "max": round(float(v.max()), 4)}


def _split_accuracy(split: dict) -> float | None:
    enrolled = [q for q in split["queries"] if q["kind"] == "enrolled"]
    return _ratio(sum(q["candidate"] == q["person"] for q in enrolled), len(enrolled))


def _open_set_eer(tar: list, trr: list) -> dict:
    """Where the classifier's false-reject rate (1 - TAR) meets its stranger false-accept rate (1 - TRR)."""
    return _crossing(1.0 - np.asarray(trr, dtype=float), 1.0 - np.asarray(tar, dtype=float), GRID, 2)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


# ------------------------------------------------------------------------------------------------------
# face-agent tune: leave-one-out on the enrolled gallery
# ------------------------------------------------------------------------------------------------------

def tune_gallery(gallery: Gallery, target_far: float = 0.01, progress: bool = False) -> dict:
    """Each enrolled photo against all the others: distributions, suggested threshold and warnings."""
    if not 0.0 < target_far < 1.0:
        raise EvalError(f"--target-far must be between 0 and 1, got {target_far}")
    results, X, names, _ = gallery.scan(progress=progress)
    usable = [r for r in results if r.ok]
    rule = gallery.cfg.recognition
    configured = rule.distance_threshold
    people = sorted(set(names))
    labels = np.array([people.index(n) for n in names], dtype=int)
    photos = []
    correct = 0
    if names:
        D, own_spread, spreads = leave_one_out(X, labels, len(people), rule.typical_spread)
    for i, r in enumerate(usable):
        own = int(labels[i])
        person_spreads = spreads.copy()
        person_spreads[own] = own_spread[i]
        genuine, impostor, j = genuine_impostor(D[i], person_spreads, own, rule)
        correct += genuine is not None and (len(people) == 1 or int(np.argmin(D[i])) == own)
        photos.append({"person": names[i], "path": str(r.path), "sha256": r.sha256,
                       "genuine": _num(genuine) if genuine is not None else None,
                       "impostor": _num(impostor) if impostor is not None else None,
                       "impostor_person": people[j] if j is not None else None,
                       "nearest_person": people[int(np.argmin(D[i]))]})
    genuine = [p["genuine"] for p in photos if p["genuine"] is not None]
    impostor = [p["impostor"] for p in photos if p["impostor"] is not None]
    queried = [p for p in photos if p["genuine"] is not None]
    report = {"command": "tune", "people": dict(Counter(names)), "photos": photos,
              "failures": [_record(r) for r in results if r.status in FAILURES],
              "closed_set": {"queries": len(queried), "nearest_correct": correct,
                             "accuracy": _ratio(correct, len(queried))},
              "distances": distance_summary(genuine, impostor, target_far, configured),
              "settings": {"target_far": target_far, "configured_threshold": configured}}
    report["warnings"] = _tune_warnings(report, configured) + threshold_warnings(
        report["distances"], target_far)
    chosen = report["distances"]["chosen"]
    report["suggested_threshold"] = chosen["threshold"] if chosen else None
    return report


def _tune_warnings(report: dict, threshold: float) -> list[str]:
    out = []
    for person, n in sorted(report["people"].items()):
        if n < MIN_PHOTOS:
            out.append(f"{person}: only {n} usable photo{'s' if n != 1 else ''}; enroll at least {MIN_PHOTOS} "
                       "(different days, light and angles) for reliable recognition")
    for f in report["failures"]:
        out.append(f"{f['person']}: {Path(f['path']).name} not used ({f['status']}: {f['reason']})")
    for p in report["photos"]:
        name = Path(p["path"]).name
        if p["genuine"] is not None and p["genuine"] > threshold:
            out.append(f"{p['person']}: {name} is far from the rest of {p['person']}'s photos (effective distance "
                       f"{p['genuine']:.3f} > threshold {threshold:g}): mislabelled, or a poor photo?")
        if p["genuine"] is not None and p["nearest_person"] != p["person"]:
            out.append(f"{p['person']}: {name} is closer to {p['nearest_person']} than to {p['person']}'s other "
                       "photos: mislabelled?")
    pairs: dict[tuple[str, str], float] = {}
    for p in report["photos"]:
        if p["impostor"] is not None and p["impostor"] <= threshold:
            key = tuple(sorted((p["person"], p["impostor_person"])))
            pairs[key] = min(pairs.get(key, np.inf), p["impostor"])
    for (a, b), d in sorted(pairs.items(), key=lambda kv: kv[1]):
        out.append(f"{a} and {b} are hard to tell apart: a photo of one would be named as the other if it were "
                   f"not enrolled (effective distance {d:.3f} <= threshold {threshold:g})")
    return out


# ------------------------------------------------------------------------------------------------------
# face-agent eval --detections: the detector against dlib's image-dataset XML
# ------------------------------------------------------------------------------------------------------

def read_dlib_xml(path: Path) -> list[dict]:
    """[{"file": Path, "boxes": [(x1, y1, x2, y2)], "ignore": [...]}] from an imglab XML; image paths are
    relative to the XML's folder; a box is (left, top, left + width, top + height), x2/y2 exclusive."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise EvalError(f"{path}: no such file") from None
    except (ET.ParseError, OSError) as exc:
        raise EvalError(f"{path}: not a readable XML file ({exc})") from None
    images = []
    for image in root.iter("image"):
        name = image.get("file")
        if not name:
            raise EvalError(f"{path}: an <image> without a file attribute")
        entry = {"file": (path.parent / name), "boxes": [], "ignore": []}
        for box in image.iter("box"):
            try:
                left, top = float(box.get("left")), float(box.get("top"))
                width, height = float(box.get("width")), float(box.get("height"))
            except (TypeError, ValueError):
                raise EvalError(f"{path}: image {name}: a <box> needs numeric top, left, width and height "
                                f"(got {dict(box.attrib)})") from None
            kind = "ignore" if box.get("ignore", "0").strip() in ("1", "true") else "boxes"
            entry[kind].append((left, top, left + width, top + height))
        images.append(entry)
    if not images:
        raise EvalError(f"{path}: no <image> entries")
    return images


def match_detections(dets: list[tuple[tuple, float]], truth: list[tuple], ignore: list[tuple],
                     min_iou: float = 0.5) -> dict:
    """Greedy by score: each detection (box, score), best first, takes the unmatched ground-truth box it
    overlaps most if IoU >= min_iou; else it is ignored when it overlaps an ignore box (IoU >= min_iou or
    half its area inside it), else it is a false positive."""
    order = sorted(range(len(dets)), key=lambda k: -dets[k][1])
    boxes = np.array([dets[k][0] for k in order], dtype=np.float64).reshape(-1, 4)
    iou = iou_matrix(boxes, np.array(truth, dtype=np.float64).reshape(-1, 4))
    free = np.ones(len(truth), dtype=bool)
    out = {"matches": [], "false_positives": [], "ignored": 0}
    for r, k in enumerate(order):
        cand = np.where(free, iou[r], -1.0) if len(truth) else np.array([])
        best = int(np.argmax(cand)) if len(cand) else -1
        if best >= 0 and cand[best] >= min_iou:
            free[best] = False
            out["matches"].append({"box": _box(dets[k][0]), "score": round(float(dets[k][1]), 4),
                                   "truth": _box(truth[best]), "iou": round(float(cand[best]), 4)})
        elif _in_ignore(dets[k][0], ignore, min_iou):
            out["ignored"] += 1
        else:
            out["false_positives"].append({"box": _box(dets[k][0]), "score": round(float(dets[k][1]), 4)})
    out["missed"] = [_box(t) for t, f in zip(truth, free) if f]
    return out


def _in_ignore(box: tuple, ignore: list[tuple], min_iou: float) -> bool:
    if not ignore:
        return False
    b = np.array([box], dtype=np.float64)
    ig = np.array(ignore, dtype=np.float64)
    if (iou_matrix(b, ig) >= min_iou).any():
        return True
    w = np.clip(np.minimum(b[0, 2], ig[:, 2]) - np.maximum(b[0, 0], ig[:, 0]), 0, None)
    h = np.clip(np.minimum(b[0, 3], ig[:, 3]) - np.maximum(b[0, 1], ig[:, 1]), 0, None)
    area = max((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]), 1e-9)
    return bool(((w * h) / area >= 0.5).any())


def _box(b) -> list[float]:
    return [round(float(v), 1) for v in b]


def evaluate_detections(xml_path: Path, analyzer: FaceAnalyzer, cfg: Config, min_iou: float = 0.5,
                        progress: bool = False) -> dict:
    """Precision and recall of the detector against the XML's boxes, at IoU >= min_iou.

    The detector's own box is compared with the ground truth: dlib's boxes are square (brows to chin),
    MTCNN's a little taller (hairline to chin); a matched pair still overlaps by IoU ~0.6 or more, so no
    box is reshaped (as in tests/test_mtcnn.py)."""
    if not 0.0 < min_iou <= 1.0:
        raise EvalError(f"--iou must be in (0, 1], got {min_iou}")
    images = read_dlib_xml(xml_path)
    per_image, errors = [], []
    for entry in tqdm(images, desc="detecting", unit="image", disable=not progress, leave=False):
        try:
            rgb = load_image(entry["file"], cfg.images.max_pixels, cfg.images.max_bytes)
        except ImageError as exc:
            errors.append({"file": str(entry["file"]), "error": str(exc)})
            continue
        dets = [(d.box, d.score) for d in analyzer.detect(rgb)]
        m = match_detections(dets, entry["boxes"], entry["ignore"], min_iou)
        per_image.append({"file": str(entry["file"]), "faces": len(entry["boxes"]), "detections": len(dets),
                          "true_positives": len(m["matches"]), **m})
    tp = sum(len(p["matches"]) for p in per_image)
    fp = sum(len(p["false_positives"]) for p in per_image)
    faces = sum(p["faces"] for p in per_image)
    ious = [m["iou"] for p in per_image for m in p["matches"]]
    return {"command": "eval --detections", "xml": str(xml_path), "min_iou": min_iou, "images": len(per_image),
            "faces": faces, "true_positives": tp, "false_positives": fp, "missed": faces - tp,
            "ignored": sum(p["ignored"] for p in per_image),
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, faces),
            "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
            "per_image": per_image, "errors": errors}
