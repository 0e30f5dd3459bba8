"""How `[tracker] split_distance` was chosen: same-person vs different-person embedding distances.

    python bench/calibrate_track_split.py [--people 60]

A track keeps the embeddings of the face it follows; a new embedding farther than `split_distance` from
all of them (the nearest counts) splits the track. A missed split puts a settled name on somebody else (the
worst outcome); a needless split only restarts the vote (a few frames without a name). So the threshold is
set where different people almost never come closer, and same-person photos from different occasions
(harder than consecutive video frames of one face) mostly stay below. Data: the first N people of
../shared/faces/lfw-subset (10 photos each, the face nearest the centre) and dlib's johns chips (5 people x
11 aligned chips). Prints percentiles of both distributions and the miss / needless-split rates at a few
thresholds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "faces"


def lfw_embeddings(analyzer, people: int) -> tuple[np.ndarray, list[str]]:
    from agent.images import load_image

    vectors, labels = [], []
    folders = sorted(p for p in (SHARED / "lfw-subset").iterdir() if p.is_dir())[:people]
    for folder in tqdm(folders, desc="lfw people"):
        for path in sorted(folder.glob("*.jpg")):
            rgb = load_image(path)
            dets = analyzer.detect(rgb)
            if not dets:
                continue
            h, w = rgb.shape[:2]
            det = min(dets, key=lambda d: (((d.box[0] + d.box[2]) / 2 - w / 2) ** 2
                                           + ((d.box[1] + d.box[3]) / 2 - h / 2) ** 2))
            _, emb = analyzer.embed(rgb, [det])
            vectors.append(emb[0])
            labels.append(folder.name)
    return np.array(vectors), labels


def johns_embeddings(analyzer) -> tuple[np.ndarray, list[str]]:
    from agent.images import load_image

    chips, labels = [], []
    for folder in sorted((SHARED / "dlib" / "examples" / "johns").iterdir()):
        for path in sorted(folder.glob("*.jpg")):
            chips.append(load_image(path))
            labels.append("johns/" + folder.name)
    return analyzer.embedder.embed(np.stack(chips)), labels


def pair_distances(X: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)
    y = np.array(labels)
    same = y[:, None] == y[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), 1)
    return d[same & upper], d[~same & upper]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=60, help="LFW people to use (10 photos each)")
    args = ap.parse_args()
    from agent.config import config_from_dict
    from agent.vision.recognizer import FaceAnalyzer

    analyzer = FaceAnalyzer(config_from_dict({}))
    X1, y1 = lfw_embeddings(analyzer, args.people)
    X2, y2 = johns_embeddings(analyzer)
    same1, diff1 = pair_distances(X1, y1)
    same2, diff2 = pair_distances(X2, y2)
    same, diff = np.concatenate([same1, same2]), np.concatenate([diff1, diff2])
    pct = (0.1, 1, 5, 50, 95, 99)
    print(f"same-person pairs: {len(same)}; percentiles {pct}: "
          + " ".join(f"{np.percentile(same, p):.3f}" for p in pct))
    print(f"different-person pairs: {len(diff)}; percentiles {pct}: "
          + " ".join(f"{np.percentile(diff, p):.3f}" for p in pct))
    print(f"{'threshold':>9s} {'missed splits (diff <= t)':>26s} {'needless splits (same > t)':>27s}")
    for t in (0.40, 0.45, 0.48, 0.50, 0.52, 0.55, 0.58, 0.60):
        print(f"{t:9.2f} {np.mean(diff <= t) * 100:25.3f}% {np.mean(same > t) * 100:26.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
