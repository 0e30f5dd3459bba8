"""`face-agent eval --detections XML`: detection recall and precision against a dlib image-dataset XML."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.config import Config
from agent.evaluation import EvalError
from agent.evaluation.metrics import ratio
from agent.images import ImageError, load_image_scaled
from agent.vision.recognizer import FaceAnalyzer
from agent.vision.tracker import iou_matrix

log = logging.getLogger(__name__)



def read_dlib_xml(path: Path) -> list[dict]:
    """[{"file": Path, "boxes": [(x1, y1, x2, y2)], "ignore": [...]}] from an imglab XML; image paths are
    relative to the XML's folder; a box is (left, top, left + width, top + height), x2/y2 exclusive."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise EvalError(f"{path}: no such file") from None
    except (ET.ParseError, OSError) as exc:
        raise EvalError(f"{path}: not a readable XML file ({exc})") from None
    images = []
    for image in root.iter("image"):
        name = image.get("file")
        if not name:
            raise EvalError(f"{path}: an <image> without a file attribute")
        entry = {"file": (path.parent / name), "boxes": [], "ignore": []}
        for box in image.iter("box"):
            try:
                left, top = float(box.get("left")), float(box.get("top"))
                width, height = float(box.get("width")), float(box.get("height"))
            except (TypeError, ValueError):
                raise EvalError(f"{path}: image {name}: a <box> needs numeric top, left, width and height "
                                f"(got {dict(box.attrib)})") from None
            kind = "ignore" if box.get("ignore", "0").strip() in ("1", "true") else "boxes"
            entry[kind].append((left, top, left + width, top + height))
        images.append(entry)
    if not images:
        raise EvalError(f"{path}: no <image> entries")
    return images

def match_detections(dets: list[tuple[tuple, float]], truth: list[tuple], ignore: list[tuple],
                     min_iou: float = 0.5) -> dict:
    """Greedy by score: each detection (box, score), best first, takes the unmatched ground-truth box it
    overlaps most if IoU >= min_iou; else it is ignored when it overlaps an ignore box (IoU >= min_iou or
    half its area inside it), else it is a false positive."""
    order = sorted(range(len(dets)), key=lambda k: -dets[k][1])
    boxes = np.array([dets[k][0] for k in order], dtype=np.float64).reshape(-1, 4)
    iou = iou_matrix(boxes, np.array(truth, dtype=np.float64).reshape(-1, 4))
    free = np.ones(len(truth), dtype=bool)
    out = {"matches": [], "false_positives": [], "ignored": 0}
    for r, k in enumerate(order):
        cand = np.where(free, iou[r], -1.0) if len(truth) else np.array([])
        best = int(np.argmax(cand)) if len(cand) else -1
        if best >= 0 and cand[best] >= min_iou:
            free[best] = False
            out["matches"].append({"box": _box(dets[k][0]), "score": round(float(dets[k][1]), 4),
                                   "truth": _box(truth[best]), "iou": round(float(cand[best]), 4)})
        elif _in_ignore(dets[k][0], ignore, min_iou):
            out["ignored"] += 1
        else:
            out["false_positives"].append({"box": _box(dets[k][0]), "score": round(float(dets[k][1]), 4)})
    out["missed"] = [_box(t) for t, f in zip(truth, free) if f]
    return out

def _in_ignore(box: tuple, ignore: list[tuple], min_iou: float) -> bool:
    if not ignore:
        return False
    b = np.array([box], dtype=np.float64)
    ig = np.array(ignore, dtype=np.float64)
    if (iou_matrix(b, ig) >= min_iou).any():
        return True
    w = np.clip(np.minimum(b[0, 2], ig[:, 2]) - np.maximum(b[0, 0], ig[:, 0]), 0, None)
    h = np.clip(np.minimum(b[0, 3], ig[:, 3]) - np.maximum(b[0, 1], ig[:, 1]), 0, None)
    area = max((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]), 1e-9)
    return bool(((w * h) / area >= 0.5).any())

def _box(b) -> list[float]:
    return [round(float(v), 1) for v in b]

def evaluate_detections(xml_path: Path, analyzer: FaceAnalyzer, cfg: Config, min_iou: float = 0.5,
                        progress: bool = False) -> dict:
    """Precision and recall of the detector against the XML's boxes, at IoU >= min_iou.

    The detector's own box is compared with the ground truth: dlib's boxes are square (brows to chin),
    MTCNN's a little taller (hairline to chin); a matched pair still overlaps by IoU ~0.6 or more, so no
    box is reshaped (as in tests/test_mtcnn.py)."""
    if not 0.0 < min_iou <= 1.0:
        raise EvalError(f"--iou must be in (0, 1], got {min_iou}")
    images = read_dlib_xml(xml_path)
    per_image, errors = [], []
    for entry in tqdm(images, desc="detecting", unit="image", disable=not progress, leave=False):
        try:
            rgb, scale = load_image_scaled(entry["file"], cfg.images.max_pixels, cfg.images.max_bytes,
                                           cfg.images.memory_mb)
        except ImageError as exc:
            errors.append({"file": str(entry["file"]), "error": str(exc)})
            continue
        dets = [(tuple(v / scale for v in d.box), d.score) for d in analyzer.detect(rgb)]
        m = match_detections(dets, entry["boxes"], entry["ignore"], min_iou)
        per_image.append({"file": str(entry["file"]), "faces": len(entry["boxes"]), "detections": len(dets),
                          "true_positives": len(m["matches"]), **m})
    tp = sum(len(p["matches"]) for p in per_image)
    fp = sum(len(p["false_positives"]) for p in per_image)
    faces = sum(p["faces"] for p in per_image)
    ious = [m["iou"] for p in per_image for m in p["matches"]]
    return {"command": "eval --detections", "xml": str(xml_path), "min_iou": min_iou, "images": len(per_image),
            "faces": faces, "true_positives": tp, "false_positives": fp, "missed": faces - tp,
            "ignored": sum(p["ignored"] for p in per_image),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, faces),
            "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
            "per_image": per_image, "errors": errors}
