"""Distances to decisions: genuine and impostor distances, FAR/FRR sweeps, the equal-error point, the
threshold for a target FAR, and their summaries (the terms are explained in agent/evaluation/__init__.py)."""

from __future__ import annotations

import logging
import math

import numpy as np

from agent.config import RecognitionSection
from agent.vision.classifier import effective_distance

log = logging.getLogger(__name__)

STEP = 0.005  # threshold resolution of the sweep and of the chosen threshold
GRID = np.round(np.arange(0.0, 0.6001, STEP), 3)  # thresholds at which the classifier is swept
FINE = np.round(np.arange(-0.3, 1.0001, 0.001), 3)  # thresholds for the equal-error point


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
        "curves": {"thresholds": GRID.tolist(), "far": rounded_list(far), "frr": rounded_list(frr)},
        "at": {},
    }
    points = {"configured": configured}
    if out["chosen"]:
        points["chosen"] = out["chosen"]["threshold"]
    for label, t in points.items():
        a, r = rates(g, i, np.array([t]))
        out["at"][label] = {"threshold": t, "far": number_or_none(a[0]), "frr": number_or_none(r[0]),
                            "impostors_accepted": int((i <= t).sum()), "impostors": len(i),
                            "genuine_accepted": int((g <= t).sum()), "genuine": len(g)}
    return out

def _describe(x: np.ndarray) -> dict:
    if not len(x):
        return {"n": 0}
    q = np.percentile(x, [0, 5, 50, 95, 100])
    return {"n": int(len(x)), "min": round(float(q[0]), 4), "p5": round(float(q[1]), 4),
            "median": round(float(q[2]), 4), "p95": round(float(q[3]), 4), "max": round(float(q[4]), 4)}

def number_or_none(v: float) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else round(float(v), 4)

def rounded_list(a: np.ndarray) -> list:
    return [number_or_none(v) for v in a]

def spread_summary(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, dtype=float)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4), "min": round(float(v.min()), 4),
            "max": round(float(v.max()), 4)}

def open_set_eer(tar: list, trr: list) -> dict:
    """Where the classifier's false-reject rate (1 - TAR) meets its stranger false-accept rate (1 - TRR)."""
    return _crossing(1.0 - np.asarray(trr, dtype=float), 1.0 - np.asarray(tar, dtype=float), GRID, 2)

def ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None
