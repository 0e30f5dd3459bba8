"""Every face of every lfw-subset photo, embedded once with the real models and cached (bench/results/).

    python bench/openset_cache.py [--embedding onnxruntime|dlib] [--face-size PX ...]

Used by bench_openset.py and bench_gate.py; run on its own to fill the cache. Per photo: every face MTCNN finds
(down to the O-Net threshold, with its score, so the photo rule `[detector] min_score` can be applied afterwards),
dlib's
5 points, MTCNN's 5 landmarks, sharpness and the 128-d embedding. ~1,440 photos take a few minutes on two
cores; the cache is keyed by the embedder and the detector settings.

`face_size`: the photos as a camera a few metres away sees them (`camera_view`): each photo scaled so that its
principal face (found at full size) is about that many pixels, a little optical blur, JPEG quality 60.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
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


CAMERA_BLUR = 0.6  # sigma (px, after scaling) of the optical blur of a camera view
CAMERA_JPEG = 60  # JPEG quality of a camera view


def cache_path(backend: str, cfg, face_size: int | None = None) -> Path:
    d = cfg.detector
    key = [backend, d.thresholds, d.nms_thresholds, d.min_face_size, d.scale_factor, "mirror"]
    if face_size:
        key += [face_size, CAMERA_BLUR, CAMERA_JPEG]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:10]
    return RESULTS / f"lfw_faces_{backend}_{digest}{f'_{face_size}px' if face_size else ''}.npz"


def camera_view(rgb: np.ndarray, scale: float) -> np.ndarray:
    """The photo as a camera farther away sees it: scaled by `scale` (area interpolation), blurred a little
    (sigma CAMERA_BLUR px) and JPEG-compressed at quality CAMERA_JPEG."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), CAMERA_BLUR)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, CAMERA_JPEG])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def principal_sides(data: dict, min_score: float, dominance: float) -> np.ndarray:
    """(n_photos,) the shorter side (px) of each photo's principal face in a full-size cache (nan: none)."""
    from agent.vision.mtcnn import Detection
    from agent.vision.recognizer import principal_face

    sides = np.full(len(data["photo_file"]), np.nan)
    for i in range(len(sides)):
        idx = np.flatnonzero((data["face_photo"] == i) & (data["score"] >= min_score))
        dets = [Detection(*data["box"][k], float(data["score"][k]), data["landmarks"][k]) for k in idx]
        k = principal_face(dets, *(int(v) for v in data["photo_size"][i]), dominance)
        if k is not None:
            sides[i] = min(dets[k].width, dets[k].height)
    return sides


def load_or_embed(backend: str = "onnxruntime", root: Path = LFW, work: Path | None = None,
                  face_size: int | None = None) -> dict:
    """The cached faces of lfw-subset (embedding them first if needed) as a dict of arrays:
    photo_person, photo_file, photo_size (W, H); face_photo (index into the photos), box (x1, y1, x2, y2),
    score, landmarks (MTCNN, 5x2), dlib5 (5x2), sharpness, embedding (128) of the aligned chip and
    embedding_mirror (128) of its horizontal mirror (the flip_embeddings setting averages the two).
    With `face_size`, every photo is first seen as a camera would see its principal face at about that size
    (camera_view; photo_size is then the scaled size)."""
    work = work or RESULTS / "work"
    cfg = config_from_dict({"paths": {"storage": str(work / "storage"), "engines": str(work / "engines")},
                            "embedding": {"backend": backend}}, base_dir=ROOT, env={})
    path = cache_path(backend, cfg, face_size)
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    scales = None
    if face_size:
        full = load_or_embed(backend, root, work)
        sides = principal_sides(full, cfg.detector.min_score, cfg.enrollment.dominance)
        scales = face_size / np.where(np.isnan(sides), np.nanmedian(sides), sides)
    analyzer = FaceAnalyzer(cfg)
    people = lfw_people(root)
    photos = [(p, f) for p, files in people.items() for f in files]
    out: dict[str, list] = {k: [] for k in ("photo_person", "photo_file", "photo_size", "face_photo", "box",
                                            "score", "landmarks", "dlib5", "sharpness", "embedding",
                                            "embedding_mirror")}
    desc = f"embedding lfw-subset{f' at ~{face_size} px' if face_size else ''}"
    for i, (person, file) in enumerate(tqdm(photos, desc=desc, unit="photo")):
        rgb = load_image(file)
        if scales is not None:
            rgb = camera_view(rgb, float(scales[i]))
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
    ap.add_argument("--face-size", type=int, nargs="*", default=[],
                    help="also the camera views with the principal face about this many px")
    args = ap.parse_args()
    for face_size in [None, *args.face_size]:
        data = load_or_embed(args.embedding, face_size=face_size)
        print(f"{face_size or 'full'}: {len(data['photo_file'])} photos, {len(data['face_photo'])} faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
