"""`face-agent forget PERSON`: forget a person (their photos go to the trash folder) and retrain."""

from __future__ import annotations

import argparse

from agent import enrollment_ops as ops
from agent.commands._common import config_of, fail, show_progress
from agent.enrollment_ops import InvalidNameError, NotEnrolledError
from agent.gallery import Gallery
from agent.logsafe import shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="forget a person everywhere on this agent (photos: trash) and retrain",
                       description="Moves the person's photos from <faces>/train/raw/PERSON/ to "
                       "<faces>/train/trash/PERSON-<time>/ (kept [enrollment] trash_days, then deleted; "
                       "`face-agent restore PERSON` undoes the forget meanwhile), deletes their aligned chips, "
                       "their photos' cached embeddings, the faces of them the camera kept (and those said not to "
                       "be them), their identifications and face thumbnails in the event log and their name in "
                       "the kept reports, and retrains. docs/privacy.md lists every face datum.")
    p.add_argument("person")
    p.add_argument("--purge", action="store_true",
                   help="delete their photos now (and any earlier trash of theirs) instead of keeping them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    try:
        trash = ops.forget(gallery, args.person, purge=args.purge)
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    except NotEnrolledError as exc:
        return fail(str(exc))
    training = ops.retrain(gallery, progress=show_progress())
    print(f"forgot {shown(args.person)}; {len(training.classifier.people)} people remain")
    if trash is not None:
        print(f"their photos were moved to {shown(trash)}: kept {gallery.cfg.enrollment.trash_days:g} days "
              f"(undo: face-agent restore {shown(args.person)}), then deleted; `forget --purge` deletes them now")
    else:
        print("their photos were deleted")
    return 0
