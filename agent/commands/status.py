"""`face-agent status`: the live state of the running agent, read from <storage>/status.json.

The service rewrites that file every `[service] status_interval` seconds (agent.health.write_status).
Exit codes: 0 running and ok, 1 running but degraded, 3 not running (no file, or a stale one),
4 unknown (the file cannot be read: permissions).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from agent.commands._common import config_of
from agent.health import is_stale, read_status, status_age, status_path

EXIT_OK, EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 1, 3, 4


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show whether the agent runs and how it is doing",
                       description="Reads the running agent's status file (<storage>/status.json). Exit status: "
                       f"{EXIT_OK} running and healthy, {EXIT_DEGRADED} running but degraded, {EXIT_NOT_RUNNING} not "
                       "running (no status file, a stale one, or the agent stopped), "
                       f"{EXIT_UNKNOWN} the status file cannot be read.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    path = status_path(cfg)
    try:
        data = read_status(path)
    except PermissionError:
        print(f"face-agent: cannot read {path}: permission denied (use sudo, or run as the service user)",
              file=sys.stderr)
        return EXIT_UNKNOWN
    now = time.time()
    if data is None:
        result = {"running": False, "stale": False, "stopped": False, "age": None, "path": str(path),
                  "status": None}
        code = EXIT_NOT_RUNNING
    else:
        stale = is_stale(data, now=now, interval=cfg.service.status_interval)
        state = (data.get("health") or {}).get("state", "unknown")
        stopped = state == "stopped"  # the service's last words on a clean shutdown
        result = {"running": not (stale or stopped), "stale": stale, "stopped": stopped,
                  "age": round(status_age(data, now), 1), "path": str(path), "status": data}
        code = EXIT_NOT_RUNNING if stale or stopped else (EXIT_OK if state == "ok" else EXIT_DEGRADED)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        return code
    if data is None:
        print(f"face-agent: not running (no status file at {path})")
        return code
    print(_human(result, now))
    return code


def _flat(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested stats as ("source fps", 14.8) pairs."""
    out: list[tuple[str, object]] = []
    for key, value in values.items():
        name = f"{prefix}{key.replace('_', ' ')}"
        if isinstance(value, dict):
            out += _flat(value, f"{name} ")
        else:
            out.append((name, value))
    return out


def _human(result: dict, now: float) -> str:
    data = result["status"]
    health = data.get("health") or {}
    lines = []
    if result["stopped"]:
        lines.append(f"face-agent: not running: stopped {_ago(result['age'])} (pid {data.get('pid', '?')})")
    elif result["stale"]:
        lines.append(f"face-agent: not running / stale: last status written {_ago(result['age'])} "
                     f"(pid {data.get('pid', '?')}, {result['path']})")
    else:
        lines.append(f"face-agent: running, {health.get('state', 'unknown')} "
                     f"(pid {data.get('pid', '?')}, updated {_ago(result['age'])})")
    for reason in health.get("reasons", []):
        lines.append(f"  ! {reason}")
    info = [("agent", data.get("agent_id")), ("version", data.get("version")), ("host", data.get("hostname"))]
    if data.get("started_at"):
        info.append(("uptime", _duration(float(data["written_at"]) - float(data["started_at"]))))
    for key, value in (health.get("checks") or {}).items():
        info.append((key.replace("_", " "), value))
    stats = dict(data.get("stats") or {})
    if len(stats.get("cameras") or {}) <= 1:  # one camera: its figures are the agent's
        stats.pop("cameras", None)
    info += _flat(stats)
    width = max((len(k) for k, v in info if v is not None), default=0)
    for key, value in info:
        if value is None:
            continue
        if key.endswith((" since", " at")) and isinstance(value, (int, float)):
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        elif isinstance(value, float):
            value = f"{value:.2f}".rstrip("0").rstrip(".")
        lines.append(f"  {key:<{width}}  {value}".rstrip())
    return "\n".join(lines)
