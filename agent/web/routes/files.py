"""Images for the pages, only from the agent's own folders (agent.web.security.safe_file)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent.evaluation.report import REPORT_KINDS, reports_folder
from agent.images import is_image_path
from agent.web.security import safe_file
from agent.web.site import site

PLOTS = {f"{kind}{variant}.png" for kind in REPORT_KINDS for variant in ("", "-phone")}  # agent.evaluation.report


async def file(request: Request) -> Response:
    s = site(request)
    console = s.console
    kind, parts = request.path_params["kind"], request.path_params["rest"].split("/")
    roots = {"photo": console.gallery.raw, "chip": console.gallery.aligned, "sighting": console.sightings.folder}
    path = None
    if kind in roots and len(parts) == 2:
        path = safe_file(roots[kind], *parts)
    elif kind == "report" and len(parts) == 1 and parts[0] in PLOTS and reports_folder(s.cfg) is not None:
        path = safe_file(reports_folder(s.cfg), parts[0])
    elif kind == "live" and len(parts) == 1 and parts[0] in console.live_frames().values():
        path = safe_file(console.storage, parts[0])
    if path is None or not is_image_path(path):
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, headers={"Cache-Control": "no-store"})


routes = [
    Route("/files/{kind}/{rest:path}", file),
]
