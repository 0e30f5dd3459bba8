"""Two checks of the montage's names (issue 29), beside bench_video.py's table:

    python bench/montage_probe.py --starts 82 92 102 112 122 132 142 [--set tracker.near_miss_embed_every=5]
    python bench/montage_probe.py --per-frame

--starts: Lin-Manuel's shot (one photo enrolled; his first faces after the cut lie just outside his gate) taken
from other frames of his Hamilton shot (82 is the montage's own), the rest of the montage as it is. The agent runs
on each montage (every frame, as bench_video.py) and the named face-frames are counted, Lin-Manuel's and all, with
the wrong ones: does a setting help from every start, or only by the luck of which frames it happens to embed?

--per-frame: the agent's gate on every face MTCNN finds in every frame of the montage, with no tracking and no
votes (a per-frame loop with the agent's open-set rule and quality limits), scored as bench_video.py scores: how
many face-frames a rule that names each frame alone can name at the shipped gate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_video as bv  # noqa: E402
import identity_clips as ic  # noqa: E402

LIN_FIRST = 82  # the frame of the Hamilton clip the montage's Lin-Manuel shot starts from

# the agent's gate on every detection of every frame (the code before it: bench_video.AGENT_SETUP's inputs)
PER_FRAME = r'''
import json, os, subprocess, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
clip, people, work, overrides = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[5])
''' + bv.AGENT_SETUP + r'''
import cv2, numpy as np
from agent.config import config_from_dict
from agent.vision.classifier import Classifier
from agent.vision.recognizer import FaceAnalyzer, face_sides
cfg = config_from_dict(settings, base_dir=work)
classifier = Classifier.load(cfg.path("svm"), cfg.recognition)
analyzer = FaceAnalyzer(cfg, classifier)
cap = cv2.VideoCapture(clip)
frames = 0
with open(work / "frames.jsonl", "w") as out:
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        found = analyzer.detector.detect(rgb)
        shown = []
        if found:
            _, embeddings = analyzer.embed(rgb, found)
            reasons = analyzer.quality(rgb, found)
            for d, p, r in zip(found, classifier.predict(embeddings, face_sides(found)), reasons):
                name = None if r else p.name
                shown.append({"box": {"left": d.x1, "top": d.y1, "right": d.x2, "bottom": d.y2},
                              "status": "named" if name else "unknown", "name": name})
        out.write(json.dumps({"frame": frames, "faces": shown}) + "\n")
        frames += 1
print(json.dumps({"frames": frames}))
'''


def montage(lin_first: int = LIN_FIRST) -> ic.Clip:
    """The montage, with Lin-Manuel's shot taken from frame `lin_first` of the Hamilton clip."""
    enrolled, strangers = ic.montage_cast()
    clip = ic.montage_clip(list(enrolled), strangers)
    clip.footage = [ic.Footage(f.start, f.end, f.path, lin_first) if (f.path, f.first) == (ic.HAMILTON, LIN_FIRST)
                    else f for f in clip.footage]
    return clip


def lin_named(clip: ic.Clip, shown: dict) -> tuple[int, int]:
    """(frames, frames named lin_manuel) of the montage's Lin-Manuel shot."""
    lin = next(a for a in clip.actors if a.label == "lin_manuel")
    named = sum(any(f["status"] == "named" and f["name"] == lin.label and ic.owner(clip, k, f) is lin
                    for f in shown.get(k, [])) for k in range(lin.start, lin.end))
    return lin.end - lin.start, named


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--starts", nargs="+", type=int, metavar="FRAME",
                      help="Hamilton frames (82-146) to start Lin-Manuel's shot from")
    mode.add_argument("--per-frame", action="store_true", help="the gate on every face of every frame, no votes")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=JSON", help="agent settings to override")
    args = ap.parse_args()
    if args.starts and not all(0 <= s <= 146 for s in args.starts):
        ap.error("--starts: Hamilton frames 0-146 (Lin-Manuel's shot is 82-210 and the montage needs 65 frames)")
    overrides = json.dumps({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    people = json.dumps({k: [str(p) for p in v] for k, v in ic.montage_enrollment().items()})
    totals = {"named (all)": 0, "named after 10 frames": 0, "wrong": 0, "lin_manuel": 0, "lin frames": 0}
    with tempfile.TemporaryDirectory(prefix="montage-probe-") as tmp:
        for first in tqdm(args.starts or [LIN_FIRST], desc="montages", unit="clip"):
            clip, work = montage(first), Path(tmp) / str(first)
            work.mkdir()
            video = ic.render(clip, work / "montage.mp4")
            code, rest = (PER_FRAME, []) if args.per_frame else (bv.AGENT, ["1"])
            bv.run(code, str(video), people, str(work), str(bv.ROOT), overrides, *rest)
            shown = ic.read_frames(work / "frames.jsonl")
            q = ic.score(clip, shown)
            frames, lin = lin_named(clip, shown)
            tqdm.write(f"Lin-Manuel from frame {first}: named {lin}/{frames}; montage named (all) {q['named_all']}, "
                       f"after each appearance's first 10 frames {q['named_right']}, wrong {q['wrong_name']}")
            for key, value in (("named (all)", q["named_all"]), ("named after 10 frames", q["named_right"]),
                               ("wrong", q["wrong_name"]), ("lin_manuel", lin), ("lin frames", frames)):
                totals[key] += value
    print("total:", ", ".join(f"{k} {v}" for k, v in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
