"""`face-agent rename OLD NEW`: rename a person (photos and chips follow) and retrain."""

from __future__ import annotations

import argparse

from agent import enrollment_ops as ops
from agent.commands._common import config_of, fail, show_progress
from agent.enrollment_ops import InvalidNameError, NameTakenError, NotEnrolledError
from agent.gallery import Gallery
from agent.logsafe import shown
from agent.naming import people_count


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rename", help="rename a person (photos and aligned chips follow) and retrain",
                       description="Renames <faces>/train/raw/OLD/ and its aligned chips to NEW; the embedding "
                       "cache is keyed by photo content, so nothing is analysed again. Renaming the folder by "
                       "hand would leave the chips behind. Same operation as `face-agent remote rename`.")
    p.add_argument("old", help="the enrolled name")
    p.add_argument("new", help="the new name (not enrolled yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    try:
        ops.rename(gallery, args.old, args.new)
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    except (NotEnrolledError, NameTakenError) as exc:
        return fail(str(exc))
    training = ops.retrain(gallery, progress=show_progress())
    print(f"renamed {shown(args.old)} to {shown(args.new)} (their earlier events are found under the new name); "
          f"classifier {'retrained' if training.retrained else 'up to date'}: "
          f"{people_count(len(training.classifier.people))}")
    return 0
