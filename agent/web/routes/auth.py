"""Login and logout (the password check and session are agent.web.security's)."""

from __future__ import annotations

import asyncio
import logging
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agent.logsafe import escape
from agent.web.security import CSRF_FIELD, local_path, same_token, verify_password
from agent.web.site import go, site

log = logging.getLogger(__name__)

LOGIN_DELAY = 0.5  # seconds a wrong password waits (slows guessing)


async def login(request: Request) -> Response:
    s = site(request)
    if not s.web.password_hash:
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        return s.page(request, "login.html", error=None, next=local_path(request.query_params.get("next", "")))
    form = await request.form()
    after = local_path(str(form.get("next", "")))  # the page that was asked for, back after the login
    if not same_token(str(form.get(CSRF_FIELD, "")), request.session):
        return s.page(request, "login.html", 403, error="The form expired: try again.", next=after)
    if not await run_in_threadpool(verify_password, str(form.get("password", "")), s.web.password_hash):
        await asyncio.sleep(LOGIN_DELAY)
        log.warning("web: failed login from %s", escape(request.client.host if request.client else "?"))
        return s.page(request, "login.html", 401, error="Wrong password.", next=after)
    request.session.clear()
    request.session.update(user=s.logins.start(), csrf=secrets.token_urlsafe(32))
    return RedirectResponse(after, status_code=303)


async def logout(request: Request) -> Response:
    s = site(request)
    s.logins.end(request.session.get("user"))
    request.session.clear()
    return go("/login" if s.web.password_hash else "/")


routes = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
