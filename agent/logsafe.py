"""Logging values that come from outside (MQTT requests, file names, image headers) without letting them
forge log lines: `escape()` turns control characters (newlines, ANSI escapes, NUL...) into visible
backslash escapes and cuts the text to a sane length; `RateLimitedLog` keeps a flood of rejected requests
from flooding the journal; `redact()` hides the credentials of every URI in a text
(rtsp://admin:pw@cam/ -> rtsp://***@cam/): the one helper for every place a camera URI can be shown (log
lines - `RedactingFormatter` passes every record through it -, errors, the status file, the stats topic,
Home Assistant, the web console, `doctor`, `config show`). `RedactingFormatter` (the CLI's log handler) is
also the safety net under escape(): a message that still holds a control character is written escaped, so
no value a call forgot to escape can forge a line. `shown()` is escape() for the CLI's output (paths).

    log.warning("rejected %s", escape(fields.get("command")))
    print(f"{shown(path)}: 1 face")            # a path or name in the CLI's output
    rejections = RateLimitedLog(log, per_period=20, period=60.0)
    rejections.warning("remote enrollment: rejected %s", escape(code))
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

MAX_LOGGED_CHARS = 200  # longest outside value written into one log line
MAX_SHOWN_CHARS = 2000  # longest outside value (a path) in a line of the CLI's output
REDACTED = "***"

# scheme://USERINFO@host...: everything up to the last "@" before the path is the user and password
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@")
# ?user=...&password=... (cameras with HTTP snapshot/stream URLs, tokens)
_SECRET_QUERY = re.compile(r"(?P<key>[?&;](?:user|username|usr|login|password|passwd|pass|pwd|psw|token|"
                           r"access_token|auth|key|api_key|apikey|secret|signature|sig)=)[^&;#\s\"']*",
                           re.IGNORECASE)
# user-id=... user-pw=... (rtspsrc's properties in a gst: pipeline)
_GST_CREDENTIALS = re.compile(r"(?P<key>\buser-(?:id|pw)=)(?:\"(?:[^\"\\]|\\.)*\"|[^\s!]*)")


def redact(text: Any) -> str:
    """`text` with the credentials of every URI in it replaced by ***: the user and password before the
    host (rtsp://admin:pw@10.0.0.5/ -> rtsp://***@10.0.0.5/) and secret query values (?password=x ->
    ?password=***). Everything else is left as it is, so the text still says which camera it is about."""
    text = text if isinstance(text, str) else str(text)
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _SECRET_QUERY.sub(lambda m: f"{m.group('key')}{REDACTED}", text)
    return _GST_CREDENTIALS.sub(lambda m: f"{m.group('key')}{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line (message, arguments and traceback) went through `redact()`: a camera
    password reaches no log, whoever logs the URI (our modules, OpenCV's or paho's messages, an exception).
    A message (after %-formatting) holding a control character is written with it escaped (escape()): no
    file name or request field a call forgot to escape can start a forged line or send a terminal escape.
    The traceback of a logged exception keeps its lines (it is ours)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.isprintable():
            record = logging.makeLogRecord({**record.__dict__, "msg": escape(message, 1_000_000), "args": None})
        return redact(super().format(record))


def escape(value: Any, limit: int = MAX_LOGGED_CHARS) -> str:
    """A one-line, printable rendering of `value`: control and other non-printable characters are shown as
    backslash escapes (like repr), and the result is cut to `limit` characters with a note of what was cut."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else str(value)
    shown = text if text.isprintable() else repr(text)[1:-1]
    if len(shown) > limit:
        shown = f"{shown[:limit]}...(+{len(shown) - limit} chars)"
    return shown


def shown(value: Any) -> str:
    """`value` (a file name, a path, a person) for one line of the CLI's output: escaped like escape(), cut
    only when absurdly long."""
    return escape(value, MAX_SHOWN_CHARS)


class RateLimitedLog:
    """At most `per_period` records per `period` seconds through this object; the rest are counted and one
    line says how many were left out when the next period starts. Thread-safe."""

    def __init__(self, logger: logging.Logger, per_period: int = 20, period: float = 60.0) -> None:
        self.logger = logger
        self.per_period = per_period
        self.period = period
        self._lock = threading.Lock()
        self._start = -float("inf")
        self._count = 0
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: Any) -> bool:
        """Log unless over the limit; True if it was logged."""
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.period:
                suppressed, self._suppressed = self._suppressed, 0
                self._start, self._count = now, 0
                if suppressed:
                    self.logger.warning("%d similar messages were not logged in the last %.0f s (rate limit)",
                                        suppressed, self.period)
            if self._count >= self.per_period:
                self._suppressed += 1
                return False
            self._count += 1
        self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, msg, *args)

    @property
    def suppressed(self) -> int:
        with self._lock:
            return self._suppressed
