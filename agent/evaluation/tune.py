"""`face-agent tune`: leave-one-out on the enrolled photos themselves, and the threshold they suggest."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from agent.evaluation import EvalError
from agent.evaluation.folders import FAILURES, photo_record, threshold_warnings
from agent.evaluation.metrics import distance_summary, genuine_impostor, number_or_none, ratio
from agent.gallery import Gallery
from agent.vision.classifier import leave_one_out

log = logging.getLogger(__name__)

MIN_PHOTOS = 3  # tune: people with fewer usable photos get a warning


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
                       "genuine": number_or_none(genuine) if genuine is not None else None,
                       "impostor": number_or_none(impostor) if impostor is not None else None,
                       "impostor_person": people[j] if j is not None else None,
                       "nearest_person": people[int(np.argmin(D[i]))]})
    genuine = [p["genuine"] for p in photos if p["genuine"] is not None]
    impostor = [p["impostor"] for p in photos if p["impostor"] is not None]
    queried = [p for p in photos if p["genuine"] is not None]
    report = {"command": "tune", "people": dict(Counter(names)), "photos": photos,
              "failures": [photo_record(r) for r in results if r.status in FAILURES],
              "closed_set": {"queries": len(queried), "nearest_correct": correct,
                             "accuracy": ratio(correct, len(queried))},
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
