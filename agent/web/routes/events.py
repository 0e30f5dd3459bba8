"""Events: who came by, one card per visit (a track), newest first and paged on; the raw event log one click
away; the faces kept of a track; "This is ..." / "That was ..." / "That was not X" on a visit."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.events import EVENT_TYPES
from agent.gallery import InvalidNameError
from agent.naming import NamingError, rejected_text
from agent.web.console import CERTAINTIES, iso, utc, when
from agent.web.site import attempt, go, site

NAMING = (InvalidNameError, NamingError)  # a bad name, no such event or visit: 400


def _learned(person: str, enrolled: int, reidentified: int) -> str:
    return f"Learned: this is {person} ({enrolled} face{'' if enrolled == 1 else 's'} added)." + \
        (f" {reidentified} earlier visits recognised again." if reidentified else "")


def _filters(request: Request, keys: tuple[str, ...]) -> dict[str, str]:
    return {k: request.query_params.get(k, "").strip() for k in keys}


async def visits(request: Request) -> Response:
    s = site(request)
    filters = _filters(request, ("person", "camera", "since", "until", "before", "unknown", "certainty"))
    error, found, cursor = None, [], None
    try:
        since, until = when(filters["since"]), when(filters["until"])
        before = float(filters["before"]) if filters["before"] else None
        if filters["unknown"]:  # an unknown person's visits (from their card)
            found, cursor = await run_in_threadpool(s.console.unknown_visits, filters["unknown"], before)
        else:
            found, cursor = await run_in_threadpool(s.console.visits, filters["person"], filters["camera"], since,
                                                    until, before, filters["certainty"])
    except (ValueError, NamingError) as exc:  # a bad time, no such unknown person
        error = str(exc)
    more_url = None
    if cursor is not None:
        kept = {k: v for k, v in filters.items() if v and k != "before"}
        more_url = "/events?" + urlencode({**kept, "before": repr(cursor)})
    people = s.console.gallery.people_on_disk()
    if request.query_params.get("part") and request.headers.get("hx-request"):  # "Older visits": the next cards
        return s.fragment(request, "visits.html", visits=found, more=cursor is not None, more_url=more_url,
                          csrf=None)
    return s.page(request, "events.html", visits=found, filters=filters, error=error, more=cursor is not None,
                  more_url=more_url, cameras=s.console.cameras(), people=people, certainties=CERTAINTIES)


async def event_log(request: Request) -> Response:
    s = site(request)
    filters = _filters(request, ("person", "type", "camera", "since", "until", "track"))
    error, rows = None, []
    try:
        since, until = when(filters["since"]), when(filters["until"])
        track = int(filters["track"]) if filters["track"] else None
        rows = await run_in_threadpool(s.console.events, filters["person"], filters["type"], filters["camera"],
                                       since, until, track)
    except ValueError as exc:  # a bad time or track number
        error = str(exc)
    return s.page(request, "event_log.html", rows=rows, filters=filters, error=error, types=EVENT_TYPES,
                  cameras=s.console.cameras(), people=s.console.gallery.people_on_disk())


async def track_faces(request: Request) -> Response:
    s = site(request)
    event, faces = await attempt(s.console.track_faces, request.path_params["event_id"], refused=(NamingError,),
                                 status=404)
    return s.page(request, "track.html", event=event, faces=faces, time=utc(event.t), iso=iso(event.t),
                  privacy=s.cfg.sightings.privacy, people=s.console.gallery.people_on_disk())


async def name_selected_faces(request: Request) -> Response:
    """"This is PERSON" for the selected faces of a visit (Console.name_track_faces)."""
    s = site(request)
    form = await request.form()
    try:
        ids = [int(str(i)) for i in form.getlist("face")]
    except ValueError:
        return PlainTextResponse("not a face id", status_code=400)
    if not ids:
        return PlainTextResponse("select at least one face (the tick under it)", status_code=400)
    event_id = request.path_params["event_id"]
    person, enrolled, reidentified = await attempt(s.console.name_track_faces, event_id, ids,
                                                   str(form.get("person", "")), refused=NAMING)
    s.flash(request, _learned(person, enrolled, reidentified))
    return go(f"/events/{event_id}/faces")


def _card(request: Request, event_id: str, note: str, note_class: str = "flash") -> Response:
    """The visit's card again (htmx swaps it in place), with what was done."""
    s = site(request)
    target = (request.headers.get("hx-target") or "").removeprefix("visit-")
    try:  # the card asked about (its key: the visit's track_started event), so it keeps its id
        visit = s.console.visit_of(target) if target else s.console.visit_of(event_id)
    except NamingError:
        visit = s.console.visit_of(event_id)
    return s.fragment(request, "visit.html", v=visit, note=note, note_class=note_class)


def _on_card(request: Request) -> bool:
    return (request.headers.get("hx-target") or "").startswith("visit-")


async def reject_event(request: Request) -> Response:
    s = site(request)
    event, done = await attempt(s.console.reject, request.path_params["event_id"], refused=(NamingError,))
    message = rejected_text(event, done) + ("" if done.already else "; classifier retrained")
    if _on_card(request):
        return await run_in_threadpool(_card, request, event.event_id,
                                       f"Noted: that was not {done.person}." + (
                                           " (It was noted before.)" if done.already
                                           else " The agent learned from it."))
    s.flash(request, message)
    back = urlsplit(request.headers.get("hx-current-url", ""))
    if back.path in ("/events", "/events/log"):
        return go(back.path + (f"?{back.query}" if back.query else ""))
    return go("/events")


async def name_track(request: Request) -> Response:
    """"This is PERSON" / "That was PERSON" on a visit (Console.name_track)."""
    s = site(request)
    form = await request.form()
    event_id = request.path_params["event_id"]
    person, enrolled, reidentified = await attempt(s.console.name_track, event_id, str(form.get("person", "")),
                                                   refused=NAMING)
    note = _learned(person, enrolled, reidentified)
    if _on_card(request):
        return await run_in_threadpool(_card, request, event_id, note)
    s.flash(request, note)
    return go("/events")


async def name_selected(request: Request) -> Response:
    """"This is PERSON" for the selected visits (Console.name_visits): one enrollment, one retrain."""
    s = site(request)
    form = await request.form()
    ids = [str(i) for i in form.getlist("ids")]
    if not ids:
        return PlainTextResponse("select at least one visit (the tick on its card)", status_code=400)
    person, visits, enrolled, reidentified = await attempt(s.console.name_visits, ids, str(form.get("person", "")),
                                                           refused=NAMING)
    s.flash(request, f"Learned: {visits} visit{'' if visits == 1 else 's'} {'is' if visits == 1 else 'are'} "
                     f"{person} ({enrolled} face{'' if enrolled == 1 else 's'} added)." +
            (f" {reidentified} earlier visits recognised again." if reidentified else ""))
    back = urlsplit(request.headers.get("hx-current-url", ""))
    return go("/events" + (f"?{back.query}" if back.path == "/events" and back.query else ""))


routes = [
    Route("/events/selected/name", name_selected, methods=["POST"]),
    Route("/events", visits),
    Route("/events/log", event_log),
    Route("/events/{event_id}/reject", reject_event, methods=["POST"]),
    Route("/events/{event_id}/name", name_track, methods=["POST"]),
    Route("/events/{event_id}/faces", track_faces),
    Route("/events/{event_id}/faces/name", name_selected_faces, methods=["POST"]),
]
