"""`face-agent forget PERSON`: remove a person's photos and retrain."""

from __future__ import annotations

import argparse

from agent.commands._common import config_of, fail, show_progress
from agent.gallery import Gallery, InvalidNameError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="remove a person and retrain")
    p.add_argument("person")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    try:
        found = gallery.forget(args.person)
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    if not found:
        return fail(f"{args.person!r} is not enrolled")
    clf, _, _ = gallery.ensure_trained(progress=show_progress())
    print(f"forgot {args.person}; {len(clf.people)} people remain")
    return 0
