"""From what the pipeline did on a frame to events: tracks that ended, tracks that started, identity
changes (agent.events builds and validates each one; this module only decides which, in which order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.events import Event, EventFactory, FramePosition


def track_ended(factory: EventFactory, track: Any, size: tuple[int, int], at: FramePosition | None,
                unknown_of: Callable[[Any], str | None] | None = None) -> Event:
    """The `track_ended` event of a track (agent.vision.tracker.Track) with its final identity;
    `unknown_of(track)`: the unknown person its `unknown_face` event named (for a track that ended unknown)."""
    unknown = unknown_of(track) if unknown_of is not None and track.name is None else None
    return factory.track_ended(track.id, track.name, track.duration, track.confidence or None, track.box, size,
                               votes=track.votes, at=at, unknown_id=unknown)


def frame_events(factory: EventFactory, result: Any, image: Any, at: FramePosition,
                 unknown_id: Callable[[Any], str | None] | None = None,
                 unknown_of: Callable[[Any], str | None] | None = None) -> list[Event]:
    """The events of one processed frame (agent.vision.pipeline.FrameResult), in order: tracks that ended
    (lost, a shot cut, a split), tracks that started, identity changes; each says where it happened.
    `unknown_id(track)`: the unknown person a track that settled unknown is (agent.sightings: found or made
    now); `unknown_of(track)`: the one it was given (for its track_ended)."""
    size = result.size
    events = [track_ended(factory, track, size, at, unknown_of) for track in result.update.ended]
    for track in result.update.started:
        events.append(factory.track_started(track.id, track.box, size, track.detection.score, image=image, at=at))
    for change in result.changes:
        t = change.track
        if change.kind == "unknown":
            confidence = change.confidence if change.votes else None  # no vote: attempts ran out (poor faces)
            events.append(factory.unknown_face(t.id, t.attempts, t.box, size, confidence, change.votes,
                                               image=image, at=at, unknown_id=unknown_id(t) if unknown_id else None))
        else:
            events.append(factory.identified(t.id, change.name, change.confidence, change.votes, t.box, size,
                                             previous_name=change.previous, image=image, at=at))
    return events
