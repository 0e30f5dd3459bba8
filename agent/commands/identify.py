"""`face-agent identify IMAGE...`: every face in each image, with box and name or unknown (--json: landmarks too)."""

from __future__ import annotations

import argparse
import json
import sys

from agent.commands._common import config_of
from agent.gallery import Gallery
from agent.images import ImageError, load_image_scaled
from agent.logsafe import shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("identify", help="name the faces in images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    p.add_argument("--no-train", action="store_true",
                   help="use the saved classifier as it is, even if the enrolled photos changed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    gallery = Gallery(cfg)
    clf = gallery.load_classifier() if args.no_train else None
    if clf is None:
        clf, _, _ = gallery.ensure_trained(progress=False)
    analyzer = gallery.analyzer
    analyzer.classifier = clf
    failures = 0
    for path in args.images:
        try:
            rgb, scale = load_image_scaled(path, cfg.images.max_pixels, cfg.images.max_bytes,
                                           cfg.images.memory_mb)
        except ImageError as exc:
            failures += 1
            if args.json:
                print(json.dumps({"image": path, "error": str(exc)}, ensure_ascii=False))
            else:  # the message starts with the path already: `x.jpg: no such file`, not twice
                label = shown(path)  # the message starts with it already (escaped)
                print(f"face-agent: {label}: error: {shown(str(exc).removeprefix(f'{label}: '))}", file=sys.stderr)
            continue
        faces = analyzer.identify(rgb)
        height, width = (round(v / scale) for v in rgb.shape[:2])
        if args.json:  # coordinates in the picture's own pixels, also when it was decoded reduced
            print(json.dumps({"image": path, "width": width, "height": height, "decoded_scale": round(scale, 4),
                              "faces": [_in_picture(f.to_dict(), scale) for f in faces]}, ensure_ascii=False))
            continue
        print(f"{shown(path)}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
        for f in faces:
            x1, y1, x2, y2 = (int(round(v / scale)) for v in f.detection.box)
            p = f.prediction
            who = shown(p.name) if p and p.name else "unknown"
            why = ", ".join(x for x in (f"nearest {p.candidate}" if p and p.candidate else "",
                                        p.reason if p and not p.name else "") if x)
            who += f" ({why})" if why else ""
            dist = f"{p.distance:.3f}" if p and p.distance != float("inf") else "-"
            print(f"  {who:30s} confidence {p.confidence if p else 0:.2f}  distance {dist}  "
                  f"box (left {x1}, top {y1}, right {x2}, bottom {y2})  score {f.detection.score:.3f}")
    return 1 if failures else 0


def _in_picture(face: dict, scale: float) -> dict:
    """A face's coordinates (box, landmarks) from the decoded picture's pixels to the picture's own."""
    if scale == 1.0:
        return face
    face["box"] = {k: round(v / scale, 1) for k, v in face["box"].items()}
    for key in ("landmarks", "dlib_landmarks"):
        face[key] = [[round(x / scale, 1), round(y / scale, 1)] for x, y in face[key]]
    return face
