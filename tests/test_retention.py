"""Retention is the stores' own (EventStore.enforce_retention, SightingStore.enforce_bounds), run by one timer
(agent.periodic.Periodic) that the service owns: on real SQLite files, driven by an injected clock (no
sleeping), and through a real service run (the timer starts with the run and stops before the stores close).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from conftest import FR, make_config, wait_for

from agent.events import EventFactory, format_timestamp
from agent.periodic import Periodic
from agent.service import Service
from agent.sightings import Candidate, SightingStore, TrackFaces
from agent.store import EventStore

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"
DAY = 86400.0


def _old_event(store: EventStore, track_id: int, age_days: float) -> str:
    event = EventFactory("edge-1", "door").track_started(track_id, (0, 0, 10, 10), (100, 100))
    event.timestamp = format_timestamp(time.time() - age_days * DAY)
    store.add(event)
    return event.event_id


def _old_track(store: SightingStore, track_id: int, age_days: float) -> None:
    """A kept unknown track seen `age_days` ago: real files and rows (a random embedding: no model needed)."""
    rng = np.random.default_rng(track_id)
    t = time.time() - age_days * DAY
    faces = [Candidate(0.8, t, rng.normal(size=128).astype(np.float32),
                       rng.integers(0, 255, (150, 150, 3), dtype=np.uint8),
                       rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)) for _ in range(2)]
    store.add_track("run", TrackFaces(track_id, t, t + 1, None, None, faces, t, t + 1))


def _config(tmp_path, **sections):
    return make_config(tmp_path, mqtt={"enabled": False}, store={"retention_days": 7},
                       sightings={"privacy": "unknown", "max_days": 7}, **sections)


def test_the_timer_runs_the_stores_retention_when_due_by_its_clock(tmp_path):
    cfg = _config(tmp_path)
    events, sightings = EventStore(cfg), SightingStore(cfg)
    now = [1000.0]
    timer = Periodic("retention", 3600.0, [events.enforce_retention, sightings.enforce_bounds],
                     clock=lambda: now[0])
    kept = _old_event(events, 1, 1)
    gone = _old_event(events, 2, 10)
    _old_track(sightings, 1, 1)
    _old_track(sightings, 2, 9)  # add_track bounds the store itself: this one is gone at once
    assert {r["track_id"] for r in sightings.sightings()} == {1}
    _backdate(sightings, track_id=1, days=10)  # aged while the agent ran: only the timer sees it

    assert timer.run_due() and timer.passes == 1  # the first pass: at once
    assert events.get(gone) is None and events.get(kept) is not None
    assert sightings.sightings() == [] and not list(sightings.folder.rglob("*.jpg"))

    again = _old_event(events, 3, 10)
    now[0] += 3599.0
    assert not timer.run_due() and events.get(again) is not None  # not due yet
    now[0] += 1.0
    assert timer.run_due() and events.get(again) is None and timer.passes == 2
    events.close()
    sightings.close()


def _backdate(store: SightingStore, track_id: int, days: float) -> None:
    with store.db.conn:
        store.db.execute("UPDATE sightings SET t = t - ? WHERE track_id = ?", [days * DAY, track_id])


def test_a_failing_job_is_logged_and_the_others_still_run(tmp_path, caplog):
    ran = []

    def broken() -> None:
        raise OSError("disk gone")

    timer = Periodic("retention", 60.0, [broken, lambda: ran.append(1)], clock=lambda: 0.0)
    with caplog.at_level(logging.ERROR, logger="agent.periodic"):
        assert timer.run_due()
    assert ran == [1] and "retention: " in caplog.text and "disk gone" in caplog.text


def test_the_thread_passes_at_once_and_stops_cleanly(tmp_path):
    cfg = _config(tmp_path)
    events = EventStore(cfg)
    gone = _old_event(events, 1, 10)
    timer = Periodic("retention", 3600.0, [events.enforce_retention])
    timer.start()
    assert wait_for(lambda: timer.passes == 1)
    thread = timer._thread
    timer.stop(timeout=10)
    assert thread is not None and not thread.is_alive() and timer._thread is None
    assert events.get(gone) is None
    events.close()


def test_the_service_runs_retention_and_stops_it_before_the_stores_close(tmp_path, analyzer):
    """What the publisher did before (and only with its thread running): old events and sightings go at the
    start of a run, MQTT on or off; the timer is stopped when the run ends."""
    cfg = _config(tmp_path)
    events, sightings = EventStore(cfg), SightingStore(cfg)
    gone = _old_event(events, 1, 10)
    _old_track(sightings, 1, 1)
    _backdate(sightings, track_id=1, days=10)
    events.close()
    sightings.close()
    service = Service(cfg, source_uri=str(HAMILTON), every_frame=True, max_frames=5, analyzer=analyzer)
    assert service.run() == 0
    assert service.retention is not None and service.retention.passes >= 1 and service.retention._thread is None
    events, sightings = EventStore(cfg), SightingStore(cfg)
    assert events.get(gone) is None and events.count() > 0  # the run's own events are kept
    assert all(r["t"] > time.time() - DAY for r in sightings.sightings())
    events.close()
    sightings.close()
