"""Live: the latest annotated frame of each camera and the agent's figures (the panel is polled by htmx)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agent.web.site import site


async def home(request: Request) -> Response:
    return RedirectResponse("/live", status_code=303)


async def live(request: Request) -> Response:
    s = site(request)
    return s.page(request, "live.html", live=s.console.live())


async def live_panel(request: Request) -> Response:
    s = site(request)
    return s.fragment(request, "live_panel.html", live=s.console.live())


routes = [
    Route("/", home),
    Route("/live", live),
    Route("/live/panel", live_panel),
]
