"""What `face-agent reject` does to the open-set gate, on people never enrolled (lfw-subset, split by people).

Every second lfw-subset person is enrolled (photos 0-4); the others are strangers. A stranger photo the
gate names as an enrolled person X is a wrong identification; the user rejects the FIRST one of each
(stranger, X) pair (its embedding becomes a negative of X, as `reject` records the track's faces). Then:

- repeated: of the stranger's OTHER photos named X before, the share still named X after (should drop);
- genuine: the enrolled people's own held-out photos (5-9) named right, before and after (should not drop);
- new wrong: stranger photos named anybody, before and after.

The gate here is the open-set rule without the SVM veto (`svm=None`: the rule the negatives act on; the
SVM only ever turns names into unknowns). `--thresholds` runs it at several `distance_threshold`s: looser
gates make more wrong identifications to reject.

    .venv/bin/python bench/bench_reject.py --thresholds 0.265 0.30 0.35
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import RecognitionSection  # noqa: E402
from agent.vision.classifier import Classifier  # noqa: E402
from bench.openset_cache import load_or_embed  # noqa: E402

MIN_SCORE = 0.95  # [detector] min_score


def photo_embeddings() -> dict[str, list[np.ndarray]]:
    """person -> the embedding of each photo's best-scoring face (photos with none are left out)."""
    data = load_or_embed()
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for i, person in enumerate(data["photo_person"]):
        idx = np.flatnonzero((data["face_photo"] == i) & (data["score"] >= MIN_SCORE))
        if len(idx):
            out[str(person)].append(data["embedding"][idx[np.argmax(data["score"][idx])]])
    return out


def run(threshold: float, faces: dict[str, list[np.ndarray]]) -> dict:
    people = sorted(p for p, f in faces.items() if len(f) >= 7)
    enrolled, strangers = people[0::2], people[1::2]
    X = np.stack([e for p in enrolled for e in faces[p][:5]])
    labels = np.array([k for k, p in enumerate(enrolled) for _ in faces[p][:5]])
    clf = Classifier(enrolled, X, labels, None, RecognitionSection(distance_threshold=threshold))

    def names(emb: list[np.ndarray]) -> list[str | None]:
        return [p.name for p in clf.predict(np.stack(emb))]

    genuine = [(p, e) for p in enrolled for e in faces[p][5:]]
    genuine_before = np.mean([n == p for (p, _), n in zip(genuine, names([e for _, e in genuine]))])
    wrong: dict[tuple[str, str], list[int]] = defaultdict(list)  # (stranger, X) -> photo indexes named X
    stranger_named_before = 0
    for s in strangers:
        for j, n in enumerate(names(faces[s])):
            if n is not None:
                wrong[(s, n)].append(j)
                stranger_named_before += 1
    negatives: dict[str, list[np.ndarray]] = defaultdict(list)
    for (s, x), photos in wrong.items():
        negatives[x].append(faces[s][photos[0]])  # the user rejects the first wrong identification
    clf.negatives = {x: np.stack(v) for x, v in negatives.items()}
    genuine_after = np.mean([n == p for (p, _), n in zip(genuine, names([e for _, e in genuine]))])
    others = [(s, x, j) for (s, x), photos in wrong.items() for j in photos[1:]]
    repeated = sum(1 for s, x, j in others if names([faces[s][j]])[0] == x)
    stranger_named_after = sum(1 for s in strangers for n in names(faces[s]) if n is not None)
    return {"distance_threshold": threshold, "enrolled": len(enrolled), "strangers": len(strangers),
            "wrong_pairs_rejected": len(wrong), "other_photos_named_x_before": len(others),
            "other_photos_named_x_after": repeated,
            "repeated_share": round(repeated / len(others), 3) if others else None,
            "stranger_photos_named_before": stranger_named_before,
            "stranger_photos_named_after": stranger_named_after,
            "genuine_named_right_before": round(float(genuine_before), 4),
            "genuine_named_right_after": round(float(genuine_after), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.265, 0.30, 0.35])
    args = ap.parse_args()
    faces = photo_embeddings()
    for t in args.thresholds:
        print(json.dumps(run(t, faces)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
