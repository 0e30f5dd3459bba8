"""The console's guard: password hashes, the login session, CSRF tokens, request size, safe file paths.

- Password: `[web] password_hash` (or $FACE_AGENT_WEB_PASSWORD_HASH) holds `scrypt$n$r$p$salt$hash` (base64,
  `face-agent web --hash-password` makes one). Without one the console only listens on loopback.
- Session: a signed cookie (Starlette's SessionMiddleware, a key made at start: a restart ends every login),
  HttpOnly, SameSite=Strict, lasting `[web] session_hours`. It carries the CSRF token and, once logged in, `user`:
  a login id the console keeps (`Logins`), so logout and expiry end it on the server as well.
- `Guard` (an ASGI middleware behind the session): with a password, every path but /login and the
  package's static files needs the login (pages redirect to /login, anything else gets 401); every request
  that may change something (not GET/HEAD) needs the session's CSRF token in the `X-CSRF-Token` header (htmx
  sends it from the page, see base.html) - only the login form carries it as a form field; bodies above
  the upload limit are refused with 413 before they are read; every answer gets no-sniff, no-framing and a
  script policy of 'self' only.
- `safe_file`: a file inside one of the agent's folders, named by parts that cannot climb out of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PUBLIC_PATHS = ("/login", "/static/")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                  b"script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
]


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` for `[web] password_hash`."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_hash_format(stored: str) -> None:
    """ValueError when `stored` is not a hash from hash_password (a plain password pasted by mistake)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        raise ValueError("[web] password_hash is not a hash from `face-agent web --hash-password`")
    base64.b64decode(parts[4], validate=True)
    base64.b64decode(parts[5], validate=True)


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=SCRYPT_MAXMEM, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def csrf_token(session: dict) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def same_token(given: str | None, session: dict) -> bool:
    want = session.get("csrf")
    return bool(given and want) and hmac.compare_digest(str(given), str(want))


class Logins:
    """The logins this console gave out (id -> expiry): logout and expiry end one on the server too, so a
    copied cookie stops working with them (the signed cookie alone would stay valid until it expires)."""

    def __init__(self, lifetime: float, clock: Any = time.time) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def start(self) -> str:
        now = self._clock()
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        login = secrets.token_urlsafe(32)
        self._expiry[login] = now + self.lifetime
        return login

    def valid(self, login: Any) -> bool:
        return isinstance(login, str) and self._expiry.get(login, 0.0) > self._clock()

    def end(self, login: Any) -> None:
        if isinstance(login, str):
            self._expiry.pop(login, None)


class BodyTooLargeError(Exception):
    pass


async def _plain(send: Any, status: int, text: str, headers: list | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def local_path(value: str, default: str = "/") -> str:
    """`value` when it is a path on this site (a login's `next`), else `default`: no scheme, host or `//`."""
    parts = urlsplit(value)
    if not value.startswith("/") or value.startswith("//") or "\\" in value or parts.scheme or parts.netloc \
            or any(ord(c) < 32 for c in value):
        return default
    return value


class Guard:
    """Login, CSRF and body size for every request (see the module docstring). Sits inside SessionMiddleware."""

    def __init__(self, app: Any, *, password_hash: str, max_body: int, logins: Logins) -> None:
        self.app = app
        self.password_hash = password_hash
        self.max_body = max_body
        self.logins = logins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = scope["session"]
        csrf_token(session)
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        public = path == PUBLIC_PATHS[0] or path.startswith(PUBLIC_PATHS[1])
        if self.password_hash and not self.logins.valid(session.get("user")) and not public:
            if method in SAFE_METHODS and "hx-request" not in headers:
                asked = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
                where = "/login" if path == "/" else "/login?" + urlencode({"next": asked})
                await _plain(send, 303, "login needed", [(b"location", where.encode("latin-1"))])
            else:
                await _plain(send, 401, "login needed", [(b"hx-redirect", b"/login")])
            return
        if method not in SAFE_METHODS and path != "/login" and not same_token(headers.get(CSRF_HEADER), session):
            await _plain(send, 403, "missing or wrong CSRF token: reload the page")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _plain(send, 413, f"the request is larger than {self.max_body} bytes")
            return

        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLargeError()
            return message

        async def secured_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except BodyTooLargeError:
            await _plain(send, 413, f"the request is larger than {self.max_body} bytes")


def safe_file(root: Path, *parts: str) -> Path | None:
    """root/parts... when it is an existing file inside `root` (no '..', separators, hidden names or links out)."""
    for part in parts:
        if not part or part.startswith(".") or "/" in part or "\\" in part or "\0" in part:
            return None
    base = root.resolve()
    try:
        path = base.joinpath(*parts).resolve()
    except (OSError, ValueError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path
