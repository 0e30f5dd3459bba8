"""A real RTSP server for the tests (GStreamer's gst-rtsp-server), run with the SYSTEM python3 (python3-gi and
gir1.2-gst-rtsp-server-1.0 from Debian; the venv has no `gi`). tests/rtsp.py starts it per test.

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --path /cam --user admin --password s3cret CLIP.mp4

Serves CLIP, re-encoded once at start to H.264 (x264, a key frame every second, so a client joining at any
time decodes within a second), looped forever at the clip's frame rate, at rtsp://127.0.0.1:PORT/PATH with
basic authentication (no --user: no authentication). Any other path is a 404, wrong credentials a 401. Each
client gets its own stream, over TCP or UDP as it asks. SIGUSR1 stalls every stream (the connections stay
open, no more frames: a hung camera), SIGUSR2 resumes; SIGTERM stops the server. Prints "ready" on stdout
once it listens, then "stream WALLTIME FPS FRAMES" when a client's stream starts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402,F401  (GstApp: appsrc methods)


def encode(clip: str) -> tuple[list[bytes], float]:
    """The clip's frames as H.264 access units (byte-stream), and its frame rate."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{clip}" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! '
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bframes=0 ! "
        "video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline ! "
        "appsink name=sink sync=false")
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units, fps = [], 0.0
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        if not fps:
            structure = sample.get_caps().get_structure(0)
            ok, num, den = structure.get_fraction("framerate")
            fps = num / den if ok and den and num else 25.0
        buf = sample.get_buffer()
        units.append(buf.extract_dup(0, buf.get_size()))
    pipeline.set_state(Gst.State.NULL)
    if not units:
        sys.exit(f"no frame could be encoded from {clip}")
    return units, fps


class Feeder:
    """Pushes the access units into one client's appsrc in real time, looping; waits while stalled."""

    def __init__(self, appsrc, units: list[bytes], fps: float, sending: threading.Event, stop: threading.Event):
        self.appsrc, self.units, self.fps, self.sending, self.stop = appsrc, units, fps, sending, stop
        self.done = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        start, i = time.monotonic(), 0
        duration = int(Gst.SECOND / self.fps)
        # when this client's stream starts (bench/bench_rtsp.py: frame k of loop L is sent at T + (L*n + k)/fps)
        print(f"stream {time.time():.6f} {self.fps:.6f} {len(self.units)}", flush=True)
        while not self.done.is_set() and not self.stop.is_set():
            if not self.sending.is_set():
                self.sending.wait(0.2)
                start = time.monotonic() - i / self.fps  # carry on in real time after a stall
                continue
            data = self.units[i % len(self.units)]
            buf = Gst.Buffer.new_wrapped(data)
            buf.duration = duration
            if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return  # the client went away
            i += 1
            delay = start + i / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    args = parser.parse_args()

    Gst.init(None)
    units, fps = encode(args.clip)
    sending, stop = threading.Event(), threading.Event()
    sending.set()
    feeders: list[Feeder] = []

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( appsrc name=src is-live=true format=time do-timestamp=true "
                       "caps=video/x-h264,stream-format=byte-stream,alignment=au ! "
                       "h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)

    def configure(_factory, media) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        feeder = Feeder(appsrc, units, fps, sending, stop)
        feeders.append(feeder)
        media.connect("unprepared", lambda *_: feeder.done.set())

    factory.connect("media-configure", configure)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {args.port}")

    loop = GLib.MainLoop()

    def quit_loop() -> bool:
        stop.set()
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, lambda: sending.clear() or True)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, lambda: sending.set() or True)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
