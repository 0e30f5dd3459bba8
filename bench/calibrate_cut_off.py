"""How `[recognition] min_in_frame` was chosen: embeddings of faces cut off by the image's edge.

    python bench/calibrate_cut_off.py [--people 60]

A person walking into the picture shows part of a face first. Its aligned chip (dlib's, 150x150 with padding
0.25) is then partly outside the frame (black) and its embedding drifts from the person's; before the rule,
such a face voted "unknown" and an enrolled person coming in at the side raised an unknown_face event. Here
the first photo of N LFW people is cut at the left side in steps of 8 px; for each cut the face nearest the
photo's centre is detected, the share of its chip inside the image measured (`Aligner.in_frame`) and its
embedding compared with the uncut photo's. Prints, per share inside, the distances (median, 90th
percentile, share farther than 0.35), and the largest difference between `in_frame` and the share of
non-black pixels in the chip of a white image (its check).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import cv2
import dlib
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import config_from_dict  # noqa: E402
from agent.vision.align import PADDING  # noqa: E402
from agent.vision.embed import CHIP_SIZE  # noqa: E402
from agent.vision.recognizer import FaceAnalyzer  # noqa: E402
from bench import identity_clips as ic  # noqa: E402


def white_chip_share(analyzer: FaceAnalyzer, rgb: np.ndarray, box) -> float:
    dets = dlib.full_object_detections()
    dets.extend(analyzer.aligner.shapes(rgb, [box]))
    chip = dlib.get_face_chips(np.full_like(rgb, 255), dets, size=CHIP_SIZE, padding=PADDING)[0]
    return float((np.asarray(chip)[:, :, 0] > 0).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = FaceAnalyzer(config_from_dict({}, base_dir=Path(tmp)))
        rows, check = [], 0.0
        for person in tqdm(ic.lfw_people()[:args.people], desc="people"):
            rgb = cv2.cvtColor(cv2.imread(str(ic.lfw_photos(person)[0])), cv2.COLOR_BGR2RGB)
            centre = rgb.shape[1] / 2

            def nearest(image, shift, centre=centre, middle=rgb.shape[0] / 2):
                found = analyzer.detect(image)
                return min(found, key=lambda d: abs((d.x1 + d.x2) / 2 - (centre - shift))
                           + abs((d.y1 + d.y2) / 2 - middle)) if found else None

            face = nearest(rgb, 0)
            if face is None:
                continue
            uncut = analyzer.embed(rgb, [face])[1][0]
            for cut in range(0, 120, 8):
                image = np.ascontiguousarray(rgb[:, cut:])
                face = nearest(image, cut)
                if face is None:
                    continue
                share = float(analyzer.aligner.in_frame(image, [face.box])[0])
                check = max(check, abs(share - white_chip_share(analyzer, image, face.box)))
                rows.append((share, float(np.linalg.norm(analyzer.embed(image, [face])[1][0] - uncut))))
    bins = collections.defaultdict(list)
    for share, distance in rows:
        bins[round(share * 20) / 20].append(distance)
    print(f"in_frame against the white chip: largest difference {check:.3f}")
    print("share of the chip inside the image: distance to the uncut photo's embedding")
    for share in sorted(bins):
        d = np.asarray(bins[share])
        print(f"  {share:.2f}: n {len(d):4d}, median {np.median(d):.3f}, 90% {np.percentile(d, 90):.3f}, "
              f"farther than 0.35: {np.mean(d > 0.35):.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
