"""`face-agent name UNKNOWN_ID PERSON` / `name --track TRACK_ID PERSON`: enroll what the camera saw."""

from __future__ import annotations

import argparse

from agent.commands._common import config_of, fail, show_progress
from agent.gallery import Gallery, InvalidNameError
from agent.naming import NamingError, enrolled_text, log_reidentified, name_cluster, name_faces, track_faces
from agent.sightings import SightingStore
from agent.store import EventStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("name", help="enroll an unknown person (see `unknowns`) or a track as PERSON",
                       description="Enrolls the best kept faces (`[sightings] name_faces`, each track's best first) "
                       "of an unknown person (`face-agent unknowns`) or of one track as PERSON, through the same "
                       "checks as `enroll`, and retrains; the unknown person is marked named. Recent unknown "
                       "tracks the new model recognises are logged as `reidentified` events.")
    p.add_argument("unknown_id", nargs="?", help="the unknown person, e.g. u3")
    p.add_argument("person")
    p.add_argument("--track", type=int, metavar="TRACK_ID",
                   help="name this track instead (track ids never repeat on one agent)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.unknown_id is None) == (args.track is None):
        return fail("give either UNKNOWN_ID or --track TRACK_ID", 2)
    cfg = config_of(args)
    gallery = Gallery(cfg)
    store = SightingStore(cfg)
    try:
        if args.track is not None:
            named = name_faces(gallery, store, track_faces(store, args.track), args.person, show_progress())
            what = f"track {args.track}"
        else:
            named = name_cluster(gallery, store, args.unknown_id, args.person, show_progress())
            what = args.unknown_id
        print(f"{what} is now {named.person}: {enrolled_text(named)}")
        for message in named.refused:
            print(f"  not enrolled: {message}")
        assert named.classifier is not None
        with EventStore(cfg) as event_log:
            count = log_reidentified(store, named.classifier, cfg, event_log)
        if count:
            print(f"{count} earlier unknown track{'' if count == 1 else 's'} re-identified "
                  f"(reidentified event{'' if count == 1 else 's'} logged)")
        return 0
    except InvalidNameError as exc:
        return fail(str(exc), 2)
    except NamingError as exc:
        return fail(str(exc))
    finally:
        store.close()
        gallery.close()
