"""Open-set recognition on people never enrolled: what each ingredient of the decision buys.

    python bench/bench_openset.py [--embedding onnxruntime|dlib] [--json bench/results/openset.json] [--variants]

Data: ../shared/faces/lfw-subset (144 people x 10 photos), split by PEOPLE. Split A enrolls the 1st, 3rd, ...
person in alphabetical order, split B the 2nd, 4th, ...: 72 enrolled people (first 5 photos in name order
are the gallery, the last 5 are probes that should be named) and 72 strangers (all 10 photos must stay
unknown). The face of a photo is `recognizer.principal_face` among the faces scoring `[detector] min_score`.
Every photo is embedded once with the real models (bench/openset_cache.py caches all faces in bench/results/,
each chip's descriptor and its mirror image's: `[embedding] flip` averages the two, as the agent does);
the real classifier (`agent.vision.classifier.train`: SVMs by cross-validation) is trained once per split
and cached there too, so reruns take seconds.

Figures: FAR = stranger photos named (as anybody) / stranger photos; ID = probe photos named as the right
person / probe photos. Tables (markdown, pasted into docs/evaluation.md):
1. ingredients: for each decision score, the identification rate at the threshold letting at most 1% of
   the split's strangers through (an optimistic, per-split threshold), and FAR / ID when the threshold is
   taken from the other split (an honest one); then the shipped defaults exactly as `identify` applies them.
2. gallery size: FAR / ID at fixed thresholds when 1 ... 72 people are enrolled, and at the defaults when
   the 72 people are enrolled with only 1, 2, 3 or 5 photos each.
3. quality: LFW photos the quality limits turn away.
4. with --variants: chip-only vs flip embeddings x person models (centroid, margin_weight 1.0, mixes of the
   centroid with the nearest enrolled photos), each at its split's own 1% threshold and at ONE threshold
   for both splits;
5. with --compare-embedders: the names `identify` would give every LFW photo at the defaults, with dlib's
   own ResNet and with the converted one on ONNX Runtime (the dlib run embeds the 1,440 photos once, ~5 min).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from openset_cache import RESULTS, cache_path, load_or_embed  # noqa: E402

from agent.config import Config, RecognitionSection, config_from_dict  # noqa: E402
from agent.vision.classifier import (  # noqa: E402
    Classifier,
    ClassifierFileError,
    effective_distance,
    l2,
    stratified_folds,
    train,
    train_svm,
    unit_rows,
)
from agent.vision.mtcnn import Detection  # noqa: E402
from agent.vision.recognizer import judge_quality, principal_face, yaw_ratio  # noqa: E402

TARGET_FAR = 0.01
OLD_THRESHOLD = 0.6  # the rule before issue 12: raw L2 to the nearest photo <= 0.6 and the SVM agrees
SIZES = (1, 3, 10, 20, 40, 72)
SIZE_SEEDS = 5
PHOTOS_PER_PERSON = (1, 2, 3, 5)


# ------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Photos:
    person: np.ndarray  # (n,) name
    file: np.ndarray  # (n,) file name
    embedding: np.ndarray  # (n, 128) of the principal face
    quality: np.ndarray  # (n,) "" or too_small | blurry | pose
    side: np.ndarray  # (n,) the principal face's shorter side in px (nan: no face)


def face_embeddings(data: dict, flip: bool) -> np.ndarray:
    """Every cached face's embedding as the agent makes it: with `[embedding] flip`, the mean of the chip's
    and its mirror's descriptors (agent.vision.embed.embed_chips)."""
    return (data["embedding"] + data["embedding_mirror"]) / 2 if flip else data["embedding"]


def principal_faces(data: dict, cfg: Config) -> Photos:
    n = len(data["photo_file"])
    embeddings = face_embeddings(data, cfg.embedding.flip)
    emb = np.zeros((n, 128))
    quality = np.full(n, "no_face", dtype=object)
    side = np.full(n, np.nan)
    for i in range(n):
        idx = np.flatnonzero((data["face_photo"] == i) & (data["score"] >= cfg.detector.min_score))
        dets = [Detection(*data["box"][k], float(data["score"][k]), data["landmarks"][k]) for k in idx]
        w, h = data["photo_size"][i]
        k = principal_face(dets, int(w), int(h), cfg.enrollment.dominance)
        if k is None:
            continue
        j, det = idx[k], dets[k]
        emb[i] = embeddings[j]
        side[i] = min(det.width, det.height)
        quality[i] = judge_quality(side[i], float(data["sharpness"][j]), yaw_ratio(det.landmarks), cfg)
    return Photos(np.asarray(data["photo_person"]), np.asarray(data["photo_file"]), emb, quality, side)


def split(photos: Photos, parity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gallery, probes, strangers) photo indices: every second person enrolled, 5 + 5 photos each."""
    people = sorted(set(photos.person))
    gallery, probes, strangers = [], [], []
    for k, p in enumerate(people):
        own = [i for i in np.flatnonzero(photos.person == p)]
        own.sort(key=lambda i: photos.file[i])
        if k % 2 == parity:
            gallery += own[:5]
            probes += own[5:]
        else:
            strangers += own
    return np.array(gallery), np.array(probes), np.array(strangers)


def trained(photos: Photos, gallery: np.ndarray, recognition: RecognitionSection, key: str) -> Classifier:
    """The real classifier on these gallery photos, cached in bench/results/ (per embedding kind: the
    checksum of the gallery embeddings is part of the folder name)."""
    digest = hashlib.sha256(np.ascontiguousarray(photos.embedding[gallery], dtype=np.float64).tobytes()).hexdigest()
    folder = RESULTS / "classifiers" / f"{key}-{digest[:8]}"
    svm_settings = {"kernel": recognition.kernel, "cv_folds": recognition.cv_folds}
    try:
        clf = Classifier.load(folder, recognition)
        if clf.meta.get("gallery") == [str(f) for f in photos.file[gallery]] and clf.meta.get("svm_settings") \
                == svm_settings:
            return clf
    except ClassifierFileError:
        pass
    clf = train(photos.embedding[gallery], list(photos.person[gallery]), recognition,
                extra_meta={"gallery": [str(f) for f in photos.file[gallery]], "svm_settings": svm_settings})
    clf.save(folder)
    return clf


# ------------------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Scored:
    """Per query: who the rule would name if accepted, and a score where LOWER means more acceptable."""
    candidate: np.ndarray  # (N,) person index
    score: np.ndarray  # (N,)


def nearest_photo(clf: Classifier, X: np.ndarray) -> Scored:
    D = l2(np.asarray(X, dtype=np.float64), clf.embeddings.astype(np.float64))
    per = np.stack([D[:, clf.labels == k].min(1) for k in range(len(clf.people))], axis=1)
    return Scored(per.argmin(1), per.min(1))


def centroid_parts(clf: Classifier, X: np.ndarray):
    D = clf.centroid_distances(X)
    order = np.argsort(D, axis=1)
    rows = np.arange(len(X))
    c1 = D[rows, order[:, 0]]
    c2 = D[rows, order[:, 1]] if len(clf.people) > 1 else np.full(len(X), np.inf)
    return order[:, 0], c1, c2


def rule_score(clf: Classifier, X: np.ndarray, rule: RecognitionSection) -> Scored:
    best, c1, c2 = centroid_parts(clf, X)
    return Scored(best, effective_distance(c1, c2, clf.spreads[best], rule))


def platt(clf: Classifier, recognition: RecognitionSection) -> tuple[float, float]:
    """Platt scaling of the SVM decision values into P(this is the person), fitted (Newton, numpy) on
    cross-validated decision values of the gallery: each photo scored by SVMs trained without it."""
    X, y = clf.embeddings.astype(np.float64), clf.labels
    svm = clf.svm
    values, targets = [], []
    for test in stratified_folds(y, min(recognition.cv_folds, int(np.bincount(y).min()))):
        train_idx = np.setdiff1d(np.arange(len(y)), test)
        model = train_svm(X[train_idx], y[train_idx], len(clf.people), svm.kernel, svm.C, svm.gamma)
        s = model.scores(X[test])
        values.append(s.ravel())
        targets.append((y[test][:, None] == np.arange(len(clf.people))[None, :]).ravel().astype(float))
    f, t = np.concatenate(values), np.concatenate(targets)
    n_pos, n_neg = t.sum(), len(t) - t.sum()
    t = np.where(t > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))  # Platt's smoothed targets
    a, b = -1.0, 0.0  # P = 1 / (1 + exp(a f + b))
    for _ in range(100):
        p = 1 / (1 + np.exp(np.clip(a * f + b, -50, 50)))
        g = np.array([((t - p) * f).sum(), (t - p).sum()])
        w = p * (1 - p)
        H = np.array([[(w * f * f).sum(), (w * f).sum()], [(w * f).sum(), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(H, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a), float(b)


def svm_probability(clf: Classifier, X: np.ndarray, ab: tuple[float, float]) -> Scored:
    s = clf.svm.scores(np.asarray(X, dtype=np.float64))
    best = s.argmax(1)
    p = 1 / (1 + np.exp(np.clip(ab[0] * s.max(1) + ab[1], -50, 50)))
    return Scored(best, 1.0 - p)


# ------------------------------------------------------------------------------------------------------
# rates
# ------------------------------------------------------------------------------------------------------

def threshold_for(strangers: np.ndarray, target: float = TARGET_FAR) -> float:
    """Largest threshold (accept score <= t) passing at most `target` of the strangers."""
    s = np.sort(strangers)
    allowed = int(math.floor(target * len(s) + 1e-9))
    return float(np.nextafter(s[allowed], -np.inf)) if allowed < len(s) else float("inf")


def rates(probe: Scored, truth: np.ndarray, stranger: Scored, t: float,
          probe_ok: np.ndarray | None = None, stranger_ok: np.ndarray | None = None) -> dict:
    """FAR and ID at threshold t; *_ok: extra gates (quality, SVM) that must also pass to be named."""
    p_ok = np.ones(len(truth), bool) if probe_ok is None else probe_ok
    s_ok = np.ones(len(stranger.score), bool) if stranger_ok is None else stranger_ok
    named_right = (probe.score <= t) & p_ok & (probe.candidate == truth)
    strangers_named = (stranger.score <= t) & s_ok
    return {"far": float(strangers_named.mean()), "id": float(named_right.mean()),
            "strangers_named": int(strangers_named.sum()), "strangers": len(strangers_named),
            "named_right": int(named_right.sum()), "probes": len(named_right),
            "probes_named_wrong": int(((probe.score <= t) & p_ok & (probe.candidate != truth)).sum())}


# ------------------------------------------------------------------------------------------------------
# the tables
# ------------------------------------------------------------------------------------------------------

def ingredient_rows(photos: Photos, cfg: Config, backend: str) -> tuple[list[dict], dict]:
    rule = cfg.recognition
    per_split: dict[str, dict] = {}
    for name, parity in (("A", 0), ("B", 1)):
        gallery, probes, strangers = split(photos, parity)
        clf = trained(photos, gallery, rule, f"{backend}-{cache_path(backend, cfg).stem}-split{name}")
        index = {p: k for k, p in enumerate(clf.people)}
        truth = np.array([index[p] for p in photos.person[probes]])
        Xp, Xs = photos.embedding[probes], photos.embedding[strangers]
        svm_p, svm_s = clf.svm.scores(Xp).argmax(1), clf.svm.scores(Xs).argmax(1)
        qp, qs = photos.quality[probes] == "", photos.quality[strangers] == ""
        no_margin = dataclasses.replace(rule, margin_weight=0.0, spread_weight=0.0)
        no_spread = dataclasses.replace(rule, spread_weight=0.0)
        ab = platt(clf, rule)
        scores = {
            "nearest": (nearest_photo(clf, Xp), nearest_photo(clf, Xs)),
            "centroid": (rule_score(clf, Xp, no_margin), rule_score(clf, Xs, no_margin)),
            "margin": (rule_score(clf, Xp, no_spread), rule_score(clf, Xs, no_spread)),
            "spread": (rule_score(clf, Xp, rule), rule_score(clf, Xs, rule)),
            "svm_prob": (svm_probability(clf, Xp, ab), svm_probability(clf, Xs, ab)),
        }
        per_split[name] = {"clf": clf, "truth": truth, "scores": scores, "svm": (svm_p, svm_s),
                           "quality": (qp, qs), "platt": ab, "probes": probes, "strangers": strangers}

    def gates(s: dict, kind: str, svm_gate: bool, quality_gate: bool):
        p_ok = np.ones(len(s["truth"]), bool)
        s_ok = np.ones(len(s["strangers"]), bool)
        if svm_gate:
            p_ok &= s["svm"][0] == s["scores"][kind][0].candidate
            s_ok &= s["svm"][1] == s["scores"][kind][1].candidate
        if quality_gate:
            p_ok &= s["quality"][0]
            s_ok &= s["quality"][1]
        return p_ok, s_ok

    rows = []
    plan = [
        ("before: nearest photo, raw L2 <= 0.6, SVM agrees (old default)", "nearest", True, False, OLD_THRESHOLD),
        ("nearest photo, raw L2", "nearest", False, False, None),
        ("+ unit length, distance to the person's mean (centroid)", "centroid", False, False, None),
        ("+ margin to the second-nearest person", "margin", False, False, None),
        ("+ per-person spread (effective distance)", "spread", False, False, None),
        ("+ SVM must agree", "spread", True, False, None),
        ("SVM alone: Platt-calibrated probability of its top person", "svm_prob", False, False, None),
        ("+ quality limits (too_small / blurry / pose): shipped rule", "spread", True, True, None),
        (f"shipped defaults (distance_threshold = {rule.distance_threshold:g})", "spread", True, True,
         rule.distance_threshold),
    ]
    for label, kind, svm_gate, quality_gate, fixed in plan:
        row: dict = {"rule": label}
        own_t = {}
        for name, s in per_split.items():
            p_ok, s_ok = gates(s, kind, svm_gate, quality_gate)
            probe, stranger = s["scores"][kind]
            if fixed is None:  # the threshold this split's strangers allow
                t = threshold_for(np.where(s_ok, stranger.score, np.inf))
                own_t[name] = t
                row[name] = {"threshold": t, **rates(probe, s["truth"], stranger, t, p_ok, s_ok)}
            else:
                row[name] = {"threshold": fixed, **rates(probe, s["truth"], stranger, fixed, p_ok, s_ok)}
        if fixed is None:  # the threshold of the other split: an honest, held-out figure
            for name, other in (("A", "B"), ("B", "A")):
                s = per_split[name]
                p_ok, s_ok = gates(s, kind, svm_gate, quality_gate)
                probe, stranger = s["scores"][kind]
                row[name]["cross"] = rates(probe, s["truth"], stranger, own_t[other], p_ok, s_ok)
        rows.append(row)
    # the shipped rule vs what identify really does: Classifier.predict + quality on the same photos
    check = {}
    for name, s in per_split.items():
        clf = s["clf"]
        preds_p = clf.predict(photos.embedding[s["probes"]])
        preds_s = clf.predict(photos.embedding[s["strangers"]])
        named_p = np.array([p.name for p in preds_p], dtype=object)
        named_p[~s["quality"][0]] = None
        named_s = np.array([p.name is not None for p in preds_s]) & s["quality"][1]
        check[name] = {"far": float(named_s.mean()),
                       "id": float(np.mean(named_p == photos.person[s["probes"]]))}
    return rows, {"predict_check": check, "platt": {k: v["platt"] for k, v in per_split.items()},
                  "svm": {k: {"kernel": v["clf"].svm.kernel, "C": v["clf"].svm.C, "gamma": v["clf"].svm.gamma}
                          for k, v in per_split.items()}}


def knn_mix_score(clf: Classifier, X: np.ndarray, rule: RecognitionSection, k: int, weight: float) -> Scored:
    """The shipped effective distance with each person's distance replaced by weight * (distance to their
    centroid) + (1 - weight) * (mean distance to their k nearest enrolled photos): a person model between
    the mean and the nearest neighbours (weight 1 = the shipped rule)."""
    U, G = unit_rows(X), unit_rows(clf.embeddings)
    D, C = l2(U, G), l2(U, clf.centroids)
    P = np.stack([weight * C[:, j] + (1 - weight) * np.sort(D[:, clf.labels == j], axis=1)[:, :k].mean(1)
                  for j in range(len(clf.people))], axis=1)
    order = np.argsort(P, axis=1)
    rows = np.arange(len(X))
    best = order[:, 0]
    return Scored(best, effective_distance(P[rows, best], P[rows, order[:, 1]], clf.spreads[best], rule))


VARIANTS = (  # (label, margin_weight, k nearest photos, weight of the centroid)
    ("shipped rule (centroid, margin_weight 0.5)", 0.5, 1, 1.0),
    ("margin_weight 1.0", 1.0, 1, 1.0),
    ("0.75 centroid + 0.25 nearest photo", 0.5, 1, 0.75),
    ("0.75 centroid + 0.25 mean of 2 nearest photos", 0.5, 2, 0.75),
    ("0.5 centroid + 0.5 mean of 3 nearest photos", 0.5, 3, 0.5),
    ("mean of 3 nearest photos", 0.5, 3, 0.0),
)


def variant_rows(data: dict, cfg: Config, backend: str) -> list[dict]:
    """Embedding (flip or not) x person model: ID at each split's own 1% threshold, and FAR / ID on both
    splits at ONE threshold (the largest letting <= 1% of both splits' strangers through: what a default
    can do). SVM agreement and quality limits as shipped."""
    rows = []
    for flip in (False, True):
        flip_cfg = dataclasses.replace(cfg, embedding=dataclasses.replace(cfg.embedding, flip=flip))
        photos = principal_faces(data, flip_cfg)
        splits = {}
        for name, parity in (("A", 0), ("B", 1)):
            gallery, probes, strangers = split(photos, parity)
            clf = trained(photos, gallery, cfg.recognition, f"{backend}-{cache_path(backend, cfg).stem}-split{name}")
            index = {p: k for k, p in enumerate(clf.people)}
            splits[name] = (clf, np.array([index[p] for p in photos.person[probes]]), photos.embedding[probes],
                            photos.embedding[strangers], photos.quality[probes] == "", photos.quality[strangers] == "")
        for label, margin_weight, k, weight in VARIANTS:
            rule = dataclasses.replace(cfg.recognition, margin_weight=margin_weight)
            scored, own = {}, {}
            for name, (clf, truth, Xp, Xs, qp, qs) in splits.items():
                sp, ss = knn_mix_score(clf, Xp, rule, k, weight), knn_mix_score(clf, Xs, rule, k, weight)
                p_ok = qp & (clf.svm.scores(Xp).argmax(1) == sp.candidate)
                s_ok = qs & (clf.svm.scores(Xs).argmax(1) == ss.candidate)
                t = threshold_for(np.where(s_ok, ss.score, np.inf))
                own[name] = {"threshold": t, **rates(sp, truth, ss, t, p_ok, s_ok)}
                scored[name] = (sp, truth, ss, p_ok, s_ok)
            common = min(v["threshold"] for v in own.values())
            rows.append({"flip": flip, "variant": label, "own": own, "threshold": common,
                         "common": {name: rates(sp, truth, ss, common, p_ok, s_ok)
                                    for name, (sp, truth, ss, p_ok, s_ok) in scored.items()}})
    return rows


def gallery_size_rows(photos: Photos, cfg: Config, ingredient: list[dict]) -> list[dict]:
    """FAR / ID at fixed thresholds (the old 0.6 rule, plain centroid distance at its 72-person threshold
    of split A, the shipped rule) with N people enrolled, drawn from the split's enrolled half."""
    rule = dataclasses.replace(cfg.recognition, kernel="linear")
    centroid_t = ingredient[2]["A"]["threshold"]
    no_margin = dataclasses.replace(rule, margin_weight=0.0, spread_weight=0.0)
    out = []
    for n in SIZES:
        acc: dict[str, list] = {k: [] for k in ("old", "centroid", "shipped")}
        for parity in (0, 1):
            gallery, probes, strangers = split(photos, parity)
            people = sorted(set(photos.person[gallery]))
            for seed in range(SIZE_SEEDS if n < len(people) else 1):
                rng = np.random.default_rng(seed)
                chosen = set(rng.choice(people, size=n, replace=False).tolist())
                g = gallery[np.isin(photos.person[gallery], list(chosen))]
                p = probes[np.isin(photos.person[probes], list(chosen))]
                clf = train(photos.embedding[g], list(photos.person[g]), rule)
                index = {q: k for k, q in enumerate(clf.people)}
                truth = np.array([index[q] for q in photos.person[p]])
                Xp, Xs = photos.embedding[p], photos.embedding[strangers]
                if clf.svm is not None:
                    svm_p, svm_s = clf.svm.scores(Xp).argmax(1), clf.svm.scores(Xs).argmax(1)
                else:
                    svm_p, svm_s = np.zeros(len(p), int), np.zeros(len(strangers), int)
                qp, qs = photos.quality[p] == "", photos.quality[strangers] == ""
                old_p, old_s = nearest_photo(clf, Xp), nearest_photo(clf, Xs)
                acc["old"].append(rates(old_p, truth, old_s, OLD_THRESHOLD, svm_p == old_p.candidate,
                                        svm_s == old_s.candidate))
                acc["centroid"].append(rates(rule_score(clf, Xp, no_margin), truth, rule_score(clf, Xs, no_margin),
                                             centroid_t))
                sp, ss = rule_score(clf, Xp, rule), rule_score(clf, Xs, rule)
                acc["shipped"].append(rates(sp, truth, ss, rule.distance_threshold,
                                            (svm_p == sp.candidate) & qp, (svm_s == ss.candidate) & qs))
        row = {"people": n}
        for k, v in acc.items():
            row[k] = {"far": float(np.mean([r["far"] for r in v])), "far_max": float(np.max([r["far"] for r in v])),
                      "id": float(np.mean([r["id"] for r in v])), "runs": len(v)}
        out.append(row)
    return out


def photos_per_person_rows(photos: Photos, cfg: Config) -> list[dict]:
    """FAR / ID at the defaults when each of the 72 people is enrolled with only their first n photos."""
    rule = dataclasses.replace(cfg.recognition, kernel="linear")
    out = []
    for n in PHOTOS_PER_PERSON:
        row: dict = {"photos": n}
        for name, parity in (("A", 0), ("B", 1)):
            gallery, probes, strangers = split(photos, parity)
            rank = {i: sorted(np.flatnonzero(photos.person == photos.person[i]), key=lambda j: photos.file[j])
                    .index(i) for i in gallery}
            g = np.array([i for i in gallery if rank[i] < n])
            clf = trained(photos, g, rule, f"{cache_path('onnxruntime', cfg).stem}-split{name}-{n}photos-linear")
            index = {q: k for k, q in enumerate(clf.people)}
            truth = np.array([index[q] for q in photos.person[probes]])
            Xp, Xs = photos.embedding[probes], photos.embedding[strangers]
            sp, ss = rule_score(clf, Xp, rule), rule_score(clf, Xs, rule)
            p_ok, s_ok = photos.quality[probes] == "", photos.quality[strangers] == ""
            if clf.svm is not None:
                p_ok &= clf.svm.scores(Xp).argmax(1) == sp.candidate
                s_ok &= clf.svm.scores(Xs).argmax(1) == ss.candidate
            row[name] = rates(sp, truth, ss, rule.distance_threshold, p_ok, s_ok)
        out.append(row)
    return out


def names_at_defaults(photos: Photos, cfg: Config, backend: str) -> dict[str, list]:
    """Per split, what identify names each probe and stranger photo (None = unknown) at the defaults."""
    out = {}
    for name, parity in (("A", 0), ("B", 1)):
        gallery, probes, strangers = split(photos, parity)
        clf = trained(photos, gallery, cfg.recognition, f"{backend}-{cache_path(backend, cfg).stem}-split{name}")
        queries = np.concatenate([probes, strangers])
        preds = clf.predict(photos.embedding[queries])
        out[name] = [p.name if q == "" else None for p, q in zip(preds, photos.quality[queries])]
    return out


def embedder_agreement(cfg: Config, reference: dict[str, list]) -> dict:
    dlib_names = names_at_defaults(principal_faces(load_or_embed("dlib"), cfg), cfg, "dlib")
    return {name: {"photos": len(names), "same_name": sum(a == b for a, b in zip(names, dlib_names[name])),
                   "differ": [(a, b) for a, b in zip(names, dlib_names[name]) if a != b]}
            for name, names in reference.items()}


def quality_rows(photos: Photos) -> dict:
    values, counts = np.unique(photos.quality.astype(str), return_counts=True)
    return {str(v or "ok"): int(c) for v, c in zip(values, counts)}


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def print_tables(report: dict) -> None:
    print("| decision | A: ID @ FAR<=1% (own t) | B: ID @ FAR<=1% (own t) | A with B's t: FAR / ID "
          "| B with A's t: FAR / ID |")
    print("|---|---|---|---|---|")
    for r in report["ingredients"]:
        a, b = r["A"], r["B"]
        if "cross" in a:
            print(f"| {r['rule']} | {pct(a['id'])} (t={a['threshold']:.3f}) | {pct(b['id'])} (t={b['threshold']:.3f}) "
                  f"| {pct(a['cross']['far'])} / {pct(a['cross']['id'])} | {pct(b['cross']['far'])} / "
                  f"{pct(b['cross']['id'])} |")
        else:
            cells = [f"FAR {pct(x['far'])} ({x['strangers_named']}/{x['strangers']}), ID {pct(x['id'])} "
                     f"({x['named_right']}/{x['probes']})" for x in (a, b)]
            print(f"| {r['rule']} | {cells[0]} | {cells[1]} | | |")
    print()
    print("| people enrolled | old rule (0.6 + SVM): FAR (max) / ID | centroid distance alone: FAR (max) / ID "
          "| shipped rule: FAR (max) / ID |")
    print("|---|---|---|---|")
    for r in report["gallery_size"]:
        cells = [f"{pct(r[k]['far'])} ({pct(r[k]['far_max'])}) / {pct(r[k]['id'])}" for k in ("old", "centroid",
                                                                                               "shipped")]
        print(f"| {r['people']} ({r['shipped']['runs']} runs) | " + " | ".join(cells) + " |")
    print()
    print("| photos per enrolled person | A: FAR / ID | B: FAR / ID |")
    print("|---|---|---|")
    for r in report["photos_per_person"]:
        print(f"| {r['photos']} | {pct(r['A']['far'])} ({r['A']['strangers_named']}/{r['A']['strangers']}) / "
              f"{pct(r['A']['id'])} | {pct(r['B']['far'])} ({r['B']['strangers_named']}/{r['B']['strangers']}) / "
              f"{pct(r['B']['id'])} |")
    if report.get("variants"):
        print()
        print("| embedding | person model | A: ID @ FAR<=1% (own t) | B: ID @ FAR<=1% (own t) | one threshold "
              "| A: FAR / ID | B: FAR / ID |")
        print("|---|---|---|---|---|---|---|")
        for r in report["variants"]:
            a, b = r["common"]["A"], r["common"]["B"]
            print(f"| {'flip' if r['flip'] else 'chip only'} | {r['variant']} | {pct(r['own']['A']['id'])} "
                  f"| {pct(r['own']['B']['id'])} | {r['threshold']:.4f} | {pct(a['far'])} / {pct(a['id'])} "
                  f"({a['named_right']}/{a['probes']}) | {pct(b['far'])} / {pct(b['id'])} ({b['named_right']}/"
                  f"{b['probes']}) |")
    print()
    print("quality of the 1,440 LFW faces at the defaults:", report["quality"])
    print("Classifier.predict + quality at the defaults:", report["extra"]["predict_check"])
    print("SVMs chosen by cross-validation:", report["extra"]["svm"])
    if report.get("embedders"):
        for name, r in report["embedders"].items():
            print(f"split {name}: dlib and ONNX Runtime embeddings give the same name (or unknown) on "
                  f"{r['same_name']}/{r['photos']} photos; differ: {r['differ']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding", default="onnxruntime", choices=("onnxruntime", "dlib"))
    ap.add_argument("--json", type=Path, default=RESULTS / "openset.json", help="write every figure here")
    ap.add_argument("--no-sizes", action="store_true", help="skip the gallery-size table (trains 100+ SVM sets)")
    ap.add_argument("--variants", action="store_true",
                    help="also compare flip vs chip-only embeddings and person-model variants at one threshold")
    ap.add_argument("--compare-embedders", action="store_true",
                    help="also embed with dlib's own ResNet and compare the names (onnxruntime only)")
    args = ap.parse_args()
    cfg = config_from_dict({}, base_dir=ROOT, env={})  # the shipped defaults
    data = load_or_embed(args.embedding)
    photos = principal_faces(data, cfg)
    ingredients, extra = ingredient_rows(photos, cfg, args.embedding)
    report = {"ingredients": ingredients, "extra": extra, "quality": quality_rows(photos),
              "gallery_size": [] if args.no_sizes else gallery_size_rows(photos, cfg, ingredients),
              "photos_per_person": photos_per_person_rows(photos, cfg),
              "variants": variant_rows(data, cfg, args.embedding) if args.variants else [],
              "defaults": dataclasses.asdict(cfg.recognition), "embedding": args.embedding,
              "flip": cfg.embedding.flip}
    if args.compare_embedders and args.embedding == "onnxruntime":
        report["embedders"] = embedder_agreement(cfg, names_at_defaults(photos, cfg, args.embedding))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print_tables(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
