"""Who is this? dlib SVMs, balanced and cross-validated, behind an open-set "unknown" gate.

Training: one-vs-rest binary dlib SVMs (linear or RBF). The original project's SVMs always picked the
class with the most images; here every binary problem weighs its two sides inversely to their counts
(a person with 20 photos does not swallow one with 3), and C (and gamma) are chosen by stratified
k-fold cross-validation on balanced accuracy. One enrolled person, or one photo per person, works:
the SVM step is skipped where it cannot be trained or validated.

Prediction: the open-set rule of docs/evaluation.md, chosen by measurement on people never enrolled
(bench/bench_openset.py, bench/bench_gate.py). Embeddings are scaled to unit length. A person's photos are first
grouped into distinct *views*: photos linked by embeddings closer than `duplicate_distance` (frames of one
track, burst shots, one photo at two sizes) are one view, the unit mean of its photos
(`distinct_views`). Each person is the unit mean of their views (`centroid`) and has a `spread`: how far a new
photo of them is expected to lie from that centroid, their views' scatter (measured leave-one-out, shrunk
towards `typical_spread` when they have few views) times sqrt(1 + 1/n) for a mean of n views
(`person_models`). For a face, `c1` / `c2` are the distances to the nearest / second-nearest person's
centroid, and its **effective distance** is

    c1 - spread_weight * (spread - typical_spread) - margin_weight * min(c2 - c1, max_margin)

(a person whose photos vary more gets a wider gate; a face much closer to one person than to every other gets a
wider gate, up to `max_margin`; with one person enrolled the margin counts as `max_margin`).

The face is that person only if the effective distance is at most the person's **gate** and the SVM votes for
the same person. The gate is `distance_threshold`, calibrated so that false accepts stay at or under 1% of
stranger faces whatever the enrollment (`gate_thresholds`): it is `few_views_penalty[n - 1]` stricter for a
person with n < 5 distinct views (a mean of few photos is uncertain: without this a one-photo person let 2-3x
as many strangers through), `gallery_bonus * log2(small_gallery[n - 1] / people)` wider with fewer than
`small_gallery[n - 1]` people enrolled (fewer people, fewer chances for a stranger to resemble one; the penalty
of few views is calibrated on 72 people and matters less in a household), and `small_face_penalty` stricter
for a face under `small_face_size` px (`predict(sizes=...)`).
`confidence` (0..1) is a logistic of `gate - effective distance`.

Negatives ("that was not X", `face-agent reject`): embeddings a user said are not a person. A face the
rule would name X is unknown instead (reason "rejected") when it is nearer one of X's negatives than X's
centroid: the same face is not named X again, while X's own faces stay nearer X.

The trained model is stored as `classifier.npz` (arrays only, no pickle) plus `classifier.json`
(metadata). The SVMs are evaluated with numpy from their support vectors/weights, so loading never
executes code from the file; a corrupt or incompatible file is reported and the caller retrains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import agent
from agent.child import run_module
from agent.config import RecognitionSection
from agent.files import atomic_write

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DIM = 128
MODEL_NAME = "classifier.npz"
META_NAME = "classifier.json"

C_GRID = (0.1, 1.0, 10.0, 100.0)
GAMMA_GRID = (1.0, 4.0, 16.0)  # embeddings are unit-ish vectors; same-person d^2 ~ 0.1-0.3
DEFAULT_KERNEL = ("linear", 10.0, 0.0)
CONFIDENCE_SLOPE = 25.0  # logistic slope of confidence over (threshold - effective distance)
SPREAD_PRIOR_PHOTOS = 2.0  # a person's scatter counts `typical_spread` as this many photos


class ClassifierFileError(RuntimeError):
    """A saved classifier that cannot be used (missing, corrupt, incompatible)."""


@dataclass
class Prediction:
    name: str | None  # None = unknown
    confidence: float  # 0..1
    distance: float  # L2 between the unit-length embedding and `candidate`'s centroid (c1)
    candidate: str | None  # the nearest person even when rejected
    svm_name: str | None  # the SVM's vote (None when no SVM was trained)
    reason: str = ""  # why unknown: "far" | "svm_disagrees" | "low_confidence" | "nobody_enrolled" | a quality
    margin: float = math.inf  # c2 - c1: how much nearer `candidate` is than the second-nearest person
    effective: float = math.inf  # the effective distance compared with the gate
    gate: float = math.inf  # the candidate's gate for this face (distance_threshold adjusted: gate_thresholds)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "confidence": round(self.confidence, 4),
            "distance": _finite(self.distance),
            "margin": _finite(self.margin),
            "effective_distance": _finite(self.effective),
            "gate": _finite(self.gate),
            "candidate": self.candidate,
            "svm": self.svm_name,
            "reason": self.reason or None,
        }


def _finite(v: float) -> float | None:
    return round(float(v), 4) if math.isfinite(v) else None


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (dlib embeddings have lengths 1.2-1.7; the direction carries identity)."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, DIM)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def l2(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) L2 distances."""
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.sqrt(np.maximum(d2, 0.0))


def distinct_views(own: np.ndarray, duplicate_distance: float) -> np.ndarray:
    """(m, DIM) unit-length views of one person's unit-length embeddings: embeddings linked by a chain of steps
    shorter than `duplicate_distance` (near-identical faces: frames of one track, bursts, one photo at two sizes)
    are one view, the unit mean of its embeddings; so near-duplicates count once for the person's mean, scatter
    and number of views. Views come in the order of their first embedding."""
    n = len(own)
    if not n:
        return np.zeros((0, DIM))
    group = np.arange(n)  # single linkage: union of every pair closer than duplicate_distance
    close = l2(own, own) < duplicate_distance
    for i, j in zip(*np.nonzero(np.triu(close, 1))):
        gi, gj = group[i], group[j]
        if gi != gj:
            group[group == max(gi, gj)] = min(gi, gj)
    return unit_rows(np.array([own[group == g].sum(0) for g in sorted(set(group.tolist()))]))


def person_models(embeddings: np.ndarray, labels: np.ndarray, n_people: int, typical_spread: float,
                  duplicate_distance: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids (n_people, DIM), spreads (n_people,), views (n_people,)) from enrolled embeddings.

    views: the number of distinct views of each person (`distinct_views`; 0: every photo is its own view).
    centroid: the unit mean of a person's n views. spread: how far a new photo of the person is expected to lie
    from that centroid, scatter * sqrt(1 + 1/n): the scatter of their views (each view's distance to the mean
    of the others is scatter * sqrt(1 + 1/(n-1)), measured leave-one-out and shrunk towards `typical_spread`
    with the weight of SPREAD_PRIOR_PHOTOS views; one view: exactly `typical_spread`) grown by the uncertainty
    of a mean of only n views (one: x1.41, five: x1.10)."""
    U = unit_rows(embeddings)
    centroids = np.zeros((n_people, DIM))
    spreads = np.full(n_people, float(typical_spread))
    views = np.zeros(n_people, dtype=np.int64)
    for k in range(n_people):
        own = U[labels == k]
        if duplicate_distance > 0:
            own = distinct_views(own, duplicate_distance)
        n = len(own)
        views[k] = n
        if not n:
            continue
        total = own.sum(0)
        centroids[k] = unit_rows(total)[0]
        scatter = typical_spread
        if n >= 2:
            loo = unit_rows(total[None, :] - own)
            measured = float(np.linalg.norm(own - loo, axis=1).mean()) / math.sqrt(1.0 + 1.0 / (n - 1))
            scatter = (n * measured + SPREAD_PRIOR_PHOTOS * typical_spread) / (n + SPREAD_PRIOR_PHOTOS)
        spreads[k] = scatter * math.sqrt(1.0 + 1.0 / n)
    return centroids, spreads, views


def gate_thresholds(views: np.ndarray, rule: RecognitionSection) -> np.ndarray:
    """(n_people,) each person's gate on the effective distance: `distance_threshold`, stricter by
    `few_views_penalty[n - 1]` for a person with n < 5 distinct views, and wider by `gallery_bonus *
    log2(small_gallery[n - 1] / people)` while fewer than small_gallery[n - 1] people are enrolled (n: the
    person's distinct views, 5 for 5 or more). Calibrated so that strangers are named at most 1% of the time
    however people were enrolled (bench/bench_gate.py)."""
    views = np.clip(np.asarray(views, dtype=np.int64), 1, 5)
    penalty = np.asarray(list(rule.few_views_penalty) + [0.0], dtype=np.float64)[views - 1]
    people = max(2, len(views))  # one person counts as two
    reference = np.asarray(rule.small_gallery, dtype=np.float64)[views - 1]
    bonus = rule.gallery_bonus * np.maximum(0.0, np.log2(reference / people))
    return rule.distance_threshold - penalty + bonus


def small_face_penalties(sizes: np.ndarray | None, count: int, rule: RecognitionSection) -> np.ndarray:
    """(count,) how much stricter the gate is for each face: `small_face_penalty` under `small_face_size` px
    (sizes: each face's shorter side in px; None: photos at full size)."""
    if sizes is None:
        return np.zeros(count)
    return np.where(np.asarray(sizes, dtype=np.float64) < rule.small_face_size, rule.small_face_penalty, 0.0)


def leave_one_out(embeddings: np.ndarray, labels: np.ndarray, n_people: int, typical_spread: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each enrolled photo against the others: (D (N, n_people) its distance to every person's centroid,
    its own person's centroid made without it (inf when it is their only photo); own_spread (N,) its
    person's spread without it; spreads (n_people,) everybody's spread with all photos)."""
    labels = np.asarray(labels)
    U = unit_rows(embeddings)
    centroids, spreads, _ = person_models(embeddings, labels, n_people, typical_spread)
    D = l2(U, centroids)
    own_spread = np.full(len(U), float(typical_spread))
    for i, k in enumerate(labels):
        rest = np.flatnonzero(labels == k)
        rest = rest[rest != i]
        if not len(rest):
            D[i, k] = np.inf
            continue
        c, sp, _ = person_models(U[rest], np.zeros(len(rest), dtype=int), 1, typical_spread)
        D[i, k] = float(np.linalg.norm(U[i] - c[0]))
        own_spread[i] = sp[0]
    return D, own_spread, spreads


def effective_distance(c1: np.ndarray, c2: np.ndarray, spread: np.ndarray, rule: RecognitionSection) -> np.ndarray:
    """The quantity `distance_threshold` gates (see the module docstring). c2 = inf: nobody else enrolled."""
    margin = np.minimum(np.asarray(c2, dtype=np.float64) - c1, rule.max_margin)
    return (np.asarray(c1, dtype=np.float64) - rule.spread_weight * (np.asarray(spread) - rule.typical_spread)
            - rule.margin_weight * margin)


@dataclass
class SvmModel:
    """One-vs-rest decision functions, evaluated in numpy."""

    kernel: str  # "linear" | "rbf"
    C: float
    gamma: float
    weights: list[np.ndarray] = field(default_factory=list)  # linear: (DIM,) per person
    bias: list[float] = field(default_factory=list)  # f(x) = w.x - bias  |  K(x, sv) @ alpha - bias
    support: list[np.ndarray] = field(default_factory=list)  # rbf: (n_sv, DIM) per person
    alpha: list[np.ndarray] = field(default_factory=list)  # rbf: (n_sv,) per person

    def scores(self, X: np.ndarray) -> np.ndarray:
        """(N, n_people) decision values."""
        cols = []
        for k, b in enumerate(self.bias):
            if self.kernel == "linear":
                cols.append(X @ self.weights[k] - b)
            else:
                sv = self.support[k]
                d2 = (X * X).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * X @ sv.T
                cols.append(np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.alpha[k] - b)
        return np.stack(cols, axis=1)


def _dlib_train(X: np.ndarray, positive: np.ndarray, kernel: str, C: float, gamma: float):
    """Train one balanced binary dlib SVM; returns its dlib decision function."""
    import dlib

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    trainer = dlib.svm_c_trainer_linear() if kernel == "linear" else dlib.svm_c_trainer_radial_basis()
    if kernel == "rbf":
        trainer.gamma = gamma
    # balanced class weights: each side's total weight is the same whatever its photo count
    trainer.c_class1 = C * len(positive) / (2.0 * n_pos)
    trainer.c_class2 = C * len(positive) / (2.0 * n_neg)
    xs = dlib.vectors([dlib.vector(row.tolist()) for row in X])
    ys = dlib.array([1.0 if p else -1.0 for p in positive])
    return trainer.train(xs, ys)


def train_svm(X: np.ndarray, y: np.ndarray, n_people: int, kernel: str, C: float, gamma: float) -> SvmModel:
    model = SvmModel(kernel=kernel, C=C, gamma=gamma)
    for k in range(n_people):
        df = _dlib_train(X, y == k, kernel, C, gamma)
        if kernel == "linear":
            model.weights.append(np.asarray(list(df.weights), dtype=np.float64))
            model.bias.append(float(df.bias))
        else:
            model.support.append(np.asarray([list(v) for v in df.basis_vectors], dtype=np.float64))
            model.alpha.append(np.asarray(list(df.alpha), dtype=np.float64))
            model.bias.append(float(df.b))
    return model


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes]))


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint index sets, each class spread over the folds round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(offset + j) % k].append(int(i))
        offset += len(idx)
    return [np.array(sorted(f), dtype=int) for f in folds if f]


def cross_validate(X: np.ndarray, y: np.ndarray, n_people: int, kernel: str, C: float, gamma: float,
                   folds: list[np.ndarray]) -> float:
    """Mean balanced accuracy of the one-vs-rest SVMs over the folds."""
    scores = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(np.unique(y[train])) < n_people:
            continue
        model = train_svm(X[train], y[train], n_people, kernel, C, gamma)
        pred = model.scores(X[test]).argmax(1)
        scores.append(balanced_accuracy(y[test], pred))
    return float(np.mean(scores)) if scores else float("nan")


def candidates(kernel: str) -> list[tuple[str, float, float]]:
    grid: list[tuple[str, float, float]] = []
    if kernel in ("auto", "linear"):
        grid += [("linear", c, 0.0) for c in C_GRID]
    if kernel in ("auto", "rbf"):
        grid += [("rbf", c, g) for c in C_GRID for g in GAMMA_GRID]
    return grid


@dataclass(frozen=True)
class ClassifierSummary:
    """What a trained classifier says about itself, typed: the training part of classifier.json's metadata
    (`Classifier.summary`). Read by the gallery, the enrollment operations (agent.enrollment_ops: `people`,
    remote `list`, the `model_updated` notice), the web console's training card, `face-agent enroll` and the
    service's `model_updated` event; `to_dict()` writes the same keys `from_dict()` reads (train() uses it)."""

    people: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # person -> photos trained on
    fingerprint: str = ""  # of the photos and settings it was trained on (the gallery's retrain test)
    trained_at: str | None = None  # ISO UTC
    training_seconds: float = 0.0
    cv_score: float | None = None  # cross-validated balanced accuracy (None: too few photos, or one person)
    cv_folds: int = 0
    cv_grid: tuple[dict, ...] = ()  # each candidate's kernel, C, gamma and balanced accuracy
    kernel: str | None = None  # the SVM kernel chosen (None: no SVM, fewer than two people)
    warnings: tuple[str, ...] = ()  # the enrollment's warnings when it was trained

    @classmethod
    def from_dict(cls, meta: dict, people: list[str] | None = None) -> ClassifierSummary:
        """From classifier.json's metadata (missing keys: their defaults; `people` overrides meta's)."""
        cv = meta.get("cross_validation") or {}
        return cls(people=tuple(people if people is not None else meta.get("people") or ()),
                   counts={str(k): int(v) for k, v in (meta.get("counts") or {}).items()},
                   fingerprint=str(meta.get("fingerprint") or ""), trained_at=meta.get("trained_at"),
                   training_seconds=float(meta.get("training_seconds") or 0.0),
                   cv_score=cv.get("balanced_accuracy"), cv_folds=int(cv.get("folds") or 0),
                   cv_grid=tuple(cv.get("grid") or ()), kernel=(meta.get("svm") or {}).get("kernel"),
                   warnings=tuple(meta.get("warnings") or ()))

    def to_dict(self) -> dict:
        """The metadata keys `from_dict` reads (classifier.json)."""
        return {"people": list(self.people), "counts": dict(self.counts), "fingerprint": self.fingerprint,
                "trained_at": self.trained_at, "training_seconds": self.training_seconds,
                "cross_validation": {"folds": self.cv_folds, "balanced_accuracy": self.cv_score,
                                     "grid": list(self.cv_grid)},
                "svm": None if self.kernel is None else {"kernel": self.kernel}, "warnings": list(self.warnings)}

    def model_info(self) -> dict:
        """The model as remote enrollment reports it (`list`, `retrain`, `model_updated`: docs/enrollment.md)."""
        return {"people": list(self.people), "counts": dict(self.counts), "training_s": self.training_seconds,
                "cv_score": self.cv_score, "trained_at": self.trained_at}


@dataclass
class Classifier:
    people: list[str]
    embeddings: np.ndarray  # (N, DIM) float32, every enrolled embedding
    labels: np.ndarray  # (N,) int index into people
    svm: SvmModel | None
    rule: RecognitionSection = field(default_factory=RecognitionSection)  # thresholds of the open-set rule
    meta: dict = field(default_factory=dict)
    svm_veto: bool = True  # the SVM must vote for the same person (bench_openset measures it without)
    negatives: dict[str, np.ndarray] = field(default_factory=dict)  # person -> (M, DIM) faces said not to be them

    def __post_init__(self) -> None:
        self.centroids, self.spreads, self.views = person_models(
            self.embeddings, self.labels, len(self.people), self.rule.typical_spread, self.rule.duplicate_distance)
        self.gates = gate_thresholds(self.views, self.rule)

    @property
    def summary(self) -> ClassifierSummary:
        """The training part of the metadata, typed."""
        return ClassifierSummary.from_dict(self.meta, self.people)

    @property
    def threshold(self) -> float:
        return self.rule.distance_threshold

    # ---- prediction -------------------------------------------------------------------------
    def centroid_distances(self, X: np.ndarray) -> np.ndarray:
        """(N, n_people): distance of each unit-length embedding to each person's centroid."""
        return l2(unit_rows(X), self.centroids)

    def predict(self, X: np.ndarray, sizes: np.ndarray | None = None) -> list[Prediction]:
        """The open-set decision for each embedding; `sizes`: each face's shorter side in px (small faces get a
        stricter gate; None: photos at full size)."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, DIM)
        if not self.people:
            return [Prediction(None, 0.0, math.inf, None, None, "nobody_enrolled") for _ in X]
        D = self.centroid_distances(X)
        order = np.argsort(D, axis=1)
        rows = np.arange(len(X))
        best = order[:, 0]
        c1 = D[rows, best]
        c2 = D[rows, order[:, 1]] if len(self.people) > 1 else np.full(len(X), np.inf)
        effective = effective_distance(c1, c2, self.spreads[best], self.rule)
        gates = self.gates[best] - small_face_penalties(sizes, len(X), self.rule)
        svm_votes = self.svm.scores(X).argmax(1) if self.svm is not None else None
        out = []
        for i in range(len(X)):
            e, gate = float(effective[i]), float(gates[i])
            conf = 1.0 / (1.0 + math.exp(-CONFIDENCE_SLOPE * (gate - e)))
            svm_name = self.people[int(svm_votes[i])] if svm_votes is not None else None
            candidate = self.people[int(best[i])]
            name: str | None = candidate
            reason = ""
            if e > gate:
                name, reason = None, "far"
            elif self.svm_veto and svm_name is not None and svm_name != candidate:
                name, reason, conf = None, "svm_disagrees", conf * 0.5
            elif conf < self.rule.min_confidence:
                name, reason = None, "low_confidence"
            elif candidate in self.negatives and self.nearest_negative(X[i], candidate) < c1[i]:
                name, reason = None, "rejected"
            out.append(Prediction(name, conf, float(c1[i]), candidate, svm_name, reason,
                                  margin=float(c2[i] - c1[i]), effective=e, gate=gate))
        return out

    def nearest_negative(self, x: np.ndarray, person: str) -> float:
        """Distance of a unit-length face to the nearest face said not to be `person` (inf: none)."""
        negatives = self.negatives.get(person)
        if negatives is None or not len(negatives):
            return math.inf
        return float(l2(unit_rows(x.reshape(1, DIM)), unit_rows(negatives)).min())

    # ---- persistence ------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write classifier.npz + classifier.json atomically into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"embeddings": self.embeddings.astype(np.float32),
                                         "labels": self.labels.astype(np.int32)}
        if self.svm is not None:
            for k in range(len(self.svm.bias)):
                if self.svm.kernel == "linear":
                    arrays[f"w{k}"] = self.svm.weights[k]
                else:
                    arrays[f"sv{k}"] = self.svm.support[k]
                    arrays[f"alpha{k}"] = self.svm.alpha[k]
            arrays["bias"] = np.asarray(self.svm.bias, dtype=np.float64)
        negatives = sorted(p for p in self.negatives if p in self.people)
        for k, person in enumerate(negatives):
            arrays[f"neg{k}"] = np.asarray(self.negatives[person], dtype=np.float32).reshape(-1, DIM)
        meta = dict(self.meta)
        meta["negatives"] = negatives
        meta.update({
            "format_version": FORMAT_VERSION,
            "dim": DIM,
            "people": self.people,
            "svm": None if self.svm is None else
            {"kernel": self.svm.kernel, "C": self.svm.C, "gamma": self.svm.gamma},
        })
        atomic_write(folder / MODEL_NAME, lambda f: np.savez(f, **arrays))
        atomic_write(folder / META_NAME, lambda f: f.write(json.dumps(meta, indent=2).encode()))

    @classmethod
    def load(cls, folder: Path, rule: RecognitionSection | None = None) -> Classifier:
        """Load a saved classifier or raise ClassifierFileError saying why it cannot be used."""
        model_path, meta_path = folder / MODEL_NAME, folder / META_NAME
        if not model_path.is_file() or not meta_path.is_file():
            raise ClassifierFileError(f"no trained classifier in {folder}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format_version") != FORMAT_VERSION or meta.get("dim") != DIM:
                raise ClassifierFileError(
                    f"{meta_path}: format {meta.get('format_version')} / dim {meta.get('dim')} is not "
                    f"{FORMAT_VERSION} / {DIM}")
            people = [str(p) for p in meta["people"]]
            with np.load(model_path, allow_pickle=False) as npz:
                embeddings = np.asarray(npz["embeddings"], dtype=np.float32)
                labels = np.asarray(npz["labels"], dtype=np.int64)
                svm = None
                if meta.get("svm"):
                    s = meta["svm"]
                    svm = SvmModel(kernel=s["kernel"], C=float(s["C"]), gamma=float(s["gamma"]))
                    svm.bias = [float(b) for b in npz["bias"]]
                    for k in range(len(people)):
                        if svm.kernel == "linear":
                            svm.weights.append(np.asarray(npz[f"w{k}"], dtype=np.float64))
                        else:
                            svm.support.append(np.asarray(npz[f"sv{k}"], dtype=np.float64))
                            svm.alpha.append(np.asarray(npz[f"alpha{k}"], dtype=np.float64))
                negatives = {str(p): np.asarray(npz[f"neg{k}"], dtype=np.float32).reshape(-1, DIM)
                             for k, p in enumerate(meta.get("negatives") or [])}
        except ClassifierFileError:
            raise
        except Exception as exc:  # any damage to either file means "retrain"
            raise ClassifierFileError(f"{folder}: corrupt classifier ({type(exc).__name__}: {exc})") from None
        if embeddings.ndim != 2 or embeddings.shape[1] != DIM or len(labels) != len(embeddings) \
                or (len(labels) and (labels.min() < 0 or labels.max() >= len(people))):
            raise ClassifierFileError(f"{folder}: classifier arrays do not match its metadata")
        return cls(people, embeddings, labels, svm, rule or RecognitionSection(), meta, negatives=negatives)


def train(embeddings: np.ndarray, names: list[str], recognition, fingerprint: str = "",
          extra_meta: dict | None = None) -> Classifier:
    """Train from enrolled embeddings and their person names, choosing the SVM by cross-validation."""
    started = time.monotonic()
    X = np.asarray(embeddings, dtype=np.float64).reshape(-1, DIM)
    people = sorted(set(names))
    index = {p: i for i, p in enumerate(people)}
    y = np.array([index[n] for n in names], dtype=np.int64)
    counts = {p: int((y == i).sum()) for i, p in enumerate(people)}
    svm: SvmModel | None = None
    cv: dict = {"folds": 0, "balanced_accuracy": None, "grid": []}
    if len(people) >= 2:
        kernel, C, gamma = DEFAULT_KERNEL
        k = min(recognition.cv_folds, min(counts.values()))
        if k >= 2:
            folds = stratified_folds(y, k)
            results = []
            for cand in candidates(recognition.kernel):
                score = cross_validate(X, y, len(people), *cand, folds)
                results.append((score, cand))
                cv["grid"].append({"kernel": cand[0], "C": cand[1], "gamma": cand[2],
                                   "balanced_accuracy": None if math.isnan(score) else round(score, 4)})
            valid = [(s, c) for s, c in results if not math.isnan(s)]
            if valid:
                # best score; ties go to the simpler model (linear, then smaller C)
                best = max(valid, key=lambda sc: (round(sc[0], 6), sc[1][0] == "linear", -sc[1][1]))
                kernel, C, gamma = best[1]
                cv.update(folds=k, balanced_accuracy=round(best[0], 4))
        elif recognition.kernel == "rbf":
            kernel, C, gamma = "rbf", 10.0, 4.0
        svm = train_svm(X, y, len(people), kernel, C, gamma)
        log.info("trained %s SVMs for %d people (C=%g%s), cross-validated balanced accuracy %s",
                 kernel, len(people), C, f", gamma={gamma:g}" if kernel == "rbf" else "",
                 cv["balanced_accuracy"] if cv["folds"] else "n/a (too few photos per person)")
    summary = ClassifierSummary(
        people=tuple(people), counts=counts, fingerprint=fingerprint,
        trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        training_seconds=round(time.monotonic() - started, 3), cv_score=cv["balanced_accuracy"],
        cv_folds=cv["folds"], cv_grid=tuple(cv["grid"]), kernel=svm.kernel if svm is not None else None)
    meta = {**summary.to_dict(), "versions": _versions(), **(extra_meta or {})}
    return Classifier(people, X.astype(np.float32), y, svm, recognition, meta)


def _versions() -> dict:
    out = {"agent": agent.__version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import dlib

        out["dlib"] = dlib.__version__
    except ImportError:  # pragma: no cover
        out["dlib"] = None
    return out


def train_elsewhere(embeddings: np.ndarray, names: list[str], recognition, fingerprint: str = "",
                    extra_meta: dict | None = None, nice: int = 10) -> Classifier:
    """`train(...)` in a child process at lower priority (`python -m agent.vision.classifier JOB`).

    dlib holds the GIL while it trains, so training inside the agent would stall its video loop for the
    seconds cross-validation takes; the child gets the job and returns the model through a temporary
    folder in the classifier's own file format.
    """
    with tempfile.TemporaryDirectory(prefix="face-agent-train-") as tmp:
        job = Path(tmp)
        np.save(job / "embeddings.npy", np.asarray(embeddings, dtype=np.float64).reshape(-1, DIM))
        (job / "job.json").write_text(json.dumps({
            "names": list(names), "recognition": dataclasses.asdict(recognition), "fingerprint": fingerprint,
            "extra_meta": extra_meta or {}}))
        run_module("agent.vision.classifier", str(job), nice=nice)
        return Classifier.load(job / "model", recognition)


def _train_job(job: Path) -> None:
    spec = json.loads((job / "job.json").read_text())
    clf = train(np.load(job / "embeddings.npy"), spec["names"], RecognitionSection(**spec["recognition"]),
                spec["fingerprint"], spec["extra_meta"])
    clf.save(job / "model")


if __name__ == "__main__":
    _train_job(Path(sys.argv[1]))
