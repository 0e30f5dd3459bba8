"""A real live MJPEG stream over HTTP for the tests: a clip's frames, looped, in real time.

`MJPEGServer(clip).start()` listens on a free 127.0.0.1 port and sends every client the clip as
`multipart/x-mixed-replace` JPEG frames at the clip's own frame rate (like an IP camera's MJPEG URL);
FFmpeg in OpenCV reads it as any camera stream. `stop()` closes the listening socket and every connection
(the camera goes away), `start()` again brings it back on the same port, and `stall()` / `resume()` keep
the connections open but stop sending (a hung camera: the reader blocks inside FFmpeg).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import cv2

BOUNDARY = "frame"


def encode_clip(clip: Path, quality: int = 80) -> tuple[list[bytes], float]:
    """(JPEG bytes of every frame, the clip's frame rate)."""
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    cap.release()
    return frames, fps


class MJPEGServer:
    def __init__(self, clip: Path, port: int = 0):
        self.frames, self.fps = encode_clip(clip)
        self.port = port
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._sending = threading.Event()
        self._sending.set()
        self.clients_served = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> MJPEGServer:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(8)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._running.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """The camera goes away: no listener, every connection closed (a stall ends with it)."""
        self._running.clear()
        self._sending.set()  # threads waiting out a stall see that they are done
        with self._lock:
            socks = [s for s in (self._listener, *self._clients) if s is not None]
            self._listener, self._clients = None, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stall(self) -> None:
        """Connections stay open, no more bytes are sent."""
        self._sending.clear()

    def resume(self) -> None:
        self._sending.set()

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(conn)
                self.clients_served += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            conn.sendall(("HTTP/1.0 200 OK\r\nCache-Control: no-cache\r\nConnection: close\r\n"
                          f"Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\r\n").encode())
            start, i = time.monotonic(), 0
            while self._running.is_set():
                self._sending.wait()
                if not self._running.is_set():
                    break
                jpeg = self.frames[i % len(self.frames)]
                conn.sendall(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                             .encode() + jpeg + b"\r\n")
                i += 1
                delay = start + i / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:  # after a stall: carry on in real time, do not send the backlog at once
                    start = time.monotonic() - i / self.fps
        except OSError:
            pass
        finally:
            conn.close()
