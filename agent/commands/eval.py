"""`face-agent eval DIR` / `--detections XML`: how well recognition and detection work on your own photos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.commands._common import config_of, fail, show_progress
from agent.evaluation import EvalError
from agent.evaluation.detections import evaluate_detections
from agent.evaluation.folders import evaluate_folder
from agent.evaluation.report import format_detections, format_eval, plot_report, save_last
from agent.vision.recognizer import FaceAnalyzer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="measure recognition (DIR of <person>/<photos>) or detection (--detections XML)",
        description="DIR holds one folder of photos per person. Each person's photos are split at random into "
        "enrollment photos and queries, the real classifier is trained on the enrollment side, and the report "
        "gives closed-set accuracy, genuine/impostor distances, the equal-error point, the threshold for a "
        "target false-accept rate and the results at the configured threshold. Photos are embedded once into "
        "a cache of their own (never the live gallery). See docs/evaluation.md.")
    p.add_argument("dir", nargs="?", type=Path, help="folder of <person>/<photos>")
    p.add_argument("--enroll-k", type=int, default=3, metavar="K",
                   help="enrollment photos per person (default 3; a person always keeps one photo as a query)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="random splits (seeds SEED..SEED+N-1), results pooled (default 1)")
    p.add_argument("--strangers", type=int, default=0, metavar="N",
                   help="people picked at random per split and kept out of enrollment (default 0)")
    p.add_argument("--stranger", action="append", default=[], metavar="NAME",
                   help="keep this person out of enrollment (repeatable)")
    p.add_argument("--target-far", type=float, default=0.01, metavar="RATE",
                   help="false-accept rate the chosen threshold must not exceed (default 0.01)")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="embedding cache folder (default <[paths] storage>/eval)")
    p.add_argument("--detections", type=Path, metavar="XML",
                   help="dlib image-dataset XML: detector precision/recall against its boxes")
    p.add_argument("--iou", type=float, default=0.5, help="--detections: IoU for a match (default 0.5)")
    p.add_argument("--json", action="store_true",
                   help='print everything as one JSON object {"recognition": ..., "detections": ...}')
    p.add_argument("--plot", type=Path, metavar="PNG",
                   help="write distance histograms and rate curves to this PNG (needs matplotlib)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dir is None and args.detections is None:
        return fail("give DIR (photos in <person>/ folders) and/or --detections XML", 2)
    if args.plot is not None and args.dir is None:
        return fail("--plot needs DIR (it draws the recognition distances)", 2)
    if args.dir is not None and not args.dir.is_dir():
        return fail(f"{args.dir}: not a folder (expected {args.dir}/<person>/<photos>)", 2)
    cfg = config_of(args)
    analyzer = FaceAnalyzer(cfg)
    recognition = detections = None
    try:
        if args.dir is not None:
            recognition = evaluate_folder(
                args.dir, cfg, analyzer, cache_dir=args.cache, enroll_k=args.enroll_k, seed=args.seed,
                repeats=args.repeats, strangers=args.strangers, stranger_names=args.stranger,
                target_far=args.target_far, progress=show_progress())
            if args.plot is not None:
                plot_report(recognition, args.plot)
        if args.detections is not None:
            detections = evaluate_detections(args.detections, analyzer, cfg, args.iou, progress=show_progress())
    except EvalError as exc:
        return fail(str(exc), 2)
    parts = [format_eval(recognition)] if recognition else []
    parts += [format_detections(detections)] if detections else []
    saved = save_last(cfg, "eval", "\n\n".join(parts), {"recognition": recognition, "detections": detections},
                      recognition)
    if args.json:
        print(json.dumps({"recognition": recognition, "detections": detections}, ensure_ascii=False))
    else:
        if args.plot is not None:
            parts.append(f"plot written to {args.plot}")
        if saved is not None:
            parts.append(f"report saved to {saved / 'eval.txt'} (and .json; the web console's Evaluation reports)")
        print("\n\n".join(parts))
    return 1 if detections and detections["errors"] else 0
