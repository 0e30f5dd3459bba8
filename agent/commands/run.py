"""`face-agent run`: the agent itself: watch a source, name faces, log and publish events."""

from __future__ import annotations

import argparse
import logging
import sys

from agent.commands._common import config_of, fail
from agent.dbcheck import DatabaseCheckError
from agent.files import StorageError
from agent.frame_output import OutputError
from agent.service import Service, install_signal_handlers
from agent.sources import SourceError
from agent.vision.backends import RunnerError
from agent.vision.embed import ModelFileError

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent on a camera, stream, video file or folder of images",
                       description="Runs until the source ends or SIGTERM/SIGINT. Events go to the SQLite log "
                       "and, when [mqtt] enabled, to <prefix>/events.")
    p.add_argument("--source", help="overrides [source] uri: camera index, /dev/videoN, csi://0, rtsp://..., "
                   "a video file or a folder of images")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--every-frame", dest="every_frame", action="store_true", default=None,
                        help="process every frame in order (default for files and folders)")
    frames.add_argument("--latest-frame", dest="every_frame", action="store_false",
                        help="always take the newest frame, dropping the rest (default for live sources)")
    p.add_argument("--show", metavar="PATH", help="write annotated frames to PATH (.jpg/.png: the latest "
                   "frame, overwritten; .mp4/.avi: a video). Off by default: drawing is not in the hot path")
    p.add_argument("--frames-out", metavar="PATH", help="write one JSON line per processed frame to PATH: every "
                   "face drawn, with its track, box, status, name, confidence (docs/events.md); --show draws the same")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: no limit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    service = Service(cfg, source_uri=args.source, every_frame=args.every_frame, show=args.show,
                      status_line=sys.stderr.isatty() and not args.quiet, max_frames=args.max_frames,
                      frames_out=args.frames_out)
    install_signal_handlers(service)
    try:
        return service.run()
    except (SourceError, StorageError, RunnerError, ModelFileError, DatabaseCheckError, OutputError) as exc:
        return fail(str(exc), 2)
