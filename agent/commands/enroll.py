"""`face-agent enroll [PERSON IMAGE...]`: enroll photos and (re)train the classifier when they changed."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from agent.commands._common import config_of, fail, show_progress
from agent.gallery import Gallery, InvalidNameError, PhotoResult, validate_person_name
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
    refused: list[PhotoResult] = []
    copied_from: dict[Path, Path] = {}
    analysed_now: set[str] = set()  # photos this command analysed first (new, though cached by now)
    if args.person is not None:
        try:
            person = validate_person_name(args.person)
        except InvalidNameError as exc:
            return fail(str(exc), 2)
        if not args.images:
            return fail("give at least one IMAGE after PERSON", 2)
        # analysed where they are first: only an enrollable photo is copied into the person's folder
        usable: list[Path] = []
        for src in tqdm(args.images, desc="analysing", unit="photo", disable=not show_progress(), leave=False):
            result, _ = gallery.process_photo(person, Path(src))
            if not result.cached:
                analysed_now.add(result.sha256)
            if result.ok:
                usable.append(Path(src))
            else:
                refused.append(result)
        for r in refused:
            print(shown(f"face-agent: {r.path}: not enrolled: {r.status}" + (f" ({r.reason})" if r.reason else "")),
                  file=sys.stderr)
        try:
            stored = gallery.add_photos(person, usable) if usable else []
        except ImageError as exc:
            return fail(str(exc))
        copied_from = dict(zip(stored, usable, strict=True))
    clf, results, retrained = gallery.ensure_trained(force=args.retrain, progress=show_progress())
    if args.person is not None:
        results = [r for r in results if r.person == person]
        for r in results:
            r.source = copied_from.get(r.path)
            r.cached = r.cached and r.sha256 not in analysed_now
        results = refused + results
    failed = 1 if refused else 0
    if args.json:
        print(json.dumps({"photos": [r.to_dict() for r in results], "people": clf.meta.get("counts", {}),
                          "retrained": retrained, "warnings": gallery.warnings,
                          "cross_validation": clf.meta.get("cross_validation", {}).get("balanced_accuracy")},
                         ensure_ascii=False))
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
    counts = clf.meta.get("counts", {})
    cv = clf.meta.get("cross_validation", {})
    state = "retrained" if retrained else "up to date"
    print(f"classifier {state}: {len(counts)} people, {sum(counts.values())} photos"
          + (f", cross-validated balanced accuracy {cv['balanced_accuracy']:.3f}"
             if cv.get("balanced_accuracy") is not None else ""))
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
