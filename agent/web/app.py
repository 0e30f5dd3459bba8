"""The web console's app (Starlette + Jinja2 + htmx): the page modules mounted behind the console's guards.

Pages and actions live one module per page in `agent.web.routes` (Live, Events, People, Unknown people,
Reports, login, files); what they read and change is `agent.web.console.Console`: the status file, the live
frame, the event log, the gallery's folders and the sightings, changed only through `agent.gallery.Gallery`
and `agent.naming` (the same operations as the CLI). After every change the console retrains through the
gallery (`ensure_trained`, SVMs in a child process) and saves the classifier in `[paths] svm`; the running
agent notices the new file at its next health check (`[service] status_interval`) and swaps it in between
two frames, as after a remote enrollment - no restart.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from agent.config import Config
from agent.web.routes import auth, events, files, live, people, reports, unknowns
from agent.web.routes.people import MULTIPART_OVERHEAD
from agent.web.security import Guard, is_loopback
from agent.web.site import HERE, Site

PAGES = (live, auth, events, people, reports, unknowns, files)  # each module's `routes`, in this order


def create_app(cfg: Config, config_file: Path | None = None) -> Starlette:
    """The console for `cfg`, read from `config_file` (the file Reports changes the threshold in; None: none)
    (see the module docstring and agent/web/security.py)."""
    web = cfg.web
    site = Site(cfg, config_file)
    routes = [route for page in PAGES for route in page.routes]
    routes.append(Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"))
    hosts = ["*"] if not is_loopback(web.host) else ["127.0.0.1", "localhost", "::1", "[::1]"]
    max_body = web.max_upload_files * (web.max_upload_bytes + MULTIPART_OVERHEAD)
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts),  # loopback: no DNS rebinding from a web page
        Middleware(SessionMiddleware, secret_key=secrets.token_hex(32), session_cookie="face_agent_session",
                   max_age=int(web.session_hours * 3600), same_site="strict"),
        Middleware(Guard, password_hash=web.password_hash, max_body=max_body, logins=site.logins),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        yield
        site.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.site = site
    app.state.console = site.console
    return app
