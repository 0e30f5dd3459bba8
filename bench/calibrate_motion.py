"""How `[tracker] motion_threshold` was chosen: the motion gate's measure on still scenes and on faces coming in.

    python bench/calibrate_motion.py [--people 60] [--pairs 200]

The gate (agent/vision/motion.py) skips a scheduled full detection on a camera with no live track when no
8x8 px cell of the frame changed by more than the threshold since the last full detection. Too high and a face
that came in is not looked for until the recheck (`motion_recheck_every` frames); too low and noise keeps the
detector running (it costs only CPU). This prints the measure (the largest cell change, grey levels) for:
- still scenes: two frames of one scene with independent sensor noise (Gaussian, sigma 2/4/8 grey levels, a
  dim camera at 8) and JPEG compression (quality 70) on each, on textured backgrounds and on the background of
  the Hamilton clip's first frame;
- a face coming in: the central 110x110 px of LFW photos (the face, some hair and background) scaled to a
  side of 20, 24, 32 and 48 px (the detector's smallest face is 20 px) and pasted at random places into the
  same noisy, compressed scenes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.vision.motion import largest_change, motion_picture  # noqa: E402
from bench import identity_clips as ic  # noqa: E402

NOISE = (2.0, 4.0, 8.0)
SIDES = (20, 24, 32, 48)


def camera(scene: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The scene as a camera delivers it: sensor noise, then JPEG (quality 70)."""
    noisy = np.clip(scene.astype(np.float32) + rng.normal(0, sigma, scene.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)


def scenes() -> list[np.ndarray]:
    out = [ic.background(seed) for seed in range(1, 6)]
    cap = cv2.VideoCapture(str(ic.HAMILTON))
    ok, frame = cap.read()
    cap.release()
    if ok:
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return out


def faces(people: int) -> list[np.ndarray]:
    out = []
    for person in ic.lfw_people()[:people]:
        rgb = cv2.cvtColor(cv2.imread(str(ic.lfw_photos(person)[0])), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        out.append(rgb[h // 2 - 55:h // 2 + 55, w // 2 - 55:w // 2 + 55])
    return out


def summary(values: list[float]) -> str:
    v = np.asarray(values)
    return (f"n {len(v)}: min {v.min():.1f}, 1% {np.percentile(v, 1):.1f}, median {np.median(v):.1f}, "
            f"99% {np.percentile(v, 99):.1f}, max {v.max():.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=60, help="LFW people whose faces come in")
    ap.add_argument("--pairs", type=int, default=200, help="still frame pairs per scene and noise level")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    backgrounds, heads = scenes(), faces(args.people)
    still: dict[float, list[float]] = {s: [] for s in NOISE}
    entering: dict[tuple[float, int], list[float]] = {(s, side): [] for s in NOISE for side in SIDES}
    for sigma in NOISE:
        for scene in tqdm(backgrounds, desc=f"noise {sigma:g}"):
            h, w = scene.shape[:2]
            for _ in range(args.pairs):
                reference = motion_picture(camera(scene, sigma, rng))
                still[sigma].append(largest_change(reference, motion_picture(camera(scene, sigma, rng))))
            for head in heads:
                reference = motion_picture(camera(scene, sigma, rng))
                for side in SIDES:
                    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                    frame = scene.copy()
                    frame[y:y + side, x:x + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
                    entering[(sigma, side)].append(largest_change(reference, motion_picture(camera(frame, sigma, rng))))
    print("largest 8x8 px cell change (grey levels) between the reference frame and a later frame")
    for sigma in NOISE:
        print(f"still scene, noise sigma {sigma:g}: {summary(still[sigma])}")
    for sigma in NOISE:
        for side in SIDES:
            print(f"a {side} px face came in, noise sigma {sigma:g}: {summary(entering[(sigma, side)])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
