"""What every page of the web console shares: the data layer, the templates, flash messages, the login state.

One `Site` is built per app (agent.web.app.create_app) and kept in `app.state.site`; the route modules
(agent.web.routes) reach it with `site(request)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from agent.config import Config
from agent.enrollment_ops import InvalidNameError, validate_person_name
from agent.logsafe import RateLimitedLog
from agent.web.console import Console, iso, utc
from agent.web.security import Logins, LoginThrottle, csrf_token

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
T = TypeVar("T")
MAX_FLASH, MAX_FLASH_SESSIONS = 100, 1000  # messages kept for a session's next page; sessions with messages


class Site:
    """The console's data layer (`Console`), its templates and the sessions' flash messages."""

    def __init__(self, cfg: Config, config_file: Path | None = None) -> None:
        self.cfg = cfg
        self.web = cfg.web
        self.console = Console(cfg, config_file)
        self.logins = Logins(self.web.session_hours * 3600)
        self.throttle = LoginThrottle(self.web.max_failed_logins, self.web.lockout_seconds,
                                      self.web.login_checks_per_minute)
        self.login_log = RateLimitedLog(log, per_period=20, period=60.0)  # failed logins and lockouts
        self.refusal_log = RateLimitedLog(log, per_period=5, period=60.0)  # logins refused without a check
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(utc=utc, iso=iso, min_face=cfg.enrollment.min_face_size)

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        """A full page: the template with the session's CSRF token and its flash messages."""
        flash = self.console.flashes.pop(csrf_token(request.session), [])
        logged_in = not self.web.password_hash or self.logins.valid(request.session.get("user"))
        return self.templates.TemplateResponse(request, name, {
            "csrf": csrf_token(request.session), "login": bool(self.web.password_hash), "flash": flash,
            "logged_in": logged_in, "path": request.url.path, **context}, status_code=status_code)

    def fragment(self, request: Request, name: str, **context: Any) -> Response:
        """A part of a page (htmx swaps it in)."""
        return self.templates.TemplateResponse(request, name, context)

    def flash(self, request: Request, *messages: str, kind: str = "done") -> None:
        """Messages for the session's next page, kept here (a cookie holds 4 kB: not enough for an upload's);
        `kind` "done" (what was done) or "warning" (what was refused, and why)."""
        flashes = self.console.flashes
        key = csrf_token(request.session)
        flashes[key] = [*flashes.pop(key, []), *((kind, m) for m in messages)][-MAX_FLASH:]
        while len(flashes) > MAX_FLASH_SESSIONS:
            flashes.pop(next(iter(flashes)))

    async def retrain(self, request: Request) -> None:
        """Retrain after a change (Console.retrain in a thread) and say how it went in a flash message."""
        try:
            info = await run_in_threadpool(self.console.retrain)
        except Exception as exc:  # the change is on disk; training failing must say so, not lose it
            log.exception("web: retraining failed")
            self.flash(request, f"Retraining failed: {exc}", kind="warning")
            return
        self.flash(request, f"classifier {'retrained' if info['retrained'] else 'already up to date'}: "
                            f"{info['people']} people")

    def close(self) -> None:
        self.console.close()


def site(request: Request) -> Site:
    """The Site of the app serving `request`."""
    return request.app.state.site


def go(url: str) -> Response:
    """After an htmx action: load `url` as a page."""
    return Response(status_code=204, headers={"HX-Redirect": url})


async def attempt(call: Callable[..., T], *args: Any, refused: tuple[type[Exception], ...],
                  status: int = 400) -> T:
    """`call(*args)` in a thread (it reads or changes files and databases); one of the `refused` errors answers
    the request with its message as plain text and `status` (Starlette's HTTPException), as every action does
    when the console says no."""
    try:
        return await run_in_threadpool(call, *args)
    except refused as exc:
        raise HTTPException(status, str(exc)) from exc


def valid_name(name: str, status: int = 400) -> str:
    """validate_person_name; a name it refuses answers the request as `attempt` does (its message, `status`)."""
    try:
        return validate_person_name(name)
    except InvalidNameError as exc:
        raise HTTPException(status, str(exc)) from exc


def person_url(name: str) -> str:
    return "/people/" + quote(name, safe="")
