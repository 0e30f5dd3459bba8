"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys

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


def usage_without_action(parser: argparse.ArgumentParser) -> None:
    """A command made of actions (`config check|show`...): without one, print its usage and exit 2."""
    def run(_args: argparse.Namespace) -> int:
        print(parser.format_help(), file=sys.stderr)
        return 2

    parser.set_defaults(func=run)
