"""`face-agent config check|show`: validate the configuration, or print the effective one.

`check` loads agent.toml (plus environment overrides), then checks that the data folders are writable
(or can be created) and that the TLS and key files it names are readable. Problems: one line each on
stderr, exit code 2. `show` prints the effective configuration as TOML (or JSON with --json), secrets
masked; feeding it back as a config file gives the same settings except the masked secrets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from agent.commands._common import action, actions_of
from agent.config import Config, config_as_dict, find_config, load_config
from agent.files import folder_problem

PATH_KEYS = ("storage", "engines", "svm", "faces")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check or show the configuration (agent.toml)")
    actions = actions_of(p, "config_action")
    action(actions, "check", run_check, help="validate agent.toml: types, values, writable folders, TLS files")
    show = action(actions, "show", run_show, help="print the effective configuration (secrets masked)")
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")



def _source(args: argparse.Namespace) -> str:
    found = find_config(getattr(args, "config", None))
    return str(found) if found else "built-in defaults (no agent.toml found)"


def problems(cfg: Config) -> list[str]:
    """Everything that would stop the agent at run time although the file itself is valid."""
    out = []
    for key in PATH_KEYS:
        path = cfg.path(key)
        reason = folder_problem(path)
        if reason:
            out.append(f"paths.{key}: {path} {reason}")
    files = [("mqtt.ca_file", cfg.mqtt.ca_file), ("mqtt.cert_file", cfg.mqtt.cert_file),
             ("mqtt.key_file", cfg.mqtt.key_file)] if cfg.mqtt.enabled and cfg.mqtt.tls else []
    files.append(("remote_enroll.key_file", cfg.remote_enroll.key_file))
    for name, value in files:
        if not value:
            continue
        path = cfg.resolve(value)
        if not path.is_file():
            out.append(f"{name}: {path} does not exist")
        elif not os.access(path, os.R_OK):
            out.append(f"{name}: {path} is not readable")
    if cfg.mqtt.enabled and bool(cfg.mqtt.cert_file) != bool(cfg.mqtt.key_file):
        out.append("mqtt: cert_file and key_file go together (TLS client certificate)")
    return out


def run_check(args: argparse.Namespace) -> int:
    cfg = load_config(getattr(args, "config", None))  # ConfigError -> one line, exit 2 (agent.cli)
    found = problems(cfg)
    for line in found:
        print(f"face-agent: configuration error: {line}", file=sys.stderr)
    if found:
        return 2
    print(f"configuration OK: {_source(args)}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    cfg = load_config(getattr(args, "config", None))
    data = config_as_dict(cfg, mask_secrets=True)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    header = [f"# effective face-agent configuration from {_source(args)}",
              "# (environment overrides applied, secrets masked)"]
    header += [f"# paths.{k} -> {cfg.path(k)}" for k in PATH_KEYS]
    print("\n".join(header) + "\n\n" + to_toml(data), end="")
    return 0


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(data: dict) -> str:
    """A {section: {key: value}} dict as TOML (the shapes config_as_dict produces)."""
    out = []
    for section, values in data.items():
        if section == "sources":
            for camera in values:
                out.append("[[sources]]")
                out.extend(f"{key} = {_toml_value(value)}" for key, value in camera.items()
                           if not isinstance(value, dict))
                for table, table_values in camera.items():
                    if isinstance(table_values, dict):
                        out.append(f"[sources.{table}]")
                        out.extend(f"{key} = {_toml_value(value)}" for key, value in table_values.items())
                out.append("")
            continue
        out.append(f"[{section}]")
        out.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        out.append("")
    return "\n".join(out)
