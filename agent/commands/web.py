"""`face-agent web`: the browser console (Live, Events, People, Unknown people), agent/web/.

Needs the optional extra: `pip install 'face-agent[web]'`. Listens on `[web] host`:`port` (127.0.0.1:8080);
any address but loopback needs `[web] password_hash` (`face-agent web --hash-password` prints one).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from agent.commands._common import config_of, fail

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="the web console: live view, events, people (needs the 'web' extra)")
    p.add_argument("--host", help="listen address (default [web] host, 127.0.0.1); not loopback: needs a password")
    p.add_argument("--port", type=int, help="TCP port (default [web] port, 8080)")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password (twice on a terminal, else one line of stdin) and print the hash for "
                        "[web] password_hash")
    p.set_defaults(func=run)


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    from agent.web.security import check_hash_format, hash_password, is_loopback  # stdlib only

    if args.hash_password:
        try:
            print(hash_password(_read_password()))
        except ValueError as exc:
            return fail(str(exc), 2)
        return 0
    cfg = config_of(args)
    web = cfg.web
    if args.host:
        web.host = args.host
    if args.port is not None:
        if not 1 <= args.port <= 65535:
            return fail(f"--port {args.port}: between 1 and 65535", 2)
        web.port = args.port
    if web.password_hash:
        try:
            check_hash_format(web.password_hash)
        except ValueError as exc:
            return fail(str(exc), 2)
    elif not is_loopback(web.host):
        return fail(f"listening on {web.host} needs a login: set [web] password_hash (face-agent web "
                    "--hash-password) or $FACE_AGENT_WEB_PASSWORD_HASH, or listen on 127.0.0.1", 2)
    try:
        import uvicorn

        from agent.web.app import create_app
    except ImportError as exc:
        return fail(f"the web console needs the 'web' extra: pip install 'face-agent[web]' ({exc})")
    if not is_loopback(web.host):
        log.warning("the console listens on %s without TLS: put a reverse proxy with TLS in front of it", web.host)
    app = create_app(cfg)
    url_host = f"[{web.host}]" if ":" in web.host else web.host
    print(f"face-agent web console on http://{url_host}:{web.port}/ "
          f"({'login required' if web.password_hash else 'no login: loopback only'})", flush=True)
    uvicorn.run(app, host=web.host, port=web.port, log_level="warning", server_header=False,
                proxy_headers=False)
    return 0
