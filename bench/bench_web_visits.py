"""The web console's Visits page on a large event log: seconds to build one page of visit cards (one per
track), the first page and one deep in the log, against the raw log page of the same size.

    python bench/bench_web_visits.py [--tracks 5000] [--runs 5]

Each synthetic track has the events a real one has (started, identified or unknown_face, ended) spread over
days, on two cameras, with track ids restarting every 500 tracks (as every run of the agent restarts them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import config_from_dict  # noqa: E402
from agent.events import EventFactory  # noqa: E402
from agent.store import EventStore  # noqa: E402


def build(folder: Path, tracks: int) -> object:
    cfg = config_from_dict({"paths": {"storage": str(folder / "storage"), "svm": str(folder / "svm"),
                                      "faces": str(folder / "faces"), "engines": str(folder / "engines")},
                            "mqtt": {"enabled": False}})
    box, size = (10, 10, 60, 60), (640, 360)
    t0 = time.time() - tracks * 60
    with EventStore(cfg) as store:
        for n in range(tracks):
            factory = EventFactory("bench", "door" if n % 3 else "garden")
            track, t = n % 500 + 1, t0 + n * 60
            for k, event in enumerate((
                    factory.track_started(track, box, size),
                    factory.identified(track, "ada", 0.9, 3, box, size) if n % 2 else
                    factory.unknown_face(track, 3, box, size, unknown_id=f"u{n % 40 + 1}"),
                    factory.track_ended(track, "ada" if n % 2 else None, 4.0, 0.9, box, size))):
                event.timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + k))
                store.add(event)
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from agent.web.console import Console

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(Path(tmp), args.tracks)
        console = Console(cfg)
        try:
            deep = console.store.query(limit=None)[len(console.store.query(limit=None)) // 10].t
            for label, call in (("visits, first page", lambda: console.visits("", "", None, None, None)),
                                ("visits, 90% down the log", lambda: console.visits("", "", None, None, deep)),
                                ("visits of one person", lambda: console.visits("ada", "", None, None, None)),
                                ("raw log page", lambda: console.events("", "", "", None, None, None))):
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    found = call()
                    times.append(time.perf_counter() - start)
                count = len(found[0]) if isinstance(found, tuple) else len(found)
                print(f"{label:28s} {count:4d} cards/rows  median {statistics.median(times) * 1000:7.1f} ms")
        finally:
            console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
