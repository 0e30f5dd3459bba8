"""`face-agent restore PERSON`: undo `forget` - the person's photos come back from the trash, and retrain."""

from __future__ import annotations

import argparse

from agent import enrollment_ops as ops
from agent.commands._common import config_of, fail, show_progress
from agent.enrollment_ops import InvalidNameError, NameTakenError, NotEnrolledError
from agent.gallery import Gallery


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="undo forget: bring a person's photos back from faces/train/trash/",
                       description="Moves the photos of a forgotten person back from "
                       "<faces>/train/trash/PERSON-<time>/ to <faces>/train/raw/PERSON/ (the most recent forget, "
                       "or --from FOLDER) and retrains; the embeddings are cached, so it takes seconds. The faces "
                       "the camera kept of them and the faces said not to be them were deleted by forget and do "
                       "not come back. Without PERSON: list what can be restored.")
    p.add_argument("person", nargs="?", help="the forgotten person (as it was spelled)")
    p.add_argument("--from", dest="folder", metavar="FOLDER",
                   help="the trash folder to restore (e.g. ada-20261207-025315), when they were forgotten twice")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="restore under another name (the person has "
                   "photos again under the old one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    if args.person is None:
        entries = gallery.trashed()
        if not entries:
            print(f"nothing to restore: {gallery.trash} holds no forgotten people")
            return 0
        print(f"{'person':24s} {'forgotten':17s} {'photos':>6s}  folder")
        for t in entries:
            print(f"{t.person[:24]:24s} {t.stamp:17s} {t.photos:6d}  {t.path.name}")
        return 0
    try:
        entry = ops.restore(gallery, args.person, args.folder, args.as_name)
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    except (NotEnrolledError, NameTakenError) as exc:
        return fail(str(exc))
    name = args.as_name or entry.person
    clf = ops.retrain(gallery, progress=show_progress()).classifier
    print(f"restored {name}: {entry.photos} photos back in {gallery.raw / name} (forgotten {entry.stamp}); "
          f"{len(clf.people)} people enrolled")
    others = [t for t in gallery.trashed(entry.person)]
    if others:
        print(f"{len(others)} older forget(s) of {entry.person} remain in the trash (face-agent restore lists them)")
    return 0
