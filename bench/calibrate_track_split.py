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


def lfw_embeddings(analyzer, people: int, face_size: int = 0) -> tuple[np.ndarray, list[str]]:
    """Embeddings of the LFW faces; with face_size, of the photo scaled so that the face's shorter side is
    face_size px (a small face in video)."""
    import cv2

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
            if face_size:
                f = face_size / min(det.width, det.height)
                rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
                small = [d for d in analyzer.detector.detect(rgb, min_score=0.0)
                         if abs((d.box[0] + d.box[2]) / 2 - (det.box[0] + det.box[2]) / 2 * f) < face_size / 2]
                if not small:
                    continue
                det = small[0]
            _, emb = analyzer.embed(rgb, [det])
            vectors.append(emb[0])
            labels.append(f"{folder.name}/{path.name}")
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
    ap.add_argument("--small", type=int, default=0, metavar="PX",
                    help="also: faces scaled to PX (shorter side) against the full-size faces of everybody "
                         "(`[tracker] verify_min_face_size`: a small face may only verify its track)")
    args = ap.parse_args()
    from agent.config import config_from_dict
    from agent.vision.recognizer import FaceAnalyzer

    analyzer = FaceAnalyzer(config_from_dict({}))
    X1, photos1 = lfw_embeddings(analyzer, args.people)
    y1 = [photo.split("/")[0] for photo in photos1]
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
    if args.small:
        Xs, photos = lfw_embeddings(analyzer, args.people, args.small)
        d = np.linalg.norm(Xs[:, None, :] - X1[None, :, :], axis=-1)
        person, person1 = np.array([p.split("/")[0] for p in photos]), np.array(y1)
        same_person = person[:, None] == person1[None, :]
        same_photo = np.array(photos)[:, None] == np.array(photos1)[None, :]
        diff_pairs, own_pairs = d[~same_person], d[same_person & ~same_photo]
        print(f"\n{len(Xs)} faces scaled to {args.small} px against the full-size photos of {args.people} people "
              "(the same photo excluded):")
        print(f"{'threshold':>9s} {'other person within t (pairs)':>30s} {'own person beyond t (pairs)':>28s}")
        for t in (0.35, 0.40, 0.45, 0.50):
            print(f"{t:9.2f} {np.mean(diff_pairs <= t) * 100:29.3f}% {np.mean(own_pairs > t) * 100:27.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
