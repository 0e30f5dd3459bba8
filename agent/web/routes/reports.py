"""Reports: the last `face-agent eval` and `tune` reports in plain words (the printed text behind "details"),
running tune from the console, and applying the threshold it suggests to the config file in one tap."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.evaluation import EvalError
from agent.evaluation.report import reports_folder
from agent.web.settings import SettingError
from agent.web.site import attempt, go, site

RESTART = "sudo systemctl restart face-agent"  # deploy/face-agent.service


async def reports(request: Request) -> Response:
    s = site(request)
    found = await run_in_threadpool(s.console.reports)
    tune = await run_in_threadpool(s.console.tune_summary)
    return s.page(request, "reports.html", reports=found, folder=reports_folder(s.cfg), tune=tune,
                  config_file=s.console.config_file, restart=RESTART)


async def run_tune(request: Request) -> Response:
    s = site(request)
    report = await attempt(s.console.run_tune, refused=(EvalError,))
    threshold = report["suggested_threshold"]
    s.flash(request, f"Checked {len(report['photos'])} photos of {len(report['people'])} people. " +
            ("Not enough people to suggest a threshold (it needs two or more)." if threshold is None else
             f"Suggested threshold: {threshold:.3f} (now {s.cfg.recognition.distance_threshold:.3f})."))
    return go("/reports")


async def apply_threshold(request: Request) -> Response:
    """The threshold the last tune suggested, written into [recognition] distance_threshold (comments kept)."""
    s = site(request)
    form = await request.form()
    try:
        posted = float(str(form.get("threshold", "")))
    except ValueError:
        return PlainTextResponse("no threshold given", status_code=400)
    value, old = await attempt(s.console.apply_threshold, posted, refused=(EvalError, SettingError))
    was = "the default" if old is None else f"{old:.3f}" if isinstance(old, (int, float)) else str(old)
    s.flash(request, f"Threshold set to {value:.3f} (was {was}) in {s.console.config_file}. The agent reads its "
                     f"settings when it starts: restart it for the new threshold to take effect ({RESTART}). "
                     "This console uses it already.")
    return go("/reports")


routes = [
    Route("/reports", reports),
    Route("/reports/tune", run_tune, methods=["POST"]),
    Route("/reports/apply-threshold", apply_threshold, methods=["POST"]),
]
