"""`face-agent forget PERSON`: forget a person (their photos go to the trash folder) and retrain."""

from __future__ import annotations

import argparse

from agent.commands._common import config_of, fail, show_progress
from agent.gallery import Gallery, InvalidNameError, NotEnrolledError
from agent.logsafe import shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="forget a person (photos move to faces/train/trash/) and retrain",
                       description="Moves the person's photos from <faces>/train/raw/PERSON/ to "
                       "<faces>/train/trash/PERSON-<time>/ (delete that folder yourself; `face-agent restore PERSON` "
                       "undoes the forget), deletes their aligned chips and retrains.")
    p.add_argument("person")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    try:
        trash = gallery.forget(args.person)
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    except NotEnrolledError as exc:
        return fail(str(exc))
    clf, _, _ = gallery.ensure_trained(progress=show_progress())
    print(f"forgot {shown(args.person)}; {len(clf.people)} people remain")
    if trash is not None:
        print(f"their photos were moved to {trash} (delete it to free the space; undo: face-agent restore "
              f"{args.person})")
    return 0
