"""`face-agent web`: the browser console (Live, Events, People, Unknown people), agent/web/.

Needs the optional extra: `pip install 'face-agent[web]'`. Listens on `[web] host`:`port` (127.0.0.1:8080);
any address but loopback needs `[web] password_hash` (`face-agent web --hash-password` prints one).
"""

from __future__ import annotations

import argparse
import errno
import getpass
import logging
import socket
import sys

from agent.commands._common import config_of, fail
from agent.config import find_config

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
    try:  # the port is taken before anything says the console is on: a busy port is one clear error
        sock = _listen(web.host, web.port)
    except OSError as exc:
        why = "already in use (another face-agent web, or another program: `ss -ltnp` says which)" \
            if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        return fail(f"cannot listen on {web.host}:{web.port}: {why}; pick another port with --port or [web] port")
    app = create_app(cfg, find_config(getattr(args, "config", None)))
    url_host = f"[{web.host}]" if ":" in web.host else web.host
    print(f"face-agent web console on http://{url_host}:{web.port}/ "
          f"({'login required' if web.password_hash else 'no login: loopback only'})", flush=True)
    config = uvicorn.Config(app, log_level="warning", server_header=False, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (IPv6 for an address with ':'), as uvicorn would bind it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock
