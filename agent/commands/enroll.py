"""`face-agent enroll [PERSON IMAGE...]`: enroll photos and (re)train the classifier when they changed."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from agent.commands._common import config_of, fail, show_progress
from agent.gallery import Gallery, InvalidNameError, validate_person_name
from agent.vision.images import ImageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="enroll photos (all of faces/train/raw, or PERSON IMAGE...) and train",
                       description="Without arguments: process every photo under <faces>/train/raw/<person>/ "
                       "(only new photos are analysed) and retrain if anything changed. With PERSON IMAGE...: "
                       "copy the images into that person's folder first.")
    p.add_argument("person", nargs="?", help="person to add photos for")
    p.add_argument("images", nargs="*", help="photos of PERSON")
    p.add_argument("--retrain", action="store_true", help="retrain even if nothing changed")
    p.add_argument("--json", action="store_true", help="print per-photo results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    gallery = Gallery(cfg)
    if args.person is not None:
        try:
            validate_person_name(args.person)
        except InvalidNameError as exc:
            return fail(str(exc), 2)
        if not args.images:
            return fail("give at least one IMAGE after PERSON", 2)
        try:
            gallery.add_photos(args.person, args.images)
        except ImageError as exc:
            return fail(str(exc))
    clf, results, retrained = gallery.ensure_trained(force=args.retrain, progress=show_progress())
    if args.person is not None:
        results = [r for r in results if r.person == validate_person_name(args.person)]
    if args.json:
        print(json.dumps({"photos": [r.to_dict() for r in results], "people": clf.meta.get("counts", {}),
                          "retrained": retrained, "warnings": gallery.warnings,
                          "cross_validation": clf.meta.get("cross_validation", {}).get("balanced_accuracy")},
                         ensure_ascii=False))
        return 0
    for r in results:
        if not r.ok or r.reason:
            print(f"{r.status:14s} {r.person}: {r.path.name}" + (f" ({r.reason})" if r.reason else ""))
    for warning in gallery.warnings:
        print(f"warning: {warning}")
    tally = Counter(r.status for r in results)
    print("photos: " + ", ".join(f"{n} {s}" for s, n in sorted(tally.items())) if tally else "no photos found")
    counts = clf.meta.get("counts", {})
    cv = clf.meta.get("cross_validation", {})
    state = "retrained" if retrained else "up to date"
    print(f"classifier {state}: {len(counts)} people, {sum(counts.values())} photos"
          + (f", cross-validated balanced accuracy {cv['balanced_accuracy']:.3f}"
             if cv.get("balanced_accuracy") is not None else ""))
    return 0
