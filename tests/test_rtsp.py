"""RTSP cameras against a real RTSP server: GStreamer's gst-rtsp-server (tests/rtsp.py, one per test) serving
the Hamilton clip as H.264 with basic authentication, like the IP cameras people own.

Open over TCP and UDP; wrong credentials (401) and a wrong path (404) said in those words; the server
restarting (reconnect within the backoff cap) and stalling; the GStreamer decoding pipeline (built here,
decoded by the system's GStreamer on the CPU) and its fallback to FFmpeg; and no credential in any output of
an agent run against the password-protected stream.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import FR, ROOT, wait_for
from rtsp import SYSTEM_PYTHON, RTSPServer, available

from agent import rtsp as agent_rtsp
from agent import sources
from agent.config import SourceSection
from agent.logsafe import redact
from agent.sources import SourceError, open_source

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"  # 640x360, 29.97 fps
USER, PASSWORD = "admin", "Zq7:p@ss/w0rd"  # a password with the characters URLs must escape
SECRET_PARTS = ("Zq7", "p@ss", "w0rd", "Zq7%3Ap%40ss")

needs_server = pytest.mark.skipif(available() is not None, reason=str(available()))


def section(uri: str, **changes) -> SourceSection:
    return dataclasses.replace(SourceSection(), uri=uri, **changes)


def assert_no_secret(text: str, where: str = "") -> None:
    for part in SECRET_PARTS:
        assert part not in text, f"the password shows in {where}: {text[:3000]}"


@pytest.fixture
def camera(shared):
    if available() is not None:
        pytest.skip(str(available()))
    server = RTSPServer(HAMILTON, user=USER, password=PASSWORD).start()
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------------------
# redaction: one helper for every place a URI can be shown
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    ("stream rtsp://admin:s3cret@10.0.0.5:554/Streaming/Channels/102",
     "stream rtsp://***@10.0.0.5:554/Streaming/Channels/102"),
    ("rtsp://admin:p@ss@cam.local/live", "rtsp://***@cam.local/live"),  # an unescaped @ in the password
    ("rtsp://viewer@cam.local/live", "rtsp://***@cam.local/live"),
    ("http://cam/snap.cgi?user=admin&password=x&chn=1", "http://cam/snap.cgi?user=***&password=***&chn=1"),
    ("rtsp://10.0.0.5/live?token=abc", "rtsp://10.0.0.5/live?token=***"),
    ('gst:rtspsrc location=rtsp://cam/x user-id=admin user-pw="a b" ! fakesink',
     "gst:rtspsrc location=rtsp://cam/x user-id=*** user-pw=*** ! fakesink"),
    ("a, rtsp://u:p@a/x and rtsp://v:q@b/y", "a, rtsp://***@a/x and rtsp://***@b/y"),
    ("rtsp://10.0.0.5:554/live", "rtsp://10.0.0.5:554/live"),  # nothing secret: unchanged
    ("/videos/a=b.mp4", "/videos/a=b.mp4"),
])
def test_redact(text, shown):
    assert redact(text) == shown


@pytest.mark.slow
def test_log_lines_and_config_show_are_redacted(tmp_path):
    (tmp_path / "agent.toml").write_text(
        '[mqtt]\nenabled = false\n[source]\nuri = "rtsp://admin:Zq7%3Ap%40ss@127.0.0.1:9/cam"\n'
        '[[sources]]\nname = "door"\nuri = "rtsp://admin:Zq7%3Ap%40ss@127.0.0.1:9/door"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in (["config", "show"], ["config", "show", "--json"], ["doctor"], ["doctor", "--json"]):
        out = subprocess.run([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), *command],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert_no_secret(out.stdout + out.stderr, " ".join(command))
        if command[0] == "config":
            assert "rtsp://***@127.0.0.1:9/door" in out.stdout, out.stdout
    bad = subprocess.run([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "run", "--source",
                          "rtsp2://admin:Zq7%3Ap%40ss@host/x"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "unsupported scheme" in bad.stderr, bad.stderr
    assert_no_secret(bad.stderr, "an error")


# ---------------------------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_open_over_tcp_and_udp(camera, transport, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.sources")
    src = open_source(section(camera.url, rtsp_transport=transport, timeout=20.0))
    assert src.is_live and PASSWORD not in src.name
    assert src.name == f"stream rtsp://***@127.0.0.1:{camera.port}/cam"
    with src:
        frames = []
        while len(frames) < 20:
            frame = src.read(30)
            assert frame is not None, f"no frame over {transport}: {src.last_error}"
            frames.append(frame)
        assert frames[-1].image.shape == (360, 640, 3)
        assert [f.index for f in frames] == sorted({f.index for f in frames})
        # the picture is the clip's, not a grey or green decoding failure
        assert frames[-1].image.std() > 20
        assert_no_secret(json.dumps(src.stats()), "the source's stats")
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), "the log")


def test_wrong_credentials_say_401(camera, caplog):
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(camera.url_for(password="not-" + PASSWORD), timeout=5.0, reconnect_max_delay=1.0))
    with src:  # a live source: not fatal at start, retried in the background with its cause
        assert wait_for(lambda: "401" in src.last_error, 60), src.last_error
        assert src.read(0.5) is None
    assert "401: wrong user or password" in src.last_error, src.last_error
    assert_no_secret(src.last_error + "\n".join(r.getMessage() for r in caplog.records), "the error")

    anonymous = open_source(section(camera.url_for(user=""), timeout=5.0))
    with anonymous:
        assert wait_for(lambda: "401" in anonymous.last_error, 60), anonymous.last_error
    assert "401: the camera wants a user and password" in anonymous.last_error


def test_wrong_path_says_404(camera):
    src = open_source(section(camera.url_for(path="/Streaming/Channels/999"), timeout=5.0))
    with src:
        assert wait_for(lambda: "404" in src.last_error, 60), src.last_error
    assert "404: no stream at /Streaming/Channels/999" in src.last_error, src.last_error
    assert_no_secret(src.last_error)


def test_server_restart_is_reconnected_within_the_backoff_cap(camera, caplog):
    """The camera reboots: the source notices, retries with a backoff capped at reconnect_max_delay (the
    documented bound of how late a camera that is back is seen), and delivers new frames."""
    caplog.set_level(logging.DEBUG, logger="agent.sources")
    cap = 2.0
    src = open_source(section(camera.url, timeout=10.0, reconnect_max_delay=cap))
    with src:
        assert src.read(60) is not None
        camera.stop()
        assert wait_for(lambda: not src.connected, 30), "the lost stream was not noticed"
        assert wait_for(lambda: "refused" in src.last_error, 30), src.last_error
        camera.start()  # the same port, a new process
        back = time.monotonic()
        assert wait_for(lambda: src.connected, 120), src.last_error
        seen_after = time.monotonic() - back
        back_wall = time.time()
        frame = src.read(30)
        assert frame is not None and frame.timestamp >= back_wall - 1.0
        assert src.reconnects == 1
    delays = [float(m) for r in caplog.records for m in re.findall(r"next try in ([\d.]+) s", r.getMessage())]
    assert delays and max(delays) <= cap, delays  # never waits longer than the cap between tries
    print(f"RTSP server restarted: seen again {seen_after:.2f} s after it listened (cap {cap} s + the open)")
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), "the log")


def test_a_stalled_stream_is_lost_after_the_timeout_and_recovered(camera, caplog):
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(camera.url, timeout=2.0, reconnect_max_delay=1.0))
    with src:
        assert src.read(60) is not None
        camera.stall()  # the session stays up, no more frames
        assert wait_for(lambda: not src.connected, 60), "the stall was not noticed"
        assert src.last_error.startswith("no frame for"), src.last_error
        camera.resume()
        assert wait_for(lambda: src.connected and src.frames_read > 0, 120), src.last_error
        n = src.frames_read
        assert wait_for(lambda: src.frames_read > n + 5, 60)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "lost (no frame for" in messages and "recovered after" in messages, messages
    assert_no_secret(messages, "the log")


# ---------------------------------------------------------------------------------------------------------
# [source] decoder: the GStreamer pipeline (hardware on a Jetson) and its fallback
# ---------------------------------------------------------------------------------------------------------

def test_pipeline_strings():
    url = 'rtsp://admin:a%22b%5Cc@10.0.0.5:554/Streaming/Channels/102'  # password a"b\c
    hw = agent_rtsp.gstreamer_pipeline(url, "h264", transport="tcp", hardware=True, timeout=10.0)
    assert hw == ('rtspsrc location="rtsp://10.0.0.5:554/Streaming/Channels/102" protocols=tcp latency=200 '
                  'tcp-timeout=10000000 user-id="admin" user-pw="a\\"b\\\\c" ! rtph264depay ! h264parse ! '
                  "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                  "appsink drop=true max-buffers=1 sync=false")
    h265 = agent_rtsp.gstreamer_pipeline("rtsp://cam/live", "h265", transport="udp", hardware=False)
    assert "protocols=udp" in h265 and "rtph265depay ! h265parse ! avdec_h265 ! videoconvert" in h265
    assert "user-id" not in h265
    assert redact(hw).count("***") == 2 and "a\\\"b" not in redact(hw)
    with pytest.raises(ValueError):
        agent_rtsp.gstreamer_pipeline("rtsp://cam/live", "mjpeg")


def test_probe_names_the_codec(camera):
    answer = agent_rtsp.probe(camera.url, 10.0)
    assert answer.status == 200 and answer.codec == "h264" and answer.sent_credentials


@needs_server
def test_the_software_pipeline_decodes_the_real_stream(camera):
    """The builder's pipeline (libav on the CPU here; nvv4l2decoder on a Jetson is the same string with two
    other elements) run by the system's GStreamer: BGR frames of the clip's size reach the appsink."""
    pipeline = agent_rtsp.gstreamer_pipeline(camera.url, "h264", hardware=False, timeout=20.0)
    script = (
        "import sys, gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None)\n"
        "p = Gst.parse_launch(sys.argv[1].replace('appsink ', 'appsink name=out ')); sink = p.get_by_name('out')\n"
        "p.set_state(Gst.State.PLAYING)\n"
        "s = sink.emit('try-pull-sample', 60 * Gst.SECOND)\n"
        "print(s.get_caps().to_string() if s else 'none'); p.set_state(Gst.State.NULL)\n")
    out = subprocess.run([SYSTEM_PYTHON, "-c", script, pipeline], capture_output=True, text=True, timeout=180,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert "format=(string)BGR" in out.stdout and "width=(int)640" in out.stdout, out.stdout + out.stderr


def test_decoder_choice(monkeypatch):
    url = "rtsp://cam/live"
    monkeypatch.setattr(sources, "_gstreamer_available", lambda: False)
    assert sources.choose_decoder("stream", url, "auto") == ("ffmpeg", False)
    assert sources.choose_decoder("stream", url, "ffmpeg") == ("ffmpeg", False)
    with pytest.raises(SourceError, match='decoder = "gstreamer" needs OpenCV built with GStreamer'):
        sources.choose_decoder("stream", url, "gstreamer")
    monkeypatch.setattr(sources, "_gstreamer_available", lambda: True)
    monkeypatch.setattr(agent_rtsp, "gstreamer_has", lambda element: element == agent_rtsp.HARDWARE_DECODER)
    assert sources.choose_decoder("stream", url, "auto") == ("gstreamer", True)  # a Jetson
    assert sources.choose_decoder("stream", "http://cam/video.mjpg", "auto") == ("ffmpeg", False)
    monkeypatch.setattr(agent_rtsp, "gstreamer_has", lambda element: False)
    assert sources.choose_decoder("stream", url, "auto") == ("ffmpeg", False)  # GStreamer, no hardware decoder
    assert sources.choose_decoder("stream", url, "gstreamer") == ("gstreamer", False)  # libav on the CPU


def test_auto_falls_back_to_ffmpeg_when_the_pipeline_does_not_start(camera, monkeypatch, caplog):
    """As on a Jetson whose hardware pipeline fails: the GStreamer open fails (this OpenCV has no GStreamer,
    so it always does here), one warning, then FFmpeg decodes and frames flow."""
    caplog.set_level(logging.INFO, logger="agent.sources")
    monkeypatch.setattr(sources, "_gstreamer_available", lambda: True)
    monkeypatch.setattr(agent_rtsp, "gstreamer_has", lambda element: True)
    with open_source(section(camera.url, decoder="auto", timeout=20.0)) as src:
        assert src._reader.decoder == "ffmpeg"
        assert src.read(60) is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "hardware decoding pipeline did not start" in warnings[0], warnings
    assert "decoding with FFmpeg on the CPU" in warnings[0]
    assert_no_secret("\n".join(warnings), "the warning")


# ---------------------------------------------------------------------------------------------------------
# a whole run against the password-protected stream: no credential in any output
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_no_credential_in_any_output_of_a_run(tmp_path, camera, mosquitto):
    from broker import Collector
    from webconsole import WebConsole, write_config

    config = write_config(tmp_path, mqtt={"enabled": True, "host": mosquitto.host, "port": mosquitto.port,
                                          "homeassistant": True},
                          service={"status_interval": 1.0}, source={"uri": camera.url, "timeout": 20.0})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    collector = Collector(mosquitto, "#").start()
    log_file = tmp_path / "agent.log"
    status_file = tmp_path / "storage" / "status.json"
    with open(log_file, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "-v", "-c", str(config), "run"], cwd=tmp_path,
                                env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
    console = None
    try:
        assert wait_for(lambda: '"frames": ' in (status_file.read_text() if status_file.exists() else "")
                        and json.loads(status_file.read_text())["stats"]["frames"] > 30, 300), log_file.read_text()
        assert collector.wait_for(lambda m: any(x.topic.endswith("/stats") for x in m), 120)
        console = WebConsole(config)
        pages = [console_get(console.port, path) for path in ("/live", "/live/panel")]
        shown = subprocess.run([sys.executable, "-m", "agent", "-c", str(config), "status"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=120).stdout
    finally:
        if console is not None:
            console.stop()
        proc.terminate()
        proc.wait(60)
        collector.stop()
    log_text = log_file.read_text()
    assert f"stream rtsp://***@127.0.0.1:{camera.port}/cam" in log_text, log_text
    assert_no_secret(log_text, "the agent's log")
    assert_no_secret(status_file.read_text(), "status.json")
    mqtt = "\n".join(f"{m.topic} {m.text}" for m in collector.messages)
    assert "homeassistant/" in mqtt and "/stats" in mqtt
    assert_no_secret(mqtt, "the MQTT messages (stats, health, Home Assistant)")
    assert "frames read" in "\n".join(pages), pages  # the console shows the source's figures
    assert_no_secret("\n".join(pages), "the web console")
    assert_no_secret(shown, "face-agent status")


def console_get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    text = conn.getresponse().read().decode("utf-8", "replace")
    conn.close()
    return text
