#!/usr/bin/env python3
"""MTCNN detection speed per stage on the real photos (ONNX Runtime, CPU).

    PYTHONPATH=. python bench/bench_detect.py [--runs 7] [--threads 2] [--max-input-side 0] [--only TEXT]
                                              [--json FILE]

For every photo of ../shared/faces/dlib/examples/faces and ../shared/faces/face_recognition (examples and
tests/test_images, duplicates skipped) plus three 640x360 frames of the Hamilton clip, runs the detector once to
warm up, then `--runs` times, and prints the median milliseconds of the P-Net pyramid, R-Net, O-Net
(each with its pre/post-processing) and the whole call. The machine may be shared: the minimum total is
printed as well, as the least disturbed figure, and the median CPU time of the process per call (all
threads; close to the wall time x threads when the machine is quiet).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.images import ImageError, is_image_path, load_image  # noqa: E402
from agent.vision.backends import create_mtcnn_runner  # noqa: E402
from agent.vision.mtcnn import MTCNN  # noqa: E402

SHARED = ROOT.parent / "shared" / "faces"
FOLDERS = [SHARED / "dlib" / "examples" / "faces", SHARED / "face_recognition" / "examples",
           SHARED / "face_recognition" / "tests" / "test_images"]
CLIP = SHARED / "face_recognition" / "examples" / "short_hamilton_clip.mp4"
log = logging.getLogger("bench_detect")


def photos() -> list[tuple[str, np.ndarray]]:
    seen, out = set(), []
    for folder in FOLDERS:
        for path in sorted(p for p in folder.glob("*") if is_image_path(p)):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                out.append((f"{folder.parent.name}/{folder.name}/{path.name}"[-48:], load_image(path)))
            except ImageError as exc:
                log.warning("skipped %s", exc)
    return out


def hamilton_frames(indices: tuple[int, ...] = (30, 150, 260)) -> list[tuple[str, np.ndarray]]:
    """640x360 frames of the Hamilton clip: stage (busy), stage, audience."""
    import cv2

    cap = cv2.VideoCapture(str(CLIP))
    out = []
    for index in range(max(indices) + 1):
        ok, frame = cap.read()
        if not ok:
            break
        if index in indices:
            out.append((f"hamilton clip frame {index}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    cap.release()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per image (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--max-input-side", type=int, default=0)
    parser.add_argument("--min-face-size", type=int, default=20)
    parser.add_argument("--only", help="only images whose name contains this text (e.g. hamilton)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not SHARED.is_dir():
        print(f"{SHARED} not found", file=sys.stderr)
        return 1

    detector = MTCNN(create_mtcnn_runner("onnxruntime", threads=args.threads), min_face_size=args.min_face_size,
                     max_input_side=args.max_input_side)
    images = photos()
    images += hamilton_frames()
    if args.only:
        images = [(name, rgb) for name, rgb in images if args.only in name]
    rows = []
    for name, rgb in tqdm(images, desc="images", unit="img", leave=False):
        detector.detect(rgb)  # warm-up (first run of each P-Net shape)
        timings, cpu, faces = [], [], 0
        for _ in range(args.runs):
            start = time.process_time()
            faces = len(detector.detect(rgb))
            cpu.append((time.process_time() - start) * 1e3)
            timings.append(detector.last_timings)
        row = {"image": name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}", "faces": faces}
        for key in ("pnet", "rnet", "onet", "total"):
            row[key] = statistics.median(t[key] for t in timings)
        row["min_total"] = min(t["total"] for t in timings)
        row["cpu"] = statistics.median(cpu)
        rows.append(row)

    header = (f"{'image':48} {'size':>9} {'faces':>5} {'P-Net':>7} {'R-Net':>7} {'O-Net':>7} {'total':>7} "
              f"{'min':>7} {'cpu':>7}")
    print(f"MTCNN on ONNX Runtime, {args.threads} threads, median of {args.runs} runs, milliseconds")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['image']:48} {r['size']:>9} {r['faces']:>5} {r['pnet']:7.1f} {r['rnet']:7.1f} "
              f"{r['onet']:7.1f} {r['total']:7.1f} {r['min_total']:7.1f} {r['cpu']:7.1f}")
    print("-" * len(header))
    print(f"{'median over images':48} {'':>9} {'':>5} "
          + " ".join(f"{statistics.median(r[k] for r in rows):7.1f}" for k in ("pnet", "rnet", "onet", "total",
                                                                              "min_total", "cpu")))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
