"""The `face-agent` command: parses arguments and hands over to one module of `agent.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from agent import __version__
from agent.config import ConfigError
from agent.files import STORAGE_ERRNOS, StorageError, storage_hint
from agent.logsafe import RedactingFormatter, redact
from agent.memory import limit_heap_growth

# subcommand modules in agent/commands/, in the order `--help` lists them
COMMANDS = [
    "enroll",
    "identify",
    "people",
    "remove",
    "forget",
    "restore",
    "unknowns",
    "name",
    "reject",
    "rename",
    "run",
    "eval",
    "tune",
    "config",
    "status",
    "models",
    "events",
    "remote",
    "engines",
    "doctor",
    "web",
]

log = logging.getLogger(__name__)

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head -1` leaves: output cut short by the reader


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=max(level, logging.DEBUG), handlers=[handler])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="face-agent", description="Edge-to-cloud face recognition agent.")
    parser.add_argument("--version", action="version", version=f"face-agent {__version__}")
    parser.add_argument("-c", "--config", help="agent.toml to use (default: $FACE_AGENT_CONFIG, ./agent.toml, "
                        "/etc/face-agent/agent.toml, else built-in defaults)")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"agent.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    limit_heap_growth()
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(0 if args.quiet else args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below, not as a traceback
        return code
    except BrokenPipeError:  # `face-agent events --json | head -3`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"face-agent: configuration error: {redact(exc)}", file=sys.stderr)
        return 2
    except StorageError as exc:  # full disk, read-only mount: one line, not a traceback
        print(f"face-agent: {redact(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS or not exc.filename:
            raise
        folder = os.path.dirname(os.path.abspath(exc.filename))
        print(f"face-agent: cannot write {exc.filename}: {exc.strerror} ({storage_hint(folder)})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: say so (commands with work to resume say more themselves)
        print(f"\nface-agent: {args.command} interrupted", file=sys.stderr)
        return 130
