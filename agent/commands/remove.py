"""`face-agent remove PERSON PHOTO...`: remove photos of a person (the last ones forget the person) and retrain."""

from __future__ import annotations

import argparse

from agent import enrollment_ops as ops
from agent.commands._common import config_of, fail, show_progress
from agent.enrollment_ops import InvalidNameError, NotEnrolledError
from agent.gallery import Gallery
from agent.logsafe import shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remove", help="remove photos of a person (by stored name or sha256) and retrain",
                       description="Deletes the named photos of PERSON from <faces>/train/raw/PERSON/ with their "
                       "aligned chips, and retrains. A PHOTO is the stored file name (see `face-agent people`, the "
                       "folder, or `enroll --json`), its name without the extension, or the photo's sha256. "
                       "Removing the last photos of a person forgets the person, as `face-agent forget` does: the "
                       "photos go to the trash (`face-agent restore PERSON` brings them back). Same operation as "
                       "`face-agent remote remove` and the web console's Remove.")
    p.add_argument("person")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="stored file name, stem or sha256")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    try:
        return _remove(args, gallery)
    finally:
        gallery.close()


def _remove(args: argparse.Namespace, gallery: Gallery) -> int:
    try:
        removal = ops.remove_photos(gallery, args.person, args.photos)
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    except NotEnrolledError as exc:
        return fail(str(exc))
    missing = [ref for ref, photo in removal.found if photo is None]
    for ref in missing:
        fail(f"{ref}: no such photo of {removal.person}")
    if not removal.removed:
        return 1
    training = ops.retrain(gallery, progress=show_progress())
    print(f"removed {removal.removed} photo{'' if removal.removed == 1 else 's'} of {shown(removal.person)}; "
          f"{removal.photos_left} left")
    if removal.forgotten:
        print(f"{shown(removal.person)} had no photos left and was forgotten everywhere on this agent"
              + (f"; their photos are in the trash ({shown(removal.trash)}, undo: face-agent restore "
                 f"{shown(removal.person)})" if removal.trash else ""))
    print(f"classifier {'retrained' if training.retrained else 'up to date'}: "
          f"{len(training.classifier.people)} people")
    return 1 if missing else 0
