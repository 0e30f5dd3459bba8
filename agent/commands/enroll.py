"""`face-agent enroll [PERSON IMAGE...]`: enroll photos and (re)train the classifier when they changed."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from agent import enrollment_ops as ops
from agent.commands._common import config_of, fail, show_progress
from agent.enrollment_ops import InvalidNameError, validate_person_name
from agent.gallery import Gallery, PhotoResult
from agent.images import ImageError
from agent.logsafe import shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="enroll photos (all of faces/train/raw, or PERSON IMAGE...) and train",
                       description="Without arguments: process every photo under <faces>/train/raw/<person>/ "
                       "(only new photos are analysed) and retrain if anything changed. With PERSON IMAGE...: "
                       "copy the images into that person's folder first, as <original name>-<hash8>.<ext>. "
                       "Reports what is new, what was already known and what was refused.")
    p.add_argument("person", nargs="?", help="person to add photos for")
    p.add_argument("images", nargs="*", help="photos of PERSON")
    p.add_argument("--retrain", action="store_true", help="retrain even if nothing changed")
    p.add_argument("--json", action="store_true", help="print per-photo results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    gallery = Gallery(cfg)
    try:
        return _enroll(args, gallery)
    except KeyboardInterrupt:
        # every photo analysed so far is in the embedding cache: the next run goes on from there
        print(f"\nface-agent: enroll interrupted; the photos analysed so far are cached "
              f"({cfg.path('storage')}/embeddings.db) and the classifier was not changed: run `face-agent "
              "enroll` again to go on", file=sys.stderr)
        return 130
    finally:
        gallery.close()


def _enroll(args: argparse.Namespace, gallery: Gallery) -> int:
    done = ops.Enrolled()
    if args.person is not None:
        try:
            person = validate_person_name(args.person)
        except InvalidNameError as exc:
            return fail(str(exc), 2)
        if not args.images:
            return fail("give at least one IMAGE after PERSON", 2)
        try:  # analysed where they are first: only an enrollable photo is copied into the person's folder
            done = ops.enroll_files(gallery, person, [Path(p) for p in args.images], show_progress())
        except ImageError as exc:
            return fail(str(exc))
        for r in done.refused:
            print(shown(f"face-agent: {r.path}: not enrolled: {r.status}" + (f" ({r.reason})" if r.reason else "")),
                  file=sys.stderr)
    training = ops.retrain(gallery, force=args.retrain, progress=show_progress())
    results, refused = training.results, done.refused
    if args.person is not None:
        results = [r for r in results if r.person == person]
        for r in results:
            r.source = done.stored.get(r.path)
            r.cached = r.cached and r.sha256 not in done.analysed_now
        results = refused + results
    failed = 1 if refused else 0
    model = training.summary
    if args.json:
        print(json.dumps({"photos": [r.to_dict() for r in results], "people": model.counts,
                          "retrained": training.retrained, "warnings": gallery.warnings,
                          "cross_validation": model.cv_score}, ensure_ascii=False))
        return failed
    for r in results:  # refused photos (again: they stay refused until replaced), and notes on new ones
        if r in refused:
            continue  # said on stderr already
        if not r.ok or (r.reason and not r.cached):
            source = f" (from {r.source})" if r.source is not None and r.source.name != r.path.name else ""
            print(shown(f"{r.status:14s} {r.person}: {r.path.name}{source}" + (f": {r.reason}" if r.reason else "")))
    for warning in gallery.warnings:
        print(shown(f"warning: {warning}"))
    print(photo_summary(results))
    state = "retrained" if training.retrained else "up to date"
    print(f"classifier {state}: {len(model.counts)} people, {sum(model.counts.values())} photos"
          + (f", cross-validated balanced accuracy {model.cv_score:.3f}" if model.cv_score is not None else ""))
    if failed:
        print(f"face-agent: {len(refused)} of {len(args.images)} file(s) not enrolled", file=sys.stderr)
    return failed


def photo_summary(results: list[PhotoResult]) -> str:
    """`photos: 2 new (1 enrolled; 1 refused: 1 no_face), 10 already known (10 enrolled)`."""
    if not results:
        return "no photos found"

    def tally(group: list[PhotoResult]) -> str:
        refused = Counter(r.status for r in group if not r.ok)
        text = f"{sum(r.ok for r in group)} enrolled"
        if refused:
            text += f"; {sum(refused.values())} refused: " + ", ".join(f"{n} {s}" for s, n in sorted(refused.items()))
        return text

    new = [r for r in results if not r.cached]
    known = [r for r in results if r.cached]
    head = f"{len(new)} new ({tally(new)})" if new else "nothing new"
    return f"photos: {head}" + (f", {len(known)} already known ({tally(known)})" if known else "")
