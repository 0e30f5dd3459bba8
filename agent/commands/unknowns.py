"""`face-agent unknowns`: the unknown people the camera saw (clusters of unknown sightings)."""

from __future__ import annotations

import argparse
import json

from agent.commands._common import config_of
from agent.events import format_timestamp
from agent.sightings import SightingStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unknowns", help="list the unknown people seen (clusters of unknown faces) with their chips",
                       description="Every unknown person the agent has seen ([sightings] privacy = unknown or "
                       "all): its id (use it with `face-agent name`), sightings and tracks, first and last seen, "
                       "and its chips (aligned 150x150 JPEGs), best first.")
    p.add_argument("--json", action="store_true", help="one JSON array with every chip path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = SightingStore(config_of(args))
    try:
        clusters = store.clusters()
    finally:
        store.close()
    if args.json:
        print(json.dumps(clusters, ensure_ascii=False))
        return 0
    if not clusters:
        print("no unknown people seen yet")
        return 0
    print(f"{'id':8s} {'named':20s} {'sightings':>9s} {'tracks':>6s}  {'first seen':24s} {'last seen':24s} chip")
    for c in clusters:
        print(f"{c['id']:8s} {c['name'] or '-':20s} {c['sightings']:9d} {c['tracks']:6d}  "
              f"{format_timestamp(c['first_seen']):24s} {format_timestamp(c['last_seen']):24s} {c['representative']}")
    return 0
