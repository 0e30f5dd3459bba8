"""Reports: the last `face-agent eval` and `tune` reports, and running tune from the console."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.evaluation import EvalError
from agent.evaluation.report import reports_folder
from agent.web.site import go, site


async def reports(request: Request) -> Response:
    s = site(request)
    found = await run_in_threadpool(s.console.reports)
    return s.page(request, "reports.html", reports=found, folder=reports_folder(s.cfg))


async def run_tune(request: Request) -> Response:
    s = site(request)
    try:
        report = await run_in_threadpool(s.console.run_tune)
    except EvalError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    threshold = report["suggested_threshold"]
    s.flash(request, f"tune: {len(report['photos'])} photos of {len(report['people'])} people; suggested "
                     f"distance_threshold {'n/a' if threshold is None else f'{threshold:.3f}'}")
    return go("/reports")


routes = [
    Route("/reports", reports),
    Route("/reports/tune", run_tune, methods=["POST"]),
]
