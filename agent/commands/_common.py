"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from agent.config import Config, load_config
from agent.logsafe import redact, shown


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def show_progress() -> bool:
    return sys.stderr.isatty()


def fail(message: str, code: int = 1) -> int:
    """Print the error (credentials of any URI in it redacted, control characters escaped) and return `code`."""
    print(f"face-agent: {redact(shown(message))}", file=sys.stderr)
    return code


def actions_of(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """The ACTIONs of a command made of actions (`config check|show`...; add each with `action`): without one,
    the command prints its usage and exits 2."""
    def run(_args: argparse.Namespace) -> int:
        print(parser.format_help(), file=sys.stderr)
        return 2

    parser.set_defaults(func=run)
    return parser.add_subparsers(dest=dest, metavar="ACTION")


def action(actions: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int],
           **kwargs: Any) -> argparse.ArgumentParser:
    """One ACTION of a command made of actions (`config check`): its parser (`help`, `description`...), run by
    `func`."""
    parser = actions.add_parser(name, **kwargs)
    parser.set_defaults(func=func)
    return parser
