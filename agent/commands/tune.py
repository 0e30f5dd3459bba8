"""`face-agent tune`: leave-one-out on the enrolled photos; suggests `[recognition] distance_threshold`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.commands._common import config_of, fail, show_progress
from agent.evaluation import EvalError
from agent.evaluation.report import format_tune, plot_report, save_last
from agent.evaluation.tune import tune_gallery
from agent.gallery import Gallery


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="check the enrolled photos and suggest a distance threshold",
        description="Each enrolled photo is compared with all the others (leave-one-out): genuine (same "
        "person) and impostor (other people) distance distributions give the suggested "
        "`[recognition] distance_threshold` for a target false-accept rate. Warns about people with too few "
        "photos, photos far from the rest of their person (mislabelled?) and people hard to tell apart. "
        "Changes nothing: copy the printed line into agent.toml. See docs/evaluation.md.")
    p.add_argument("--target-far", type=float, default=0.01, metavar="RATE",
                   help="false-accept rate the suggested threshold must not exceed (default 0.01)")
    p.add_argument("--json", action="store_true", help="print the whole analysis as JSON")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write distance histograms and rate curves (PNG)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    gallery = Gallery(cfg)
    try:
        report = tune_gallery(gallery, args.target_far, progress=show_progress())
        if args.plot is not None:
            plot_report(report, args.plot)
    except EvalError as exc:
        return fail(str(exc), 2)
    finally:
        gallery.close()
    saved = save_last(cfg, "tune", format_tune(report), report, report) if report["photos"] else None
    if not report["photos"] and not args.json:
        return fail(f"nobody is enrolled: put photos in {gallery.raw}/<person>/ and run `face-agent enroll`")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(format_tune(report) + (f"\n\nplot written to {args.plot}" if args.plot else "")
              + (f"\n\nreport saved to {saved / 'tune.txt'} (and .json; the web console's Evaluation reports)"
                 if saved is not None else ""))
    return 0 if report["photos"] else 1
