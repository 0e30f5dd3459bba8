"""Face -> `identified` latency over RTSP: from the moment a face is sent by the camera to the moment its
`identified` event arrives on the broker.

    python bench/bench_rtsp.py [--loops 5] [--transport tcp|udp]

A real RTSP camera (GStreamer's gst-rtsp-server, tests/rtsp.py: the Hamilton clip as H.264 with basic
authentication, looped at its 29.97 fps) and a real mosquitto; lin-manuel-miranda and alex-lacamoire are
enrolled from their photos; the real agent (`face-agent run`, a child process) reads the stream.

Where Lin-Manuel comes into view: the same agent first replays the clip file frame by frame with a full
detection on every frame; each of its tracks named lin is one appearance, from its first frame. Over RTSP the
capture's frame index counts every frame received (TCP loses none), so frame k of the stream is clip frame
k mod n, and the server says when the agent's stream started (T): clip frame f of loop L is sent at
T + (L * n + f) / fps. Per `identified lin` over RTSP (the first of each appearance):

- total: the message received on the broker - the appearance's first frame sent by the camera;
- to the deciding frame: that frame's capture time in the agent (the event's timestamp) - the first frame sent
  (RTSP jitter buffer and decoding, the frames until a full detection finds the face, the frames the votes
  took: `[tracker] detect_every`, `[voting] min_votes`);
- capture -> broker: the event received - its frame's capture time (detection, embedding, vote, SQLite,
  MQTT publish).

The first loop is left out (models warming up). The last line says how far the capture fell behind the
stream (frames sent, by the status file's time, that the agent had not read): on a loaded machine FFmpeg's
decoding thread gets too little CPU and the delay grows loop after loop. Both processes are on this machine,
so the clocks agree; the error of T is the time between the stream's start and PLAY (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from broker import Broker, Collector  # noqa: E402
from rtsp import RTSPServer, _readline, available  # noqa: E402

FR = ROOT.parent / "shared" / "faces" / "face_recognition" / "examples"
CLIP = FR / "short_hamilton_clip.mp4"


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def reference_appearances(work: Path, env: dict) -> list[tuple[int, int]]:
    """(first, last) clip frame of each track named lin when the clip file is replayed frame by frame with a
    full detection on every frame."""
    ref = work / "reference"
    ref.mkdir()
    (ref / "agent.toml").write_text(
        '[mqtt]\nenabled = false\n[tracker]\ndetect_every = 1\n'
        f'[paths]\nstorage = "storage"\nengines = "{work}/engines"\nsvm = "{work}/svm"\nfaces = "{work}/faces"\n')
    cli = [sys.executable, "-m", "agent", "-q", "-c", str(ref / "agent.toml")]
    subprocess.run([*cli, "run", "--source", str(CLIP)], cwd=ref, env=env, check=True, capture_output=True)
    out = subprocess.run([*cli, "events", "--json", "--limit", "0"], cwd=ref, env=env, check=True,
                         capture_output=True, text=True).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    started = {e["track_id"]: e["frame_index"] for e in events if e["type"] == "track_started"}
    return sorted((started[e["track_id"]], e["frame_index"]) for e in events
                  if e["type"] == "track_ended" and e["name"] == "lin")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", type=int, default=5, help="clip loops to measure (about 9.2 s each)")
    ap.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    ap.add_argument("--events", type=Path, help="also write the events received to this JSON-lines file")
    args = ap.parse_args()
    if available() is not None:
        sys.exit(f"no RTSP server here: {available()}")
    with tempfile.TemporaryDirectory(prefix="bench-rtsp-") as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker").start()
        camera = RTSPServer(CLIP, user="admin", password="bench:pw@1").start()
        config = work / "agent.toml"
        config.write_text(
            f'[agent]\nid = "bench-rtsp"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'[source]\nuri = "{camera.url}"\nrtsp_transport = "{args.transport}"\n'
            '[paths]\nstorage = "storage"\nengines = "engines"\nsvm = "svm"\nfaces = "faces"\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "agent", "-q", "-c", str(config)]
        for person, photo in (("lin", "lin-manuel-miranda.png"), ("alex", "alex-lacamoire.png")):
            subprocess.run([*cli, "enroll", person, str(FR / photo)], cwd=work, env=env, check=True,
                           capture_output=True)
        appearances = reference_appearances(work, env)
        collector = Collector(broker, "faces/events").start()
        received: dict[str, float] = {}
        original = collector._on_message

        def stamp(client, userdata, msg):  # the receive time of every event, by event_id
            received[json.loads(msg.payload)["event_id"]] = time.time()
            original(client, userdata, msg)

        collector.client.on_message = stamp
        log = (work / "agent.log").open("w")
        agent = subprocess.Popen([*cli, "run"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            line = _readline(camera.proc, 300).split()  # "stream T FPS FRAMES" when the agent's stream starts
            if not line or line[0] != "stream":
                sys.exit(f"the agent did not connect: {(work / 'agent.log').read_text()[-2000:]}")
            t0, fps, frames = float(line[1]), float(line[2]), int(line[3])
            loop_s = frames / fps
            time.sleep(loop_s * (args.loops + 1) + 3)
            status = work / "storage" / "status.json"
            read = json.loads(status.read_text())["stats"]["source"]["frames_read"]
            behind = (status.stat().st_mtime - t0) * fps - read  # frames sent by then that were not read yet
        finally:
            agent.terminate()
            agent.wait(60)
            collector.stop()
            camera.stop()
            broker.stop()
        events = [json.loads(m.text) for m in collector.on("faces/events")]
    if args.events:
        args.events.write_text("".join(json.dumps({**e, "received": received.get(e["event_id"])}) + "\n"
                                       for e in events))
    rows = []
    seen = set()
    for event in events:
        if event["type"] != "identified" or event["name"] != "lin":
            continue
        got = received.get(event["event_id"])
        loop, clip_frame = divmod(event["frame_index"], frames)
        appearance = next(((a, b) for a, b in appearances if a <= clip_frame <= b), None)
        if loop < 1 or got is None or appearance is None or (loop, appearance) in seen:
            continue  # warm-up loop; not in an appearance of the reference; a second identified of one (a split)
        seen.add((loop, appearance))
        captured = parse_ts(event["timestamp"])
        face_sent = t0 + (loop * frames + appearance[0]) / fps
        rows.append((loop, appearance[0], got - face_sent, captured - face_sent, got - captured))
    print(f"RTSP ({args.transport}), Hamilton clip 640x360 H.264 at {fps:.2f} fps; lin appears at clip frames "
          f"{', '.join(f'{a}-{b}' for a, b in appearances)}; {len(rows)} appearances measured")
    print(f"{'loop':>4s} {'from frame':>10s} {'total ms':>9s} {'to deciding frame':>18s} {'capture->broker':>16s}")
    for loop, first, total, until, after in rows:
        print(f"{loop:4d} {first:10d} {total * 1000:9.0f} {until * 1000:18.0f} {after * 1000:16.0f}")
    if rows:
        print(f"median total {statistics.median(r[2] for r in rows) * 1000:.0f} ms "
              f"(to the deciding frame {statistics.median(r[3] for r in rows) * 1000:.0f} ms, "
              f"capture -> broker {statistics.median(r[4] for r in rows) * 1000:.0f} ms)")
    print(f"at the end the agent's capture was {behind:.0f} frames ({behind / fps:.2f} s) behind the stream "
          "(more when the decoding thread is short of CPU on a loaded machine)")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
