"""RTSP helpers for agent.sources: why a camera refused us, and the GStreamer decoding pipeline.

`probe(url)` asks the camera for its stream description (RTSP DESCRIBE, with the URL's user and password as
Basic or Digest authentication, as the camera asks) and `explain()` turns the answer into the reason a failed
open gives: "401: wrong user or password", "404: no stream at /cam ...". OpenCV says nothing when FFmpeg
fails, so this is how the user learns which part of the URL is wrong. The answer's SDP also names the codec.

`gstreamer_pipeline(url, codec, ...)` builds the pipeline that decodes an rtsp:// stream with GStreamer
(`[source] decoder`): on a Jetson in hardware,

    rtspsrc location=... user-id=... user-pw=... protocols=tcp latency=200 ! rtph264depay ! h264parse !
    nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR !
    appsink drop=true max-buffers=1 sync=false

(rtph265depay ! h265parse for H.265), elsewhere with libav's avdec_h264 / avdec_h265 on the CPU. The user and
password travel as rtspsrc properties, never in the location, and the pipeline is never logged.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
from dataclasses import dataclass

HARDWARE_DECODER = "nvv4l2decoder"  # Jetson's V4L2 hardware decoder (JetPack's GStreamer plugins)
CODECS = {  # codec -> (depayloader, parser, software decoder)
    "h264": ("rtph264depay", "h264parse", "avdec_h264"),
    "h265": ("rtph265depay", "h265parse", "avdec_h265"),
}
DEFAULT_PORT = 554
PIPELINE_LATENCY_MS = 200  # rtspsrc's jitter buffer: enough for Wi-Fi cameras, small next to a face's visit


@dataclass(frozen=True)
class Answer:
    """A camera's answer to DESCRIBE: status code and phrase, the SDP body, and whether we sent credentials."""

    status: int
    reason: str
    sdp: str = ""
    sent_credentials: bool = False

    @property
    def codec(self) -> str | None:
        """"h264" or "h265" from the SDP's first video rtpmap, None when it names neither."""
        match = re.search(r"a=rtpmap:\d+\s+(H264|H265|HEVC)/", self.sdp, re.IGNORECASE)
        if not match:
            return None
        return "h264" if match.group(1).upper() == "H264" else "h265"


class ProbeError(Exception):
    """The camera did not answer in RTSP (closed the connection, spoke something else, timed out)."""


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without user and password, user, password), both unquoted (%40 -> @)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password) if colon else None


def _read_answer(sock: socket.socket) -> tuple[int, str, dict[str, list[str]], str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ProbeError("the camera closed the connection without an RTSP answer")
        data += chunk
        if len(data) > 65536:
            raise ProbeError("the answer is not RTSP (no end of headers in 64 KiB)")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"RTSP/\d\.\d\s+(\d{3})\s*(.*)", lines[0])
    if not match:
        raise ProbeError(f"the answer is not RTSP: {lines[0][:60]!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), []).append(value.strip())
    length = int((headers.get("content-length") or ["0"])[0] or 0)
    while len(body) < min(length, 65536):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(match.group(1)), match.group(2).strip(), headers, body[:length].decode("utf-8", "replace")


def _authorization(challenges: list[str], user: str, password: str, uri: str) -> str | None:
    """The Authorization header answering the camera's WWW-Authenticate challenges (Digest preferred)."""
    for challenge in challenges:
        if challenge.lower().startswith("digest"):
            fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge[len("digest"):]))
            realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
            ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 (RFC 2617)
            ha2 = hashlib.md5(f"DESCRIBE:{uri}".encode()).hexdigest()  # noqa: S324
            extra = ""
            if "auth" in fields.get("qop", "").split(","):
                cnonce = os.urandom(8).hex()
                response = hashlib.md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
                extra = f', qop=auth, nc=00000001, cnonce="{cnonce}"'
            else:
                response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
            opaque = f', opaque="{fields["opaque"]}"' if "opaque" in fields else ""
            return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                    f'response="{response}"{extra}{opaque}')
    if any(c.lower().startswith("basic") for c in challenges):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return None


def probe(url: str, timeout: float = 5.0) -> Answer:
    """DESCRIBE `url` (rtsp:// only), authenticating with its credentials if the camera asks. Raises
    ProbeError when the camera does not answer in RTSP, OSError when it cannot be reached."""
    bare, user, password = split_credentials(url)
    parts = urllib.parse.urlsplit(bare)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        raise ProbeError(f"not an rtsp:// URL: {parts.scheme}://")
    with socket.create_connection((parts.hostname, parts.port or DEFAULT_PORT), timeout=timeout) as sock:
        def ask(cseq: int, auth: str | None) -> tuple[int, str, dict[str, list[str]], str]:
            request = (f"DESCRIBE {bare} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\n"
                       f"User-Agent: face-agent\r\n" + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n")
            sock.sendall(request.encode("utf-8"))
            return _read_answer(sock)

        status, reason, headers, body = ask(1, None)
        sent = False
        if status == 401 and user is not None:
            auth = _authorization(headers.get("www-authenticate", []), user, password or "", bare)
            if auth is not None:
                status, reason, headers, body = ask(2, auth)
                sent = True
    return Answer(status, reason, body, sent)


def explain(url: str, timeout: float = 5.0) -> str | None:
    """Why an rtsp:// URL gives no video, in the user's words, from the camera's own answer; None when the
    camera does not answer in RTSP (the caller says what it knows from the network)."""
    try:
        answer = probe(url, timeout)
    except (ProbeError, OSError, ValueError):
        return None
    path = urllib.parse.urlsplit(url).path or "/"
    if answer.status == 401:
        if answer.sent_credentials:
            return "401: wrong user or password"
        return "401: the camera wants a user and password (rtsp://USER:PASSWORD@host/...)"
    if answer.status == 403:
        return "403: this user may not watch this stream"
    if answer.status == 404:
        return f"404: no stream at {path} on this camera (wrong path? its manual gives the RTSP URL)"
    if 200 <= answer.status < 300:
        codec = answer.codec
        what = f"a {codec.upper()} stream" if codec else "a stream in a codec other than H.264/H.265"
        return f"the camera offers {what} at {path}, yet no frame could be decoded"
    return f"{answer.status}: {answer.reason or 'refused'}"


# ------------------------------------------------------------------------------------------------------------
# GStreamer decoding
# ------------------------------------------------------------------------------------------------------------

def _quote(value: str) -> str:
    """A gst-launch property value: double-quoted, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gstreamer_pipeline(url: str, codec: str = "h264", *, transport: str = "tcp", hardware: bool = True,
                       timeout: float = 10.0, latency_ms: int = PIPELINE_LATENCY_MS) -> str:
    """The pipeline decoding the rtsp:// `url` into BGR frames for OpenCV's appsink (see the module
    docstring). codec: "h264" or "h265"; transport: "tcp" or "udp"; hardware: Jetson's nvv4l2decoder
    instead of libav on the CPU; timeout: seconds a TCP connection may stay silent."""
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: one of {', '.join(CODECS)}")
    if transport not in ("tcp", "udp"):
        raise ValueError(f"transport {transport!r}: tcp or udp")
    bare, user, password = split_credentials(url)
    depay, parse, software = CODECS[codec]
    source = [f"rtspsrc location={_quote(bare)}", f"protocols={transport}", f"latency={int(latency_ms)}",
              f"tcp-timeout={int(timeout * 1_000_000)}"]
    if user is not None:
        source.append(f"user-id={_quote(user)}")
    if password is not None:
        source.append(f"user-pw={_quote(password)}")
    if hardware:
        decode = [HARDWARE_DECODER, "nvvidconv", "video/x-raw,format=BGRx", "videoconvert"]
    else:
        decode = [software, "videoconvert"]
    return " ! ".join([" ".join(source), depay, parse, *decode, "video/x-raw,format=BGR",
                       "appsink drop=true max-buffers=1 sync=false"])


@functools.cache
def gstreamer_has(element: str) -> bool:
    """True when the system's GStreamer has `element` (gst-inspect-1.0 --exists; False without the tool)."""
    tool = shutil.which("gst-inspect-1.0")
    if tool is None:
        return False
    try:
        return subprocess.run([tool, "--exists", element], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
