"""Video sources on the real clips and photos: order, latest-frame delivery, reopen with backoff, errors.

The live stream is real too: tests/stream.py serves the Hamilton clip as an MJPEG camera over HTTP at its own
frame rate, and the tests stop, stall and restart that server to make the source lose and regain it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from broker import free_port
from conftest import COMPREFACE, DLIB, FR, ROOT, SHARED, wait_for
from stream import MJPEGServer

from agent.config import SourceSection
from agent.images import load_image
from agent.sources import Frame, SourceError, csi_pipeline, open_source, parse_uri

HAMILTON = FR / "examples" / "short_hamilton_clip.mp4"  # 640x360, 29.97 fps, 275 frames
STREET = SHARED / "facenet-pytorch" / "examples" / "video.mp4"  # 1920x1080, 25 fps, 105 frames


def section(uri: str | Path, **changes) -> SourceSection:
    return dataclasses.replace(SourceSection(), uri=str(uri), **changes)


def reference_frames(path: Path, limit: int = 100_000) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def read_all(source, timeout: float = 20.0, keep_images: bool = True) -> list[Frame]:
    """Every frame to the end; with keep_images=False each image is checked, then shrunk to its first pixel
    row (so 1080p clips do not pile up in memory) - its shape is kept in `image.shape[1:]`."""
    frames = []
    while (frame := source.read(timeout)) is not None:
        if not keep_images:
            assert frame.image.dtype == np.uint8 and frame.image.flags["C_CONTIGUOUS"]
            frame = dataclasses.replace(frame, image=np.empty((frame.image.shape[0], 0, 3), np.uint8))
        frames.append(frame)
    assert source.ended, "read() gave None before the end of the stream"
    return frames


# ---------------------------------------------------------------------------------------------------------
# files: every frame, in order
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, count, size, fps",
                         [(HAMILTON, 275, (360, 640), 29.97), (STREET, 105, (1080, 1920), 25)])
def test_every_frame_reads_the_whole_file_in_order(shared, path, count, size, fps):
    src = open_source(section(path))
    assert not src.is_live and src.every_frame
    with src:
        assert src.fps == pytest.approx(fps, abs=0.01)
        first = src.read(10)
        frames = [first, *read_all(src, keep_images=False)]
        assert src.read(0.1) is None  # stays ended
    assert [f.index for f in frames] == list(range(count))
    assert first.image.shape == (*size, 3) and first.image.dtype == np.uint8
    assert all(f.image.shape[0] == size[0] for f in frames)
    steps = np.diff([f.timestamp for f in frames])
    assert np.allclose(steps, 1.0 / fps, atol=1e-6)  # video time, however fast the frames were read
    assert src.stats()["frames_read"] == src.frames_delivered == count and src.dropped == 0
    ref = reference_frames(path, limit=1)
    assert np.array_equal(first.image, ref[0])  # RGB, converted from OpenCV's BGR


def test_latest_frame_mode_never_returns_stale_frames_and_counts_drops(shared):
    # a file read "live" plays at its own frame rate (25 fps) while this consumer takes 0.3 s per frame
    src = open_source(section(STREET), every_frame=False)
    assert not src.every_frame
    frames = []
    with src:
        while True:
            captured = src.frames_read  # frames 0..captured-1 exist now; the box holds the newest of them
            frame = src.read(10)
            if frame is None:
                break
            # (-2: frames_read counts a frame just before it enters the box)
            assert frame.index >= captured - 2, "an old frame was handed out while a newer one existed"
            frames.append(dataclasses.replace(frame, image=frame.image[:1, :1]))
            time.sleep(0.3)
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes))  # strictly increasing: no frame twice
    assert indexes[-1] == 104  # the last frame still comes out before the end
    assert src.frames_read == 105
    assert src.dropped > src.frames_delivered > 3  # (25 fps in, ~3 fps out)
    assert src.frames_delivered + src.dropped == 105
    assert len(frames) == src.frames_delivered


def test_stop_while_the_consumer_lags(shared):
    src = open_source(section(HAMILTON)).start()
    assert src.read(10).index == 0
    time.sleep(0.3)  # capture is now blocked on the full buffer (backpressure)
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 5
    assert src.read(0.1) is None and src.ended
    assert src.frames_read < 10  # it waited for the consumer instead of decoding ahead
    src.stop()  # idempotent


# ---------------------------------------------------------------------------------------------------------
# folders of images
# ---------------------------------------------------------------------------------------------------------

def photo_folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Real photos under numbered names in a tmp folder: frame2 must come before frame10."""
    photos = sorted((DLIB / "examples" / "johns").glob("*/*.jpg"))[:6]
    photos += [FR / "examples" / "obama-240p.jpg", FR / "examples" / "two_people.jpg"]
    folder = tmp_path / "frames"
    folder.mkdir()
    ordered = []
    for i, photo in enumerate(photos):
        dest = folder / f"frame{i * 3}.jpg"  # frame0, frame3, ... frame21: natural order differs from sorted()
        shutil.copy(photo, dest)
        ordered.append(dest)
    (folder / "notes.txt").write_text("not an image")
    return folder, ordered


def test_folder_source_reads_images_in_natural_order(shared, tmp_path):
    folder, ordered = photo_folder(tmp_path)
    shutil.copy(COMPREFACE / "embedding-calculator" / "src" / "services" / "imgtools" / "test" / "files" /
                "corrupted.png", folder / "frame7.png")
    with open_source(section(folder, fps=10)) as src:
        assert not src.is_live and src.fps == 10
        frames = read_all(src)
    assert len(frames) == len(ordered)  # the corrupt image is skipped (and counted), the .txt ignored
    assert src.skipped == 1
    for frame, path in zip(frames, ordered):
        assert np.array_equal(frame.image, load_image(path))
    assert [f.index for f in frames] == list(range(len(ordered)))
    assert np.allclose(np.diff([f.timestamp for f in frames]), 0.1)


def test_folder_that_disappears_is_reopened_with_backoff(shared, tmp_path, caplog):
    folder, ordered = photo_folder(tmp_path)
    away = tmp_path / "away"
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(folder, reconnect_max_delay=1.0)).start()
    try:
        first = [src.read(10) for _ in range(2)]
        folder.rename(away)  # the capture thread has read at most 2 more images ahead
        deadline = time.monotonic() + 10
        while src.connected and time.monotonic() < deadline:
            frame = src.read(0.05)
            if frame is not None:
                first.append(frame)
        time.sleep(1.8)  # a few failed reopen attempts: 0.5 s, then 1 s (the cap)
        assert not src.connected and "no such folder" in src.last_error
        away.rename(folder)
        frames = first + read_all(src)
    finally:
        src.stop()
    assert [f.index for f in frames] == list(range(len(ordered)))
    for frame, path in zip(frames, ordered):
        assert np.array_equal(frame.image, load_image(path))
    assert src.reconnects == 1 and src.last_error == ""
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "WARNING" and "lost" in msg for level, msg in messages)
    assert any(level == "WARNING" and "reopen failed" in msg for level, msg in messages)
    assert any(level == "INFO" and "recovered" in msg for level, msg in messages)


# ---------------------------------------------------------------------------------------------------------
# a file that breaks mid-run
# ---------------------------------------------------------------------------------------------------------

def test_file_that_breaks_mid_run_is_reopened_where_it_stopped(shared, tmp_path, caplog):
    clip = tmp_path / "clip.mp4"
    shutil.copy(HAMILTON, clip)
    data = clip.read_bytes()
    ref = reference_frames(HAMILTON)
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(clip, reconnect_max_delay=1.0)).start()
    try:
        frames = [src.read(10) for _ in range(40)]
        os.truncate(clip, len(data) // 3)  # the open file loses its tail under the reader...
        clip.rename(tmp_path / "moved.mp4")  # ...and the path goes away, so reopening fails for a while
        deadline = time.monotonic() + 20
        while src.connected and time.monotonic() < deadline:
            frame = src.read(0.05)
            if frame is not None:
                frames.append(frame)
        assert not src.connected, "the truncated file was never noticed"
        broke_at = len(frames)
        time.sleep(1.8)
        assert "no such file" in src.last_error
        restored = tmp_path / "restored.mp4"
        restored.write_bytes(data)
        restored.rename(clip)  # back in one piece
        frames += read_all(src)
    finally:
        src.stop()
    assert 40 <= broke_at < 275
    assert [f.index for f in frames] == list(range(275))  # nothing lost, nothing twice
    assert all(np.array_equal(f.image, ref[f.index]) for f in frames)
    assert src.reconnects == 1
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "WARNING" and "lost" in msg for level, msg in messages)
    assert any(level == "INFO" and "recovered" in msg for level, msg in messages)


# ---------------------------------------------------------------------------------------------------------
# a live network stream (an MJPEG camera over HTTP: tests/stream.py serves the clip in real time)
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def camera(shared):
    """The Hamilton clip as a live MJPEG stream (29.97 fps; FFmpeg announces 25 for any MJPEG stream)."""
    server = MJPEGServer(HAMILTON).start()
    yield server
    server.stop()


def test_live_stream_latest_frame_real_fps_and_fast_reconnect(camera, caplog):
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(camera.url, timeout=5.0))  # reconnect_max_delay: the default (2 s)
    assert src.is_live and not src.every_frame
    try:
        src.start()
        assert src.read(20) is not None, "no frame from the stream"
        frames = []
        for _ in range(12):
            time.sleep(0.2)  # a slow consumer: ~6 frames arrive meanwhile
            captured = src.frames_read
            frame = src.read(5)
            assert frame is not None
            assert time.time() - frame.timestamp < 1.0, "the frame handed out is stale"
            assert frame.index >= captured - 2
            frames.append(frame)
        assert frames[0].image.shape == (360, 640, 3)
        indexes = [f.index for f in frames]
        assert indexes == sorted(set(indexes))
        assert src.dropped > 20
        assert src.fps == pytest.approx(29.97, abs=1.5), "the frame rate as received, not the announced 25"

        camera.stop()  # the camera goes away...
        assert wait_for(lambda: not src.connected, 10), "the lost stream was not noticed"
        time.sleep(6.0)  # ...for longer than the backoff cap: the backoff has reached it
        assert "refused" in src.last_error  # the cause, not just "cannot open"
        camera.start()  # and comes back
        back, back_wall = time.monotonic(), time.time()
        assert wait_for(lambda: src.connected, 10), "the stream was not reopened"
        seen_after = time.monotonic() - back
        frame = src.read(10)
        assert frame is not None and frame.timestamp >= back_wall, "a frame from after the camera came back"
        assert src.reconnects == 1
    finally:
        src.stop()
    print(f"the camera came back after a 6 s outage and was seen {seen_after:.2f} s later")
    assert seen_after < 2.5, f"the camera came back but was seen only {seen_after:.1f} s later"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    opened = [msg for level, msg in messages if level == "INFO" and msg.startswith("opened")]
    assert len(opened) == 1 and "it announces 25" in opened[0], opened
    measured = float(re.search(r"live, ([\d.]+) fps", opened[0]).group(1))
    assert measured == pytest.approx(29.97, abs=1.5), opened  # as received (a 2 s measure), not the announced 25
    assert any(level == "WARNING" and "lost (the stream ended or the connection closed)" in msg
               for level, msg in messages)
    reopen = [msg for level, msg in messages if level == "WARNING" and "reopen failed" in msg]
    assert reopen and "connection to 127.0.0.1:" in reopen[0] and "refused" in reopen[0], reopen
    assert any(level == "INFO" and "recovered" in msg for level, msg in messages)


def test_stop_returns_at_once_while_the_stream_is_stalled(camera, caplog):
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(camera.url, timeout=10.0)).start()
    try:
        assert src.read(20) is not None
        camera.stall()  # the connection stays open, no more bytes: the capture thread blocks in FFmpeg
        time.sleep(1.0)
        assert src.connected and src.read(0.5) is None
    finally:
        t0 = time.monotonic()
        src.stop()
        took = time.monotonic() - t0
    assert took < 1.0, f"stop() took {took:.1f} s"
    assert src.ended and src.read(0.1) is None
    camera.resume()  # the left-behind thread gets its frame (or its timeout) and ends on its own
    assert wait_for(lambda: not src._thread.is_alive(), 15)
    assert not src.connected


def test_stalled_stream_is_lost_after_the_timeout_with_its_cause(camera, caplog):
    caplog.set_level(logging.INFO, logger="agent.sources")
    with open_source(section(camera.url, timeout=1.0)) as src:
        assert src.read(20) is not None
        camera.stall()
        assert wait_for(lambda: not src.connected, 10)
        assert src.last_error == "no frame for 1 s"


def test_wake_makes_a_waiting_read_return(camera):
    with open_source(section(camera.url)) as src:
        assert src.read(20) is not None
        camera.stall()
        threading.Timer(0.2, src.wake).start()
        t0 = time.monotonic()
        assert src.read(5) is None
        assert time.monotonic() - t0 < 1.0 and not src.ended


def test_live_source_missing_at_start_is_retried_in_the_background(caplog):
    caplog.set_level(logging.INFO, logger="agent.sources")
    src = open_source(section(f"http://127.0.0.1:{free_port()}/", timeout=1.0))
    with src:  # nothing listens there: no exception, a warning, and frames once it appears
        assert not src.connected and src.read(0.2) is None and not src.ended
        assert "cannot open" in src.last_error and "refused" in src.last_error
    assert any(r.levelname == "WARNING" and "retrying" in r.getMessage() for r in caplog.records)


def test_a_camera_that_does_not_exist_is_one_clear_error():
    index = next(i for i in range(64) if not Path(f"/dev/video{i}").exists())
    with pytest.raises(SourceError, match=f"/dev/video{index} does not exist"):
        open_source(section(str(index))).start()
    with pytest.raises(SourceError, match="no such camera"):
        open_source(section(f"/dev/video{index}")).start()


# ---------------------------------------------------------------------------------------------------------
# URIs and errors
# ---------------------------------------------------------------------------------------------------------

def test_csi_pipeline_string():
    assert csi_pipeline(0, 1280, 720, 30) == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=1 max-buffers=1")
    assert "sensor-id=1" in csi_pipeline(1, 1920, 1080, 60)
    assert "width=1920,height=1080,framerate=60/1" in csi_pipeline(1, 1920, 1080, 60)


def test_parse_uri_kinds(tmp_path):
    assert parse_uri("0") == ("camera", 0)
    assert parse_uri(" 2 ") == ("camera", 2)
    assert parse_uri("/dev/video1") == ("v4l2", "/dev/video1")
    assert parse_uri("csi://1") == ("csi", 1)
    assert parse_uri("csi://") == ("csi", 0)
    assert parse_uri("gst:videotestsrc ! appsink") == ("gst", "videotestsrc ! appsink")
    assert parse_uri("rtsp://cam.local:554/stream1") == ("stream", "rtsp://cam.local:554/stream1")
    assert parse_uri("https://example.com/live.m3u8")[0] == "stream"
    assert parse_uri(str(tmp_path)) == ("folder", tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    assert parse_uri("clip.mp4", base_dir=tmp_path) == ("file", tmp_path / "clip.mp4")


@pytest.mark.parametrize("uri, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("csi://left", "sensor id"),
    ("gst:", "empty GStreamer"),
    ("ftp://host/clip.mp4", "unsupported scheme"),
    ("/no/such/clip.mp4", "no such file or folder"),
])
def test_bad_uris_are_clear_errors(uri, message):
    with pytest.raises(SourceError, match=message):
        open_source(section(uri))


def test_csi_without_gstreamer_is_a_clear_error():
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="GStreamer"):
        open_source(section("csi://0"))
    with pytest.raises(SourceError, match="GStreamer"):
        open_source(section("gst:videotestsrc ! appsink"))


def test_files_that_are_no_videos_fail_at_start(shared, tmp_path):
    not_video = tmp_path / "clip.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises(SourceError, match="clip.mp4"):
        open_source(section(not_video)).start()
    with pytest.raises(SourceError, match="an image, not a video"):  # one photo: use a folder
        open_source(section(FR / "examples" / "obama.jpg"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        open_source(section(empty)).start()


def test_read_before_start_is_an_error(shared):
    src = open_source(section(HAMILTON))
    with pytest.raises(RuntimeError, match="before start"):
        src.read(0.1)


# ---------------------------------------------------------------------------------------------------------
# the agent on a live stream: a real `face-agent run` process, a real broker
# ---------------------------------------------------------------------------------------------------------

def agent_events(collector) -> list[dict]:
    return [json.loads(m.text) for m in collector.on("faces/events")]


@pytest.mark.slow
def test_agent_on_a_live_stream_outage_recovery_and_sigterm_while_stalled(tmp_path, camera, mosquitto):
    from broker import Collector

    (tmp_path / "agent.toml").write_text(
        f'[agent]\nid = "live-agent"\n[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        '[service]\nstatus_interval = 1.0\n[source]\ntimeout = 30.0\n'
        '[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n')
    status_file = tmp_path / "storage" / "status.json"
    collector = Collector(mosquitto, "faces/events").start()
    log_file = tmp_path / "agent.log"
    with open(log_file, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "run",
                                 "--source", camera.url], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdin=subprocess.DEVNULL, stderr=err)
    try:
        assert collector.wait_for(lambda m: any(e["type"] == "track_started" for e in agent_events(collector)),
                                  240), "no track before the outage"
        assert wait_for(lambda: "(live, " in log_file.read_text(), 30), "the measured frame rate was not logged"

        camera.stop()  # the camera goes away with Lin-Manuel in view
        lost_at = time.time()
        started = {e["track_id"] for e in agent_events(collector) if e["type"] == "track_started"}
        assert collector.wait_for(lambda m: started <= {e["track_id"] for e in agent_events(collector)
                                                        if e["type"] == "track_ended"}, 15), \
            "the open tracks did not end while the source was down"  # (it is still down: not restarted yet)
        assert time.time() - lost_at < 15

        def status() -> dict:
            try:
                return json.loads(status_file.read_text())
            except (OSError, ValueError):
                return {}

        assert wait_for(lambda: status().get("stats", {}).get("fps") == 0.0
                        and not status()["stats"]["source"]["connected"]
                        and "refused" in status()["stats"]["source"]["last_error"], 10), status()
        down = status()
        assert down["stats"]["tracks"] == 0
        assert down["health"]["state"] == "degraded"
        shown = subprocess.run([sys.executable, "-m", "agent", "-c", str(tmp_path / "agent.toml"), "status"],
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                               text=True, timeout=60).stdout  # what `face-agent status` shows during the outage
        assert "running, degraded" in shown and "! camera: no frames from the source" in shown, shown
        assert re.search(r"^  fps +0$", shown, re.M) and re.search(r"^  tracks +0$", shown, re.M), shown
        assert re.search(r"^  source last error +cannot open stream .*refused", shown, re.M), shown
        assert all(line == line.rstrip() for line in shown.splitlines())

        camera.start()  # back: frames flow again within ~2 s
        frames_before = down["stats"]["frames"]
        assert wait_for(lambda: status().get("stats", {}).get("frames", 0) > frames_before + 10
                        and status()["stats"]["fps"] > 1.0, 30), status()

        camera.stall()  # hung: the connection stays open, no more bytes; FFmpeg waits for its 30 s timeout
        time.sleep(1.5)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        collector.stop()
    log_text = log_file.read_text()
    assert proc.returncode == 0, log_text
    print(f"SIGTERM while the stream was stalled: the process ended {took:.2f} s later")
    # the agent does not wait for the hung read (~30 s): it ends at once (0.2 s here; a loaded machine needs more)
    assert took < 10.0, f"SIGTERM while the stream was stalled took {took:.2f} s"
    assert "[ WARN" not in log_text and "[tcp @" not in log_text, log_text  # OpenCV's / FFmpeg's own lines
    opened = re.search(r"opened stream http://\S+ \(live, ([\d.]+) fps; it announces 25\)", log_text)
    assert opened and float(opened.group(1)) == pytest.approx(29.97, abs=1.5), log_text
    assert "reopen failed (cannot open stream http" in log_text and "refused" in log_text
    assert "recovered after" in log_text
    assert not [line for line in log_text.splitlines() if line != line.rstrip() or "None" in line], log_text


def test_run_on_a_camera_that_does_not_exist_is_one_clear_error(tmp_path):
    index = next(i for i in range(64) if not Path(f"/dev/video{i}").exists())
    (tmp_path / "agent.toml").write_text("[mqtt]\nenabled = false\n[paths]\nstorage = \"storage\"\n"
                                         "engines = \"engines\"\nsvm = \"svm\"\nfaces = \"faces\"\n")
    result = subprocess.run([sys.executable, "-m", "agent", "-c", "agent.toml", "run", "--source", str(index)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "face-agent:" in line]
    assert errors == [f"face-agent: cannot open camera {index}: /dev/video{index} does not exist (no such camera)"], \
        result.stderr
    assert "[ WARN" not in result.stderr and "retrying" not in result.stderr


def test_without_a_terminal_the_log_gets_fps_and_health_periodically(tmp_path, camera, analyzer, caplog):
    from conftest import make_config

    from agent.service import PROGRESS_LOG_PERIOD, Service

    assert PROGRESS_LOG_PERIOD == 60.0  # once a minute in the journal
    caplog.set_level(logging.INFO, logger="agent.run_report")
    cfg = make_config(tmp_path, mqtt={"enabled": False}, service={"status_interval": 0.5})
    service = Service(cfg, source_uri=camera.url, analyzer=analyzer)  # status_line=False: not a terminal
    service.progress_period = 1.0
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert wait_for(lambda: service.stats.frames > 30, 60)
        time.sleep(2.5)
        assert service.stats.fps > 1.0
        camera.stall()  # hung: still "connected" until the 10 s [source] timeout, but no frames
        assert wait_for(lambda: service.stats.fps == 0.0, 4) and service.source.connected
    finally:
        service.stop()
        thread.join(30)
    lines = [r.getMessage() for r in caplog.records if " fps, " in r.getMessage()]
    assert len(lines) >= 2, lines
    assert re.fullmatch(r"\d+\.\d fps, \d+ frames, \d+ tracks, \d+ events, health ok, source connected", lines[0]), \
        lines
    assert float(lines[0].split()[0]) > 1.0
