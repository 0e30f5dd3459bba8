"""Unknown people: the sightings' clusters; name one (enrolls its faces, retrains), merge two, ignore one."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.gallery import InvalidNameError
from agent.naming import NamingError
from agent.web.site import go, person_url, site


async def unknowns(request: Request) -> Response:
    s = site(request)
    show_ignored = request.query_params.get("show") == "ignored"
    clusters = await run_in_threadpool(s.console.unknowns, show_ignored)
    targets = await run_in_threadpool(s.console.merge_targets)
    return s.page(request, "unknowns.html", clusters=clusters, people=s.console.gallery.people_on_disk(),
                  privacy=s.cfg.sightings.privacy, show_ignored=show_ignored, targets=targets,
                  ignored_count=sum(t["ignored"] for t in targets))


async def merge_unknown(request: Request) -> Response:
    s = site(request)
    form = await request.form()
    source = request.path_params["unknown_id"]
    try:
        target, moved = await run_in_threadpool(s.console.merge, source, str(form.get("into", "")))
    except NamingError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    s.flash(request, f"{source} merged into {target}: {moved} sightings moved; {source} now means {target}")
    return go("/unknowns")  # no #fragment: a redirect that only changes it would not reload the page


async def ignore_or_show(request: Request) -> Response:
    s = site(request)
    ignored = request.url.path.endswith("/ignore")
    try:
        label = await run_in_threadpool(s.console.set_ignored, request.path_params["unknown_id"], ignored)
    except NamingError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    s.flash(request, f"{label} ignored: hidden here and from naming; their next sightings join {label}"
            if ignored else f"{label} is shown again")
    return go("/unknowns")


async def name_unknown(request: Request) -> Response:
    s = site(request)
    form = await request.form()
    unknown_id = request.path_params["unknown_id"]
    try:
        named, reidentified = await run_in_threadpool(s.console.name_cluster, unknown_id,
                                                      str(form.get("person", "")))
    except (InvalidNameError, NamingError) as exc:
        return PlainTextResponse(str(exc), status_code=400)
    s.flash(request, f"{unknown_id} is now {named.person}: {len(named.enrolled)} of {named.offered} faces enrolled",
            *[f"not enrolled: {message}" for message in named.refused],
            *([f"classifier retrained: {len(named.classifier.people)} people"] if named.classifier else []),
            *([f"{reidentified} earlier unknown tracks re-identified (reidentified events logged)"]
              if reidentified else []))
    return go(person_url(named.person))


routes = [
    Route("/unknowns", unknowns),
    Route("/unknowns/{unknown_id}/name", name_unknown, methods=["POST"]),
    Route("/unknowns/{unknown_id}/merge", merge_unknown, methods=["POST"]),
    Route("/unknowns/{unknown_id}/ignore", ignore_or_show, methods=["POST"]),
    Route("/unknowns/{unknown_id}/unignore", ignore_or_show, methods=["POST"]),
]
