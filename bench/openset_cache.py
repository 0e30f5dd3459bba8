"""Every face of every lfw-subset photo, embedded once with the real models and cached (bench/results/).

    python bench/openset_cache.py [--embedding onnxruntime|dlib]

Used by bench_openset.py; run on its own to fill the cache. Per photo: every face MTCNN finds (down to the
O-Net threshold, with its score, so the photo rule `[detector] min_score` can be applied afterwards), dlib's
5 points, MTCNN's 5 landmarks, sharpness and the 128-d embedding. ~1,440 photos take a few minutes on two
cores; the cache is keyed by the embedder and the detector settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import config_from_dict  # noqa: E402
from agent.images import load_image  # noqa: E402
from agent.vision.recognizer import FaceAnalyzer  # noqa: E402
from agent.vision.tracker import face_sharpness  # noqa: E402

LFW = ROOT.parent / "shared" / "faces" / "lfw-subset"
RESULTS = ROOT / "bench" / "results"


def lfw_people(root: Path = LFW) -> dict[str, list[Path]]:
    """{person: [photos in name order]} for every person folder."""
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(root.iterdir()) if d.is_dir()}


def cache_path(backend: str, cfg) -> Path:
    d = cfg.detector
    key = json.dumps([backend, d.thresholds, d.nms_thresholds, d.min_face_size, d.scale_factor, "mirror"])
    return RESULTS / f"lfw_faces_{backend}_{hashlib.sha256(key.encode()).hexdigest()[:10]}.npz"


def load_or_embed(backend: str = "onnxruntime", root: Path = LFW, work: Path | None = None) -> dict:
    """The cached faces of lfw-subset (embedding them first if needed) as a dict of arrays:
    photo_person, photo_file, photo_size (W, H); face_photo (index into the photos), box (x1, y1, x2, y2),
    score, landmarks (MTCNN, 5x2), dlib5 (5x2), sharpness, embedding (128) of the aligned chip and
    embedding_mirror (128) of its horizontal mirror (the flip_embeddings setting averages the two)."""
    work = work or RESULTS / "work"
    cfg = config_from_dict({"paths": {"storage": str(work / "storage"), "engines": str(work / "engines")},
                            "embedding": {"backend": backend}}, base_dir=ROOT, env={})
    path = cache_path(backend, cfg)
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    analyzer = FaceAnalyzer(cfg)
    people = lfw_people(root)
    photos = [(p, f) for p, files in people.items() for f in files]
    out: dict[str, list] = {k: [] for k in ("photo_person", "photo_file", "photo_size", "face_photo", "box",
                                            "score", "landmarks", "dlib5", "sharpness", "embedding",
                                            "embedding_mirror")}
    for i, (person, file) in enumerate(tqdm(photos, desc="embedding lfw-subset", unit="photo")):
        rgb = load_image(file)
        out["photo_person"].append(person)
        out["photo_file"].append(file.name)
        out["photo_size"].append((rgb.shape[1], rgb.shape[0]))
        dets = analyzer.detector.detect(rgb, min_score=0.0)
        if not dets:
            continue
        lms = analyzer.aligner.landmarks(rgb, [d.box for d in dets])
        chips = analyzer.aligner.chips(rgb, [d.box for d in dets])
        emb = analyzer.embedder.embed(chips)
        mirror = analyzer.embedder.embed(np.ascontiguousarray(chips[:, :, ::-1]))
        for d, lm, e, m in zip(dets, lms, emb, mirror):
            out["face_photo"].append(i)
            out["box"].append(d.box)
            out["score"].append(d.score)
            out["landmarks"].append(np.asarray(d.landmarks, dtype=np.float32))
            out["dlib5"].append(lm)
            out["sharpness"].append(face_sharpness(rgb, d.box))
            out["embedding"].append(e)
            out["embedding_mirror"].append(m)
    arrays = {k: np.asarray(v) for k, v in out.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding", default="onnxruntime", choices=("onnxruntime", "dlib"))
    args = ap.parse_args()
    data = load_or_embed(args.embedding)
    print(f"{len(data['photo_file'])} photos, {len(data['face_photo'])} faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
