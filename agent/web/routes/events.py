"""Events: the event log with filters, the faces kept of a track, and "that was not X" on an identification."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.events import EVENT_TYPES
from agent.naming import NamingError
from agent.web.console import utc, when
from agent.web.site import go, site


async def events(request: Request) -> Response:
    s = site(request)
    q = request.query_params
    filters = {k: q.get(k, "").strip() for k in ("person", "type", "camera", "since", "until", "track")}
    error, rows = None, []
    try:
        since, until = when(filters["since"]), when(filters["until"])
        track = int(filters["track"]) if filters["track"] else None
        rows = await run_in_threadpool(s.console.events, filters["person"], filters["type"], filters["camera"],
                                       since, until, track)
    except ValueError as exc:  # a bad time or track number
        error = str(exc)
    return s.page(request, "events.html", rows=rows, filters=filters, error=error, types=EVENT_TYPES,
                  cameras=s.console.cameras(), people=s.console.gallery.people_on_disk())


async def track_faces(request: Request) -> Response:
    s = site(request)
    try:
        event, faces = await run_in_threadpool(s.console.track_faces, request.path_params["event_id"])
    except NamingError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return s.page(request, "track.html", event=event, faces=faces, time=utc(event.t),
                  privacy=s.cfg.sightings.privacy)


async def reject_event(request: Request) -> Response:
    s = site(request)
    try:
        event, count = await run_in_threadpool(s.console.reject, request.path_params["event_id"])
    except NamingError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    s.flash(request, f"track {event.track_id} is not {event.name}: {count} faces are now known not to be "
                     f"{event.name}; classifier retrained")
    back = urlsplit(request.headers.get("hx-current-url", ""))
    return go(back.path + (f"?{back.query}" if back.query else "") if back.path == "/events" else "/events")


routes = [
    Route("/events", events),
    Route("/events/{event_id}/reject", reject_event, methods=["POST"]),
    Route("/events/{event_id}/faces", track_faces),
]
