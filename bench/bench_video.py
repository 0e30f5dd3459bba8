"""End-to-end frames per second on the shared clips: face-agent vs the face_recognition library's video loop.

    python bench/bench_video.py [--clips hamilton walkers] [--repeat 1]

Both run on the same frames, one after the other in this one invocation, each in its own process so
that its peak memory (VmHWM) is its own:
- baseline: face_recognition's usual loop (examples/facerec_from_video_file.py): read a frame with
  OpenCV, `face_locations` (HOG, upsample 1), `face_encodings` for every face, compare with the known
  encoding; every frame.
- face-agent: the real service (`agent.service.Service`) on the file with --every-frame: capture thread,
  MTCNN every frame, tracker, embeddings only for the tracks that need one, votes, events into SQLite
  (MQTT off). Same enrolled person (the clip's reference photo).

Needs `pip install --no-deps face-recognition==1.3.0` for the baseline (its models package is found on
disk; `pkg_resources` is not needed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "faces"
CLIPS = {
    "hamilton": (SHARED / "face_recognition" / "examples" / "short_hamilton_clip.mp4",
                 SHARED / "face_recognition" / "examples" / "lin-manuel-miranda.png"),
    "walkers": (SHARED / "facenet-pytorch" / "examples" / "video.mp4",
                SHARED / "face_recognition" / "examples" / "lin-manuel-miranda.png"),
}

BASELINE = r'''
import importlib.util, json, sys, time, types
from pathlib import Path
spec = importlib.util.find_spec("face_recognition_models")
models = Path(list(spec.submodule_search_locations)[0]) / "models"
shim = types.ModuleType("face_recognition_models")  # the real one imports pkg_resources
shim.pose_predictor_model_location = lambda: str(models / "shape_predictor_68_face_landmarks.dat")
shim.pose_predictor_five_point_model_location = lambda: str(models / "shape_predictor_5_face_landmarks.dat")
shim.face_recognition_model_location = lambda: str(models / "dlib_face_recognition_resnet_model_v1.dat")
shim.cnn_face_detector_model_location = lambda: str(models / "mmod_human_face_detector.dat")
sys.modules["face_recognition_models"] = shim
import cv2, face_recognition
import numpy as np
clip, reference = sys.argv[1], sys.argv[2]
known = face_recognition.face_encodings(face_recognition.load_image_file(reference))[0]
cap = cv2.VideoCapture(clip)
frames = faces = matches = 0
t0 = time.perf_counter()
while True:
    ok, frame = cap.read()
    if not ok:
        break
    rgb = np.ascontiguousarray(frame[:, :, ::-1])  # new dlib needs contiguous arrays
    locations = face_recognition.face_locations(rgb)
    encodings = face_recognition.face_encodings(rgb, locations)
    for enc in encodings:
        matches += bool(face_recognition.compare_faces([known], enc, tolerance=0.6)[0])
    frames += 1
    faces += len(locations)
elapsed = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"frames": frames, "faces": faces, "embedded": faces, "matches": matches,
                  "seconds": elapsed, "peak_mib": int(hwm) / 1024}))
'''

AGENT = r'''
import json, logging, os, resource, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from agent.config import config_from_dict
from agent.service import Service
clip, reference, work, overrides = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[5])
settings = {"mqtt": {"enabled": False}}
for key, value in overrides.items():
    section, name = key.split(".")
    settings.setdefault(section, {})[name] = value
(work / "agent.toml").write_text("".join(
    f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items()) for s, kv in settings.items()))
# enroll in another process, as a user would (`face-agent enroll`): this process holds only the agent
subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(work / "agent.toml"), "enroll", "reference",
                reference], check=True, env={**os.environ, "PYTHONPATH": sys.argv[4]}, capture_output=True)
cfg = config_from_dict(settings, base_dir=work)
service = Service(cfg, source_uri=clip, every_frame=True)
t_load = time.perf_counter()
service.load()
service.source.start()
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
matches = 0
while True:
    frame = service.source.read(timeout=5)
    if frame is None:
        break
    result = service.pipeline.process(frame.image, frame.timestamp)
    for event in service.events_for(result, frame.image):
        service._emit(event)
    matches += sum(r.prediction.name == "reference" for r in result.recognitions)
    service.stats.frame(result)
elapsed = time.perf_counter() - t0
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
service.shutdown()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
print(json.dumps({"frames": service.stats.frames, "faces": service.pipeline.faces,
                  "embedded": service.pipeline.embedded, "matches": matches, "events": service.stats.events,
                  "seconds": elapsed, "cores_busy": cpu / elapsed, "peak_mib": int(hwm) / 1024,
                  "latency_ms": service.stats.latency_ms()}))
'''


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=JSON",
                    help="agent settings to override, e.g. tracker.detect_every=5 detector.min_face_size=40")
    args = ap.parse_args()
    print(f"{'clip':10s} {'runner':16s} {'frames':>6s} {'faces':>6s} {'embeds':>6s} {'fps':>7s} {'cores':>5s} "
          f"{'peak MiB':>8s}")
    for name in args.clips:
        clip, reference = CLIPS[name]
        results = {}
        if not args.skip_baseline:
            results["face_recognition"] = run(BASELINE, str(clip), str(reference))
        with tempfile.TemporaryDirectory(prefix="bench-video-") as work:
            overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
            results["face-agent"] = run(AGENT, str(clip), str(reference), work, str(ROOT), json.dumps(overrides))
        for runner, r in results.items():
            fps = r["frames"] / r["seconds"]
            r["fps"] = fps
            cores = f"{r['cores_busy']:.2f}" if "cores_busy" in r else "1.00"
            print(f"{name:10s} {runner:16s} {r['frames']:6d} {r['faces']:6d} {r['embedded']:6d} {fps:7.1f} "
                  f"{cores:>5s} {r['peak_mib']:8.0f}")
        if "face_recognition" in results:
            ratio = results["face-agent"]["fps"] / results["face_recognition"]["fps"]
            print(f"{name:10s} speed-up x{ratio:.2f}; faces found {results['face-agent']['faces']} vs "
                  f"{results['face_recognition']['faces']}")
        print(f"{name:10s} face-agent stage latency ms: {results['face-agent'].get('latency_ms')}")
        sys.stdout.flush()
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
