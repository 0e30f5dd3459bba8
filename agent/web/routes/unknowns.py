"""Unknown people: the sightings' clusters still to deal with; name one (enrolls its faces, retrains), merge
two, ignore one. Each action answers with the card it changed (htmx swaps it in place); without htmx it
flashes and reloads the page as before."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.gallery import InvalidNameError
from agent.naming import NamingError, enrolled_text, people_count
from agent.web.site import attempt, go, person_url, site


def _on_card(request: Request) -> bool:
    return (request.headers.get("hx-target") or "").startswith("cluster-")


async def unknowns(request: Request) -> Response:
    s = site(request)
    show_ignored = request.query_params.get("show") == "ignored"
    clusters = await run_in_threadpool(s.console.unknowns, show_ignored)
    targets = await run_in_threadpool(s.console.merge_targets)
    return s.page(request, "unknowns.html", clusters=clusters, people=s.console.gallery.people_on_disk(),
                  privacy=s.cfg.sightings.privacy, show_ignored=show_ignored, targets=targets,
                  ignored_count=sum(t["ignored"] for t in targets))


def _card(request: Request, label: str, **context: object) -> Response:
    s = site(request)
    found = s.console.unknowns(None, only=label)
    if not found:
        return s.fragment(request, "cluster_done.html", id=label, note=f"{label} is gone.", target=None)
    return s.fragment(request, "cluster.html", c=found[0], targets=s.console.merge_targets(), **context)


async def merge_unknown(request: Request) -> Response:
    s = site(request)
    form = await request.form()
    source = request.path_params["unknown_id"]
    target, moved = await attempt(s.console.merge, source, str(form.get("into", "")), refused=(NamingError,))
    message = f"{source} merged into {target}: {moved} sightings moved; {source} now means {target}"
    if _on_card(request):
        found = await run_in_threadpool(s.console.unknowns, None, target)
        return s.fragment(request, "cluster_done.html", id=source, note=f"Merged into {target}.",
                          target=found[0] if found else None, targets=s.console.merge_targets())
    s.flash(request, message)
    return go("/unknowns")  # no #fragment: a redirect that only changes it would not reload the page


async def ignore_or_show(request: Request) -> Response:
    s = site(request)
    ignored = request.url.path.endswith("/ignore")
    label = await attempt(s.console.set_ignored, request.path_params["unknown_id"], ignored, refused=(NamingError,))
    if _on_card(request):
        if ignored:
            return s.fragment(request, "cluster_done.html", id=label, undo=True,
                              note=f"{label} ignored: hidden here; their visits are still logged.")
        return await run_in_threadpool(_card, request, label)
    s.flash(request, f"{label} ignored: hidden here and from naming; their next sightings join {label}"
            if ignored else f"{label} is shown again")
    return go("/unknowns")


async def name_unknown(request: Request) -> Response:
    s = site(request)
    form = await request.form()
    unknown_id = request.path_params["unknown_id"]
    named, reidentified, repeat = await attempt(s.console.name_cluster, unknown_id, str(form.get("person", "")),
                                                refused=(InvalidNameError, NamingError))
    if _on_card(request):
        note = f"{unknown_id} is now {named.person}: {enrolled_text(named).replace('enrolled', 'learned', 1)}" + \
            (f"; {reidentified} earlier visits recognised again" if reidentified else "") + "."
        if named.refused:
            note += f" {len(named.refused)} faces were not usable (too small or blurry)."
        return s.fragment(request, "cluster_done.html", id=unknown_id, note=note, person=named.person)
    if not repeat:
        s.flash(request, f"{unknown_id} is now {named.person}: {enrolled_text(named)}",
                *([f"classifier retrained: {people_count(len(named.classifier.people))}"] if named.classifier
                  else []),
                *([f"{reidentified} earlier unknown track{'' if reidentified == 1 else 's'} re-identified "
                   "(reidentified events logged)"]
                  if reidentified else []))
        s.flash(request, *[f"not enrolled: {message}" for message in named.refused], kind="warning")
    return go(person_url(named.person))


async def selected(request: Request) -> Response:
    """The selected unknown people: all named as one person (`face-agent name` on each, one retrain), or all
    ignored (`face-agent unknowns ignore` on each)."""
    s = site(request)
    form = await request.form()
    ids = [str(i) for i in form.getlist("ids")]
    action = str(form.get("action", ""))
    if not ids:
        return PlainTextResponse("select at least one unknown person (the tick on their card)", status_code=400)
    try:
        if action == "ignore":
            labels = [await run_in_threadpool(s.console.set_ignored, i, True) for i in ids]
            s.flash(request, f"{', '.join(labels)} ignored: hidden here; their visits are still logged.")
            return go("/unknowns")
        if action != "name":
            return PlainTextResponse("unknown action", status_code=400)
        named, reidentified = await run_in_threadpool(s.console.name_clusters, ids, str(form.get("person", "")))
    except (InvalidNameError, NamingError) as exc:
        return PlainTextResponse(str(exc), status_code=400)
    s.flash(request, f"{', '.join(ids)} {'is' if len(ids) == 1 else 'are'} now {named.person}: "
                     f"{len(named.enrolled)} faces learned" +
            (f"; {reidentified} earlier visits recognised again" if reidentified else "") + ".")
    s.flash(request, *[f"not enrolled: {message}" for message in named.refused], kind="warning")
    return go(person_url(named.person))


routes = [
    Route("/unknowns/selected", selected, methods=["POST"]),
    Route("/unknowns", unknowns),
    Route("/unknowns/{unknown_id}/name", name_unknown, methods=["POST"]),
    Route("/unknowns/{unknown_id}/merge", merge_unknown, methods=["POST"]),
    Route("/unknowns/{unknown_id}/ignore", ignore_or_show, methods=["POST"]),
    Route("/unknowns/{unknown_id}/unignore", ignore_or_show, methods=["POST"]),
]
