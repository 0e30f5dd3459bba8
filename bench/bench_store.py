"""Event log and publisher speed: `store.add` latency (synchronous FULL vs NORMAL), the outbox drain
rate to a real mosquitto (QoS 1, PUBACK per event), and the CPU time of the outbox's calls against the
sqlite-utils calls that would replace their plain SQL (why those stay plain SQL).

    python bench/bench_store.py [--events 2000] [--dir /path/on/the/sd/card]

Run it with --dir on the storage device of the target (fsync cost depends on it: tmpfs says nothing).
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
sys.path.insert(0, str(ROOT / "tests"))

from broker import Broker, Collector  # noqa: E402

from agent.config import config_from_dict  # noqa: E402
from agent.events import EventFactory  # noqa: E402
from agent.store import _SELECT, EventStore, StoredEvent  # noqa: E402
from agent.sync.publisher import Publisher  # noqa: E402


def add_latency(folder: Path, synchronous: str, n: int) -> list[float]:
    cfg = config_from_dict({"paths": {"storage": str(folder / synchronous)},
                            "store": {"synchronous": synchronous}}, env={})
    store = EventStore(cfg)
    f = EventFactory("bench", "cam")
    times = []
    for i in range(n):
        e = f.identified(i, "alice", 0.9, 3, (10, 20, 110, 140), (1280, 720))
        t0 = time.perf_counter()
        store.add(e)
        times.append(time.perf_counter() - t0)
    store.close()
    return times


def drain_rate(folder: Path, n: int, window: int) -> float:
    broker = Broker(folder / f"broker-{window}").start()
    col = Collector(broker, "faces/events").start()
    cfg = config_from_dict({"paths": {"storage": str(folder / f"drain-{window}")},
                            "mqtt": {"port": broker.port, "max_inflight": window}}, env={})
    store = EventStore(cfg)
    f = EventFactory("bench", "cam")
    for i in range(n):
        store.add(f.identified(i, "alice", 0.9, 3, (10, 20, 110, 140), (1280, 720)))
    pub = Publisher(cfg, store)
    t0 = time.perf_counter()
    pub.start()
    while store.count("pending"):
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    pub.stop()
    col.stop()
    broker.stop()
    store.close()
    return n / elapsed


def per_call_us(fn, n: int) -> float:
    """Median microseconds of fn(0) ... fn(n - 1)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def outbox_calls(folder: Path, n: int) -> None:
    """Median microseconds per call (synchronous=normal: CPU, not fsync) of the plain-SQL outbox paths and of
    the sqlite-utils calls doing the same (the same rows, the same StoredEvent results)."""
    cfg = config_from_dict({"paths": {"storage": str(folder / "calls")}, "store": {"synchronous": "normal"}},
                           env={})
    store = EventStore(cfg)
    f = EventFactory("bench", "cam")
    events = [f.identified(i, "alice", 0.9, 3, (10, 20, 110, 140), (1280, 720)) for i in range(2 * n)]
    rows = [{"event_id": e.event_id, "t": float(i), "timestamp": e.timestamp, "type": e.type, "name": e.name,
             "camera": e.camera, "track_id": e.track_id, "confidence": e.confidence, "state": "pending",
             "created": 0.0, "payload": e.to_json()} for i, e in enumerate(events)]
    plain = per_call_us(lambda i: store._insert(rows[i]), n)  # store.add without the JSON check and listeners
    utils = per_call_us(lambda i: store.table.insert(rows[n + i]), n)
    print(f"insert one event:      plain SQL {plain:6.1f} us, Table.insert {utils:6.1f} us")
    for limit in (1, 100):
        plain = per_call_us(lambda i, limit=limit: store.pending(limit), 1000)
        utils = per_call_us(lambda i, limit=limit: [StoredEvent(**r) for r in store.table.rows_where(
            "state = 'pending'", order_by="seq", select=_SELECT, limit=limit)], 1000)
        print(f"read {limit:3d} pending:      plain SQL {plain:6.1f} us, Table.rows_where {utils:6.1f} us")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--dir", type=Path, help="folder on the device to measure (default: a temp folder)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(dir=args.dir))
    print(f"folder: {folder}")
    for sync in ("full", "normal"):
        t = add_latency(folder, sync, args.events)
        t.sort()
        print(f"store.add synchronous={sync:6s}: median {statistics.median(t) * 1e3:.3f} ms, "
              f"p99 {t[int(len(t) * 0.99)] * 1e3:.3f} ms, max {t[-1] * 1e3:.3f} ms ({len(t)} events)")
    for window in (1, 20, 100):
        rate = drain_rate(folder, args.events, window)
        print(f"outbox drain to mosquitto, max_inflight={window:3d}: {rate:.0f} events/s")
    outbox_calls(folder, args.events)


if __name__ == "__main__":
    main()
