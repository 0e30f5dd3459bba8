"""Remote enrollment while the video loop runs: how much does it cost the loop's frame time?

A "video loop" thread detects and embeds the faces of one photo over and over (what the service does per
frame, with the same shared FaceAnalyzer), first alone, then while an operator sends N photos over a real
mosquitto to an EnrollmentIntake (signed requests, analysis, storage, one debounced retrain).

    python bench/bench_remote_enroll.py [--images 10] [--nice 10] [--embedding dlib|onnxruntime]

Prints frame-time percentiles alone and during enrollment, and the enrollment's own timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as paho  # noqa: E402
from broker import Broker  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.config import config_from_dict  # noqa: E402
from agent.gallery import Gallery  # noqa: E402
from agent.images import load_image  # noqa: E402
from agent.sync import enrollment_protocol as proto  # noqa: E402
from agent.sync.enrollment import EnrollmentIntake  # noqa: E402
from agent.sync.mqtt import MqttClient  # noqa: E402

SHARED = ROOT.parent / "shared" / "faces"
FRAME = SHARED / "face_recognition" / "examples" / "obama-480p.jpg"
JOHNS = SHARED / "dlib" / "examples" / "johns"
KEY = bytes(range(32))


class Loop(threading.Thread):
    def __init__(self, analyzer, rgb):
        super().__init__(daemon=True)
        self.analyzer, self.rgb = analyzer, rgb
        self.times: list[tuple[float, float]] = []  # (start, duration)
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            t0 = time.perf_counter()
            dets = self.analyzer.detect(self.rgb)
            self.analyzer.embed(self.rgb, dets)
            self.times.append((t0, time.perf_counter() - t0))

    def between(self, a: float, b: float) -> list[float]:
        return [d for t, d in self.times if a <= t < b]


def describe(times: list[float]) -> str:
    if not times:
        return "no frames"
    q = sorted(times)
    p95 = q[min(len(q) - 1, int(0.95 * len(q)))]
    return (f"{len(q)} frames, {1 / statistics.mean(q):.1f} fps, median {statistics.median(q) * 1e3:.0f} ms, "
            f"p95 {p95 * 1e3:.0f} ms, max {q[-1] * 1e3:.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--nice", type=int, default=10, help="[remote_enroll] worker_nice")
    ap.add_argument("--embedding", default="dlib", choices=["dlib", "onnxruntime"])
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of the loop alone")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-enroll-"))
    broker = Broker(tmp / "broker").start()
    keys = tmp / "keys"
    keys.write_text(f"ops:{KEY.hex()}\n")
    keys.chmod(0o600)
    cfg = config_from_dict({"paths": {"storage": "storage", "engines": str(ROOT / "engines"), "svm": "svm",
                                      "faces": "faces"},
                            "embedding": {"backend": args.embedding},
                            "mqtt": {"port": broker.port},
                            "remote_enroll": {"key_file": str(keys), "debounce": 1.0, "worker_nice": args.nice}},
                           base_dir=tmp, env={})
    gallery = Gallery(cfg)
    analyzer = gallery.analyzer  # shared with the loop, as in the service
    done = threading.Event()
    trained: dict = {}

    def on_model(classifier, info):
        trained.update(info, at=time.perf_counter())
        done.set()

    client = MqttClient(cfg)
    intake = EnrollmentIntake(cfg, gallery, client, on_model)
    intake.start()
    client.start()
    client.wait_connected(10)
    op = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    results: list[float] = []
    op.on_message = lambda c, u, m: results.append(time.perf_counter()) \
        if json.loads(m.payload).get("command") == "add" else None
    op.connect(broker.host, broker.port)
    op.loop_start()
    op.subscribe(proto.result_topic("faces", cfg.agent.id), qos=1)
    time.sleep(0.5)

    loop = Loop(analyzer, load_image(FRAME))
    loop.start()
    time.sleep(args.baseline)
    photos = [f for p in sorted(JOHNS.iterdir()) for f in sorted(p.iterdir())[:5]][:args.images]
    sent = time.perf_counter()
    for f in photos:
        fields = proto.build_request("add", "ops", KEY, target="*", person=f.parent.name,
                                     images=[(f.name, f.read_bytes())])
        op.publish("faces/enroll", proto.encode(fields), qos=1)
    done.wait(600)
    end = time.perf_counter()
    loop.stop_flag = True
    loop.join()
    print(f"embedding {args.embedding}, worker nice +{args.nice}, {len(photos)} photos, 2 CPU cores")
    print(f"video loop alone:            {describe(loop.between(0, sent))}")
    print(f"video loop during enrollment: {describe(loop.between(sent, end))}")
    if results:
        last = results[-1] - sent
        print(f"enrollment: last result {last:.1f} s after sending ({last / len(photos):.2f} s per photo), "
              f"retrained {trained.get('at', end) - sent:.1f} s after sending (SVM training "
              f"{trained.get('training_s')} s, whole retrain {trained.get('total_s')} s, "
              f"cv {trained.get('cv_score')})")
    op.disconnect()
    op.loop_stop()
    client.stop()
    intake.stop()
    gallery.close()
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
