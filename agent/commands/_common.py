"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys

from agent.config import Config, load_config


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def show_progress() -> bool:
    return sys.stderr.isatty()


def fail(message: str, code: int = 1) -> int:
    print(f"face-agent: {message}", file=sys.stderr)
    return code
