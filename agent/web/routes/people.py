"""People: the enrolled people and their photos; upload, remove a photo, rename, forget and its undo (restore
from the trash), retrain (each through agent.enrollment_ops, as the CLI and remote enrollment, then retrained)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent import enrollment_ops as ops
from agent.enrollment_ops import InvalidNameError, NameTakenError, NotEnrolledError, validate_person_name
from agent.web.site import attempt, go, person_url, site, valid_name

MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers on top of the photos themselves


async def people(request: Request) -> Response:
    s = site(request)
    summary, model = await run_in_threadpool(ops.people_and_model, s.console.gallery)
    chips = {name: s.console.first_chip(name) for name in summary}
    trashed = await run_in_threadpool(s.console.trashed)
    forgot = request.query_params.get("forgot", "")
    undo = next((t for t in trashed if t["folder"] == forgot), None)  # just forgotten: Undo at the top
    return s.page(request, "people.html", summary=summary, chips=chips, training=s.console.training_card(model),
                  web=s.web, trashed=trashed, undo=undo)


async def person(request: Request) -> Response:
    s = site(request)
    name = request.path_params["name"]
    try:
        name = validate_person_name(name)
    except InvalidNameError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    if name not in s.console.gallery.people_on_disk():
        return PlainTextResponse(f"{name} is not enrolled", status_code=404)
    data = await run_in_threadpool(s.console.person, name)
    training = s.console.training_state()
    return s.page(request, "person.html", person=data, training=training,
                  trained_photos=training.get("counts", {}).get(name, 0), web=s.web,
                  trash_days=f"{s.cfg.enrollment.trash_days:g}")


async def upload(request: Request) -> Response:
    s = site(request)
    web = s.web
    form = await request.form(max_files=web.max_upload_files, max_fields=10,
                              max_part_size=web.max_upload_bytes + MULTIPART_OVERHEAD)
    try:
        name = validate_person_name(str(form.get("person", "")))
    except InvalidNameError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    files = []
    for item in form.getlist("photos"):
        if isinstance(item, UploadFile) and item.filename:
            files.append((item.filename, await item.read()))
    if not files:
        return PlainTextResponse("choose at least one photo", status_code=400)
    results = await run_in_threadpool(s.console.add_uploads, name, files)
    accepted = [r for r in results if r["ok"]]
    s.flash(request, *[f"{r['file']}: accepted - {r['message']}" for r in results if r["ok"]])
    s.flash(request, *[f"{r['file']}: refused - {r['message']}" for r in results if not r["ok"]], kind="warning")
    if accepted:
        await s.retrain(request)
    elif not s.console.gallery.photos_of(name):  # a new person whose photos were all refused
        return go("/people")
    return go(person_url(name))


async def remove_photo(request: Request) -> Response:
    """Remove one photo, or the selected ones (`photo` given several times), one retrain: enrollment_ops.
    remove_photos, as `face-agent remove` and remote `remove_images`: what is found goes, the refs not found are
    named, 404 only when nothing was removed; removing the last ones forgets the person (photos in the trash: Undo
    on the People page)."""
    s = site(request)
    form = await request.form()
    refs = [str(p) for p in form.getlist("photo")]
    if not refs:
        return PlainTextResponse("choose at least one photo", status_code=404)
    removal = await attempt(s.console.remove_photos, request.path_params["name"], refs,
                            refused=(InvalidNameError, NotEnrolledError), status=404)
    name = removal.person
    removed = [ref for ref, photo in removal.found if photo is not None]
    missing = [ref for ref, photo in removal.found if photo is None]
    if not removed:
        return PlainTextResponse(f"no such photo of {name}: {', '.join(missing)}", status_code=404)
    s.flash(request, f"removed {removed[0]}" if len(removed) == 1 else f"removed {len(removed)} photos")
    if missing:
        s.flash(request, f"no such photo of {name}: {', '.join(missing)}", kind="warning")
    if removal.forgotten:
        s.flash(request, f"{name} had no photos left, so they were forgotten everywhere on this agent." + (
            f" Their photos are in the trash for {s.cfg.enrollment.trash_days:g} days: Undo below brings them back."
            if removal.trash else ""))
    await s.retrain(request)
    if removal.forgotten:
        return go("/people" + (f"?forgot={quote(removal.trash.name)}" if removal.trash else ""))
    return go(person_url(name))


async def rename(request: Request) -> Response:
    s = site(request)
    form = await request.form()
    old, new = valid_name(request.path_params["name"]), valid_name(str(form.get("new_name", "")))
    await attempt(ops.rename, s.console.gallery, old, new, refused=(InvalidNameError, NameTakenError, NotEnrolledError))
    s.flash(request, f"renamed {old} to {new}")
    await s.retrain(request)
    return go(person_url(new))


async def forget(request: Request) -> Response:
    """`face-agent forget`: the photos go to the trash; the People page then offers to undo it."""
    s = site(request)
    form = await request.form()
    name = valid_name(request.path_params["name"])
    folder = await attempt(s.console.forget, name, form.get("purge") == "1",
                           refused=(InvalidNameError, NotEnrolledError))
    s.flash(request, f"Forgot {name} everywhere on this agent." + (
        f" Their photos are in the trash for {s.cfg.enrollment.trash_days:g} days: Undo below brings them back."
        if folder else " The photos were deleted."))
    await s.retrain(request)
    return go("/people" + (f"?forgot={quote(folder)}" if folder else ""))


async def restore(request: Request) -> Response:
    """Undo forget: `face-agent restore PERSON --from FOLDER` (Gallery.restore), then retrain."""
    s = site(request)
    form = await request.form()
    person = valid_name(str(form.get("person", "")))
    name, photos = await attempt(s.console.restore, person, str(form.get("folder", "")),
                                 refused=(InvalidNameError, NotEnrolledError, NameTakenError))
    s.flash(request, f"{name} is back: {photos} photo{'' if photos == 1 else 's'} restored from the trash. "
                     "The faces the camera kept of them were deleted by forget and do not come back.")
    await s.retrain(request)
    return go(person_url(name))


async def retrain_now(request: Request) -> Response:
    await site(request).retrain(request)
    return go("/people")


routes = [
    Route("/people", people),
    Route("/people/upload", upload, methods=["POST"]),
    Route("/people/retrain", retrain_now, methods=["POST"]),
    Route("/people/restore", restore, methods=["POST"]),
    Route("/people/{name}", person),
    Route("/people/{name}/remove", remove_photo, methods=["POST"]),
    Route("/people/{name}/rename", rename, methods=["POST"]),
    Route("/people/{name}/forget", forget, methods=["POST"]),
]
