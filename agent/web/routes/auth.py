"""Login and logout (the password check and session are agent.web.security's)."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from agent.logsafe import escape
from agent.web.security import CSRF_FIELD, local_path, same_token, verify_password
from agent.web.site import Site, go, site

log = logging.getLogger(__name__)

LOGIN_DELAY = 0.5  # seconds a wrong password waits (slows guessing; lockouts: security.LoginThrottle)
MAX_LOGIN_BODY = 4096  # bytes of a login form (the password, the CSRF token, the page to go back to)


async def login(request: Request) -> Response:
    s = site(request)
    if not s.web.password_hash:
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        return s.page(request, "login.html", error=None, next=local_path(request.query_params.get("next", "")))
    client = request.client.host if request.client else "?"
    wait = s.throttle.refused(client)
    if wait:
        return _refuse(s, request, client, wait, "locked out after wrong passwords")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return PlainTextResponse(f"a login is at most {MAX_LOGIN_BODY} bytes", status_code=413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    after = local_path(form.get("next", ""))  # the page that was asked for, back after the login
    if not same_token(form.get(CSRF_FIELD, ""), request.session):
        return s.page(request, "login.html", 403, error="The form expired: try again.", next=after)
    async with s.throttle.check() as slot:
        if not slot:
            return _refuse(s, request, client, 1.0, "too many logins at once", after)
        if s.throttle.locked(client):  # locked out while it waited for the slot
            return _refuse(s, request, client, s.throttle.locked(client), "locked out after wrong passwords", after)
        good = await run_in_threadpool(verify_password, form.get("password", ""), s.web.password_hash)
    if not good:
        lockout = s.throttle.failed(client)
        await asyncio.sleep(LOGIN_DELAY)
        s.login_log.warning("web: failed login from %s%s", escape(client),
                            f": locked out for {lockout:.0f} s" if lockout else "")
        return s.page(request, "login.html", 401, error="Wrong password.", next=after)
    s.throttle.succeeded(client)
    log.info("web: login from %s", escape(client))
    request.session.clear()
    request.session.update(user=s.logins.start(), csrf=secrets.token_urlsafe(32))
    return RedirectResponse(after, status_code=303)


def _refuse(s: Site, request: Request, client: str, wait: float, why: str, after: str = "/") -> Response:
    s.refusal_log.warning("web: login from %s refused (%s, retry in %.0f s)", escape(client), why, wait)
    response = s.page(request, "login.html", 429, error=f"{why[0].upper()}{why[1:]}: try again in "
                      f"{math.ceil(wait)} s.", next=after)
    response.headers["Retry-After"] = str(math.ceil(wait))
    return response


async def logout(request: Request) -> Response:
    s = site(request)
    s.logins.end(request.session.get("user"))
    request.session.clear()
    return go("/login" if s.web.password_hash else "/")


routes = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
