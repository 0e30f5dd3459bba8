"""`face-agent unknowns`: the unknown people the camera saw (clusters of unknown sightings);
`unknowns merge SOURCE TARGET`, `unknowns ignore|unignore UNKNOWN_ID`: correct them (agent.naming)."""

from __future__ import annotations

import argparse
import json

from agent.commands._common import action, config_of, fail
from agent.events import format_timestamp
from agent.naming import NamingError, ignore_unknown, merge_unknowns
from agent.sightings import SightingStore, cluster_label


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unknowns", help="list the unknown people seen (clusters of unknown faces); merge or ignore one",
                       description="Every unknown person the agent has seen ([sightings] privacy = unknown or "
                       "all): its id (use it with `face-agent name`), sightings and tracks, first and last seen, "
                       "and its chips (aligned 150x150 JPEGs), best first. Ignored ones are left out (--ignored "
                       "lists them). ACTIONS change the list: merge two that are one person, ignore one.")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--ignored", action="store_true", help="list only the ignored unknown people")
    shown.add_argument("--all", action="store_true", help="list the ignored ones too")
    p.add_argument("--json", action="store_true", help="one JSON array with every chip path")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="unknowns_action", metavar="ACTION")
    merge = action(actions, "merge", run_merge,
                   help="SOURCE and TARGET are one person: SOURCE's sightings move to TARGET",
                   description="Every sighting of SOURCE moves to TARGET; the person's next tracks join "
                   "TARGET, and SOURCE (e.g. in older events) means TARGET from now on. TARGET is "
                   "ignored if either was. Named unknown people are not merged.")
    merge.add_argument("source", help="the unknown person that goes, e.g. u7")
    merge.add_argument("target", help="the unknown person that stays, e.g. u3")
    for name, text in (("ignore", "hide an unknown person from the list and from naming; their next tracks "
                                  "join it and stay hidden (their unknown_face events are still logged)"),
                       ("unignore", "show an ignored unknown person again")):
        a = action(actions, name, run_ignore, help=text, description=text[0].upper() + text[1:] + ".")
        a.add_argument("unknown_id", help="the unknown person, e.g. u5")
        a.set_defaults(ignore=name == "ignore")


def run(args: argparse.Namespace) -> int:
    store = SightingStore(config_of(args))
    try:
        clusters = store.clusters(ignored=None if args.all else args.ignored)
    finally:
        store.close()
    if args.json:
        print(json.dumps(clusters, ensure_ascii=False))
        return 0
    if not clusters:
        print("no ignored unknown people" if args.ignored else "no unknown people seen yet")
        return 0
    print(f"{'id':8s} {'named':20s} {'sightings':>9s} {'tracks':>6s}  {'first seen':24s} {'last seen':24s} chip")
    for c in clusters:
        label = c["name"] or ("(ignored)" if c["ignored"] else "-")
        print(f"{c['id']:8s} {label:20s} {c['sightings']:9d} {c['tracks']:6d}  "
              f"{format_timestamp(c['first_seen']):24s} {format_timestamp(c['last_seen']):24s} {c['representative']}")
    return 0


def _change(args: argparse.Namespace, operation) -> int:
    """Run one agent.naming operation on the sightings store; `operation(store)` returns what to print."""
    store = SightingStore(config_of(args))
    try:
        message = operation(store)
    except NamingError as exc:
        return fail(str(exc))
    finally:
        store.close()
    print(message)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    def merge(store: SightingStore) -> str:
        target, moved = merge_unknowns(store, args.source, args.target)
        return f"{args.source} merged into {cluster_label(target)}: {moved} sightings moved"
    return _change(args, merge)


def run_ignore(args: argparse.Namespace) -> int:
    def ignore(store: SightingStore) -> str:
        cluster = ignore_unknown(store, args.unknown_id, args.ignore)
        return f"{cluster_label(cluster)} {'ignored' if args.ignore else 'shown again'}"
    return _change(args, ignore)
