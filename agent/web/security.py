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
- `LoginThrottle`: password guessing and the memory a guess costs are bounded. scrypt takes ~32 MB and
  ~0.1 s of CPU a check, so at most `CHECKS_AT_ONCE` run at once and at most `MAX_WAITING` more wait for
  them (the rest get 429 at once, without a check); a client (its address) that fails `[web]
  max_failed_logins` times is locked out for `[web] lockout_seconds`, doubled at each further failure (up
  to `MAX_LOCKOUT`); all clients together get `[web] login_checks_per_minute` checks. A locked-out client
  gets 429 with Retry-After, even with the right password.
- `safe_file`: a file inside one of the agent's folders, named by parts that cannot climb out of it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator
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


CHECKS_AT_ONCE = 1  # password checks running at once (scrypt: ~32 MB each)
MAX_WAITING = 8  # login requests waiting for a check; more are refused at once (429)
MAX_LOCKOUT = 3600.0  # seconds: the longest lockout of one client
MAX_CLIENTS = 10_000  # clients with failures remembered (the oldest are forgotten first)


class LoginThrottle:
    """Who may try a password now (see the module docstring). `refused(client)` says how many seconds a
    client must wait (0: go on); `check()` is the bounded slot a password check runs in; `failed` and
    `succeeded` keep each client's count. Runs on the event loop (not thread-safe)."""

    def __init__(self, max_failures: int = 5, lockout: float = 60.0, checks_per_minute: int = 30,
                 clock: Any = time.monotonic) -> None:
        self.max_failures = max_failures
        self.lockout = lockout
        self.checks_per_minute = checks_per_minute
        self._clock = clock
        self._clients: collections.OrderedDict[str, list[float]] = collections.OrderedDict()  # [failures, until, last]
        self._checks: collections.deque[float] = collections.deque()  # times of the last minute's checks
        self._slots = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._pending = 0

    def locked(self, client: str) -> float:
        """Seconds `client` stays locked out (0: not locked out)."""
        entry = self._clients.get(client)
        return max(0.0, entry[1] - self._clock()) if entry else 0.0

    def refused(self, client: str) -> float:
        """Seconds `client` must wait before its next password check (0: it may try now)."""
        now = self._clock()
        if self.locked(client):
            return self.locked(client)
        while self._checks and self._checks[0] <= now - 60.0:
            self._checks.popleft()
        if len(self._checks) >= self.checks_per_minute:
            return self._checks[0] + 60.0 - now
        return 0.0

    @contextlib.asynccontextmanager
    async def check(self) -> AsyncIterator[bool]:
        """A slot for one password check: yields False (and runs nothing) when too many already wait."""
        if self._pending >= CHECKS_AT_ONCE + MAX_WAITING:
            yield False
            return
        self._pending += 1
        try:
            async with self._slots:
                self._checks.append(self._clock())
                yield True
        finally:
            self._pending -= 1

    def failed(self, client: str) -> float:
        """Count a wrong password; the lockout (seconds) it starts, 0 when none."""
        now = self._clock()
        entry = self._clients.pop(client, None)
        if entry is None or now - entry[2] > MAX_LOCKOUT:  # no failure for an hour: start again
            entry = [0, 0.0, now]
        entry[0] += 1
        entry[2] = now
        over = int(entry[0]) - self.max_failures
        wait = min(self.lockout * 2 ** min(over, 32), MAX_LOCKOUT) if over >= 0 else 0.0
        if wait:
            entry[1] = now + wait
        self._clients[client] = entry
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        return wait

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


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
