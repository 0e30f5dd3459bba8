"""`face-agent reject EVENT_ID`: that identification was wrong; the face is not to be named so again."""

from __future__ import annotations

import argparse

from agent.commands._common import config_of, fail, show_progress
from agent.gallery import Gallery
from agent.naming import NamingError, reject, rejected_text
from agent.sightings import SightingStore
from agent.store import EventStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reject", help="say an identification was wrong (\"that was not X\") and retrain",
                       description="The faces kept of the track an `identified` event named (needs [sightings] "
                       "privacy = \"all\") are recorded as not being that person; the classifier's gate then "
                       "keeps the same face from being named so again. The faces become an unknown person.")
    p.add_argument("event_id", help="the identified (or reidentified) event, see `face-agent events`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    with EventStore(cfg) as events:
        stored = events.get(args.event_id.strip().upper())
    if stored is None:
        return fail(f"no event {args.event_id!r} in the log")
    gallery = Gallery(cfg)
    store = SightingStore(cfg)
    try:
        event = stored.event()
        done = reject(gallery, store, event, show_progress())
        print(rejected_text(event, done))
        return 0
    except NamingError as exc:
        return fail(str(exc))
    finally:
        store.close()
        gallery.close()
