"""`face-agent people`: who is enrolled, with photo counts."""

from __future__ import annotations

import argparse
import json

from agent import enrollment_ops as ops
from agent.commands._common import config_of
from agent.gallery import Gallery
from agent.logsafe import shown


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("people", help="list enrolled people and their photo counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gallery = Gallery(config_of(args))
    summary = ops.people(gallery)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    if not summary:
        print(f"nobody enrolled (put photos in {gallery.raw}/<person>/ and run `face-agent enroll`)")
        return 0
    print(f"{'person':30s} {'photos':>6s} {'trained':>7s}")
    for person, c in summary.items():
        print(f"{shown(person):30s} {c['photos']:6d} {c['trained_photos']:7d}")
    return 0
