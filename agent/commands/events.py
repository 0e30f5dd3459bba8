"""`face-agent events`: list and filter the event log (<storage>/events.db), as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys

from agent.commands._common import config_of, fail
from agent.events import EVENT_TYPES, format_timestamp
from agent.store import DB_NAME, EXPIRED, PENDING, EventStore, StoreError
from agent.times import parse_when


def _when(value: str) -> float:
    """argparse type for --since/--until (agent.times.parse_when, as the web console's filters)."""
    try:
        return parse_when(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="list and filter the event log (table or JSON lines)",
                       description="Events are listed oldest first; with --limit, the most recent that "
                       "match. The table shows each person's current name; --json prints each event exactly "
                       "as it was published (its name then, and its person_id). "
                       "Times are UTC: a date, an ISO time, or an age like 30m, 2h, 7d.")
    p.add_argument("--since", type=_when, help="only events at or after this time")
    p.add_argument("--until", type=_when, help="only events before this time")
    p.add_argument("--name", metavar="PERSON",
                   help="only events of this person: any name they had (a rename keeps their past) or "
                   "their id (p3); case-insensitive, the start of a name is enough")
    p.add_argument("--track", type=int, metavar="TRACK_ID",
                   help="only events of this track (track ids never repeat on one agent)")
    p.add_argument("--type", choices=EVENT_TYPES, help="only events of this type")
    p.add_argument("--pending", action="store_true", help="only events not yet delivered to the broker")
    p.add_argument("--expired", action="store_true", help="only events that were never published because they "
                   "were older than [mqtt] max_event_age by the time the broker could take them")
    p.add_argument("--resend-expired", action="store_true", help="publish the expired events (those at or after "
                   "--since) anyway: they become pending; a running agent sends them within seconds, else the "
                   "next start does")
    p.add_argument("--limit", type=int, default=100,
                   help="at most this many (most recent); 0 = all (default 100)")
    p.add_argument("--json", action="store_true", help="JSON lines: each event exactly as published")
    p.set_defaults(func=run)


def _fmt(value: object, fmt: str = "") -> str:
    if value is None:
        return "-"
    return format(value, fmt) if fmt else str(value)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    path = cfg.path("storage") / DB_NAME
    if not path.is_file():
        if args.json:
            return 0
        print(f"no event log yet ({path} does not exist)")
        return 0
    if args.limit < 0:
        return fail("--limit must be 0 (all) or more")
    if args.resend_expired:
        with EventStore(cfg, path) as store:
            n = store.resend_expired(since=args.since)
        print(f"{n} expired event(s) made pending: a running agent publishes them within seconds (whatever their "
              "age), otherwise the next start does")
        return 0
    state = PENDING if args.pending else EXPIRED if args.expired else None
    try:
        with EventStore(cfg, path) as store:
            rows = store.query(since=args.since, until=args.until, name=args.name, type=args.type,
                               limit=args.limit or None, state=state, track_id=args.track)
            renamed = {} if args.json else store.current_names(rows)
    except StoreError as exc:
        return fail(str(exc))
    out = sys.stdout
    if args.json:
        for r in rows:
            out.write(r.payload + "\n")
        return 0
    if not rows:
        print("no matching events")
        return 0
    print(f"{'time (UTC)':24s} {'type':13s} {'camera':12s} {'track':>5s} {'name':20s} {'conf':>5s} "
          f"{'state':9s} event_id")
    for r in rows:  # the name a person has now (a renamed person's older events included)
        print(f"{format_timestamp(r.t):24s} {r.type:13s} {_fmt(r.camera)[:12]:12s} {_fmt(r.track_id):>5s} "
              f"{_fmt(renamed.get(r.event_id, r.name))[:20]:20s} {_fmt(r.confidence, '.2f'):>5s} {r.state:9s} "
              f"{r.event_id}")
    more = " (limit reached; use --limit 0 for all)" if len(rows) == args.limit else ""
    print(f"{len(rows)} event(s){more}")
    return 0
