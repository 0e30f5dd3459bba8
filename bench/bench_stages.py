"""Per-stage timings of the still-image pipeline on the shared photos: detect -> align -> embed -> classify.

    python bench/bench_stages.py [--runs 5] [--threads 2] [--embedding dlib|onnxruntime]

Prints one row per photo (median milliseconds over --runs runs after one warm-up run) and a summary.
MTCNN's own split (P-Net pyramid, R-Net, O-Net) comes from `MTCNN.last_timings`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import config_from_dict  # noqa: E402
from agent.images import load_image  # noqa: E402
from agent.vision.classifier import train  # noqa: E402
from agent.vision.recognizer import FaceAnalyzer  # noqa: E402

SHARED = ROOT.parent / "shared" / "faces"
PHOTOS = [
    *sorted((SHARED / "dlib" / "examples" / "faces").glob("*.jpg")),
    SHARED / "face_recognition" / "tests" / "test_images" / "obama.jpg",
    SHARED / "face_recognition" / "examples" / "two_people.jpg",
    *[SHARED / "face_recognition" / "examples" / f"obama-{r}.jpg" for r in ("240p", "480p", "720p", "1080p")],
    SHARED / "facenet-pytorch" / "data" / "multiface.jpg",
    SHARED / "CompreFace" / "embedding-calculator" / "sample_images" / "000_5.jpg",
]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--embedding", default="dlib")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    cfg = config_from_dict({"detector": {"backend": "onnxruntime", "threads": args.threads},
                            "embedding": {"backend": args.embedding}}, base_dir=tmp)
    analyzer = FaceAnalyzer(cfg)
    rng = np.random.default_rng(0)
    fake_people = rng.normal(size=(20, 128)).astype(np.float32) * 0.1
    analyzer.classifier = train(fake_people, [f"p{i % 5}" for i in range(20)], cfg.recognition)
    header = (f"{'photo':28s} {'size':>10s} {'faces':>5s} {'detect':>7s} {'pnet':>6s} {'rnet':>6s} {'onet':>6s} "
              f"{'align':>6s} {'embed':>7s} {'/face':>6s} {'class.':>6s} {'total':>7s}")
    print(f"median ms over {args.runs} runs; ONNX Runtime {args.threads} threads; embedding {args.embedding}")
    print(header)
    print("-" * len(header))
    per_face, totals, detect_all = [], [], []
    for path in PHOTOS:
        if not path.is_file():
            continue
        rgb = load_image(path)
        rows: dict[str, list[float]] = {k: [] for k in ("detect", "pnet", "rnet", "onet", "align", "embed",
                                                          "classify", "total")}
        faces = 0
        for run in range(args.runs + 1):
            t0 = time.perf_counter()
            dets = analyzer.detect(rgb)
            t1 = time.perf_counter()
            boxes = [d.box for d in dets]
            chips = analyzer.aligner.chips(rgb, boxes)
            t2 = time.perf_counter()
            emb = analyzer.embedder.embed(chips) if len(chips) else np.zeros((0, 128), np.float32)
            t3 = time.perf_counter()
            analyzer.classifier.predict(emb)
            t4 = time.perf_counter()
            if run == 0:
                continue  # warm-up
            faces = len(dets)
            timings = analyzer.detector.last_timings
            rows["detect"].append(ms(t1 - t0))
            for stage in ("pnet", "rnet", "onet"):
                rows[stage].append(timings.get(stage, 0.0))
            rows["align"].append(ms(t2 - t1))
            rows["embed"].append(ms(t3 - t2))
            rows["classify"].append(ms(t4 - t3))
            rows["total"].append(ms(t4 - t0))
        med = {k: statistics.median(v) for k, v in rows.items()}
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"
        each = med["embed"] / faces if faces else 0.0
        if faces:
            per_face.append(each)
        totals.append(med["total"])
        detect_all.append(med["detect"])
        print(f"{path.name[:28]:28s} {size:>10s} {faces:5d} {med['detect']:7.1f} {med['pnet']:6.1f} "
              f"{med['rnet']:6.1f} {med['onet']:6.1f} {med['align']:6.1f} {med['embed']:7.1f} {each:6.1f} "
              f"{med['classify']:6.2f} {med['total']:7.1f}")
    print("-" * len(header))
    print(f"embedding per face: median {statistics.median(per_face):.1f} ms; "
          f"detection per photo: median {statistics.median(detect_all):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
