"""Times as people type them in a filter: `face-agent events --since 2h` and the web console's Events page.

A small helper every room may use (the command and the console both read it; neither imports the other)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str, now: float | None = None) -> float:
    """Epoch seconds of '2024-05-01', '2024-05-01T12:00', an ISO time with Z/offset (naive = UTC), or a
    relative age like '30m', '2h', '7d' (that long ago). ValueError with the accepted forms otherwise."""
    text = value.strip()
    m = _RELATIVE.match(text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(
            f"{value!r}: expected a date/time like 2024-05-01 or 2024-05-01T12:00:00Z, "
            "or an age like 30m, 2h, 7d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
