"""The video loop's frame rate while a remote enrollment retrains the running agent.

    python bench/bench_live_enroll.py [--repeat 3]

Starts a real mosquitto (tests/broker.py), runs the real service on Hamilton clip frames, sends a signed
`add` for Lin-Manuel Miranda over MQTT after 30 frames, and reports frames per second over the 2 s before
the request and from the request until the retrained classifier is swapped in (embedding of the new
photo in the intake's worker thread + SVM training in a child process).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from broker import Broker  # noqa: E402
from test_live_enrollment import live_enrollment_run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ratios = []
    print(f"{'run':>3s} {'fps before':>10s} {'fps during':>10s} {'ratio':>6s} {'retrain s':>9s} {'named lin':>9s}")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-live-enroll-") as tmp:
            broker = Broker(Path(tmp) / "broker").start()
            try:
                run = live_enrollment_run(Path(tmp) / "agent", broker)
            finally:
                broker.stop()
        named = sum(e["type"] == "identified" and e["name"] == "lin" for e in run["events"])
        ratio = run["fps_during"] / run["fps_before"] if run["fps_during"] else float("nan")
        ratios.append(ratio)
        print(f"{i + 1:3d} {run['fps_before']:10.1f} {run['fps_during'] or 0:10.1f} {ratio:6.2f} "
              f"{run['retrain_seconds'] or 0:9.1f} {named:9d}")
    print(f"median fps ratio during/before: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
