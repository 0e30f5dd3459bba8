"""A real RTSP camera for the tests: GStreamer's gst-rtsp-server (tests/rtsp_server.py) in a child process
of the SYSTEM python3, serving a clip as H.264 with basic authentication on a free 127.0.0.1 port.

    camera = RTSPServer(clip, user="admin", password="pa:ss@word").start()
    camera.url            # rtsp://admin:pa%3Ass%40word@127.0.0.1:PORT/cam
    camera.stop(); camera.start()   # the camera reboots (same port)
    camera.stall(); camera.resume() # connections stay open, no frames (a hung camera)

Needs Debian's python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/-bad/-ugly and
gstreamer1.0-libav (the Makefile's system-deps and .ci/run install them); `available()` says whether they are.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import urllib.parse
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
START_TIMEOUT = 60.0  # seconds: the server encodes the clip before it listens (slow on a loaded machine)


def available() -> str | None:
    """None when the server can run here, else why not."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    check = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if check.returncode != 0:
        return "gst-rtsp-server for the system python3 is missing (make system-deps)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RTSPServer:
    def __init__(self, clip: Path, user: str = "", password: str = "", path: str = "/cam", port: int = 0):
        self.clip, self.user, self.password, self.path = Path(clip), user, password, path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def url_for(self, user: str | None = None, password: str | None = None, path: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        auth = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@" if user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{path or self.path}"

    @property
    def url(self) -> str:
        return self.url_for()

    def start(self) -> RTSPServer:
        args = [SYSTEM_PYTHON, str(SERVER), str(self.clip), "--port", str(self.port), "--path", self.path]
        if self.user:
            args += ["--user", self.user, "--password", self.password]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        ready = _readline(self.proc, START_TIMEOUT)
        if ready.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the RTSP server did not start: {ready!r} {self.proc.stderr.read()[-2000:]!r}")
        self.starts += 1
        return self

    def stop(self) -> None:
        """The camera goes away: the process ends, every connection with it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()

    def stall(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """The child's first stdout line, or "" if none within `timeout` seconds (or it exited)."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()
