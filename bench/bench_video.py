"""Speed and what users see, on clips with known identities: face-agent vs the face_recognition library's loop.

    python bench/bench_video.py [--clips hamilton walkers replace_cut replace_gap crossing scene_cut idle montage]
                                [--skip-baseline] [--set tracker.detect_every=5 ...] [--repeat N] [--recall]
                                [--cameras 1 2 4] [--variant tracker.motion_threshold=0]

Both runners get the same frames and the same enrolled people, one after the other in this one invocation,
each in its own process so that its peak memory (VmHWM) is its own:
- face_recognition: its usual loop (examples/facerec_from_video_file.py): read a frame with OpenCV,
  `face_locations` (HOG, upsample 1), `face_encodings` for every face, and the name of the nearest known
  encoding within its tolerance (0.6), on every frame.
- face-agent: the real service (`agent.service.Service`) on the file with every frame: capture thread,
  MTCNN, tracker with its identity checks, embeddings only when needed, votes, events into SQLite (MQTT
  off), the per-frame record (`--frames-out`).

Speed: frames per second and process CPU time per frame for both (the machine may be shared: CPU time is the
steadier figure; `--repeat N` alternates the runners N times and keeps each one's fastest run), cores used
(CPU time / wall time), peak RSS, and the P-Net pyramid's arithmetic per full-detection frame (the detector's
floor: its multiply-adds against the cores' peak). `--cameras 1 2 4` runs the agent also with that many cameras
([[sources]]), the same clip on each, every frame of each: fps is then frames of all cameras per second, and
its per-frame quality is scored per camera (it must be the same on each). `--recall` adds the detector's
recall on dlib's annotated photo sets (`face-agent eval --detections`), to check that a speed setting keeps
the same faces.

Quality is judged per frame against who is really there (bench/identity_clips.py): face-frames with a
wrong name, named boxes on nothing, the share of enrolled people's face-frames shown with their name
(after each appearance's first 10 frames) and the frames until a name settles. Clips:
- hamilton: the shared clip with lin-manuel-miranda, alex-lacamoire and obama enrolled (as the issue);
- walkers: facenet-pytorch's crowd clip (1080p), nobody in it enrolled (lin-manuel-miranda is): every name is wrong;
- replace_cut, replace_gap, crossing, scene_cut: built from LFW photos (3 enrolled people, 5 photos each);
- montage (issue 29): a 720p montage with hard cuts every 1.2-2.6 s between LFW photos at several sizes, the
  Hamilton clip's shots (stage, profile, audience), a crowd of 18 LFW faces of ~30-100 px and the 1080p walkers
  as the one long shot (bench/identity_clips.montage_clip; 6 LFW people and Hamilton's three enrolled);
- idle: an empty scene with a camera's noise for most of its 400 frames, one walk-in and one sudden
  appearance: what the motion gate ([tracker] motion_threshold) saves where nobody is there
  (`--variant tracker.motion_threshold=0` runs the agent without it beside).

Needs `pip install --no-deps face-recognition==1.3.0` for the baseline (its models package is found on
disk; `pkg_resources` is not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import identity_clips as ic  # noqa: E402

FR_EXAMPLES = ic.SHARED / "face_recognition" / "examples"
WALKERS = ic.SHARED / "facenet-pytorch" / "examples" / "video.mp4"
SYNTHETIC = ("replace_cut", "replace_gap", "crossing", "scene_cut", "idle")

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
import cv2, face_recognition, resource
import numpy as np
clip, people, frames_out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
names, known = [], []
for name, photos in people.items():
    for photo in photos:
        encodings = face_recognition.face_encodings(face_recognition.load_image_file(photo))
        if encodings:
            names.append(name)
            known.append(encodings[0])
cap = cv2.VideoCapture(clip)
frames = faces = 0
out = open(frames_out, "w")
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
while True:
    ok, frame = cap.read()
    if not ok:
        break
    rgb = np.ascontiguousarray(frame[:, :, ::-1])  # new dlib needs contiguous arrays
    locations = face_recognition.face_locations(rgb)
    encodings = face_recognition.face_encodings(rgb, locations)
    shown = []
    for (top, right, bottom, left), enc in zip(locations, encodings):
        distances = face_recognition.face_distance(known, enc) if known else np.array([])
        best = int(np.argmin(distances)) if len(distances) else -1
        name = names[best] if best >= 0 and distances[best] <= 0.6 else None
        shown.append({"box": {"left": left, "top": top, "right": right, "bottom": bottom},
                      "status": "named" if name else "unknown", "name": name})
    out.write(json.dumps({"frame": frames, "faces": shown}) + "\n")
    frames += 1
    faces += len(locations)
elapsed = time.perf_counter() - t0
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"frames": frames, "faces": faces, "embedded": faces, "seconds": elapsed,
                  "cores_busy": cpu / elapsed, "cpu_seconds": cpu, "peak_mib": int(hwm) / 1024}))
'''

# the agent's work folder, shared with bench_video_stages.PROFILE: agent.toml from the overrides ([mqtt] off),
# the people enrolled through `face-agent enroll`; the code before it sets clip, people, work and overrides
AGENT_SETUP = r'''
settings = {"mqtt": {"enabled": False}}
for key, value in overrides.items():
    section, name = key.split(".")
    settings.setdefault(section, {})[name] = value
(work / "agent.toml").write_text("".join(
    f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items()) for s, kv in settings.items()))
# enroll in other processes, as a user would (`face-agent enroll`): this process holds only the agent
for name, photos in people.items():
    subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(work / "agent.toml"), "enroll", name, *photos],
                   check=True, env={**os.environ, "PYTHONPATH": sys.argv[4]}, capture_output=True)
'''

AGENT = r'''
import json, os, resource, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from agent.config import config_from_dict
from agent.service import Service
clip, people, work, overrides = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[5])
cameras = int(sys.argv[6])''' + AGENT_SETUP + r'''if cameras > 1:  # the same clip on every camera
    settings["sources"] = [{"name": f"cam{k + 1}", "uri": clip} for k in range(cameras)]
cfg = config_from_dict(settings, base_dir=work)
service = Service(cfg, source_uri=clip if cameras == 1 else None, every_frame=True,
                  frames_out=str(work / "frames.jsonl"))
service.load()
service.start()
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
while service.step(timeout=5):  # the service's own loop, one round at a time (start-up excluded)
    pass
elapsed = time.perf_counter() - t0
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
tracker = service.pipeline.tracker
service.shutdown()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
print(json.dumps({"frames": service.stats.frames, "faces": sum(f.pipeline.faces for f in service.feeds),
                  "embedded": sum(f.pipeline.embedded for f in service.feeds), "events": service.stats.events,
                  "cameras": [f.name for f in service.feeds] if cameras > 1 else [None],
                  "splits": tracker.splits, "cuts": tracker.cuts,
                  "still_skipped": sum(f.pipeline.motion.skipped for f in service.feeds),
                  "seconds": elapsed, "cores_busy": cpu / elapsed, "cpu_seconds": cpu, "peak_mib": int(hwm) / 1024,
                  "latency_ms": service.stats.latency_ms()}))
'''


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def clips(names: list[str], work: Path) -> list[tuple[ic.Clip, Path, dict[str, list[Path]]]]:
    """(ground truth, video file, enrolled people) for every clip asked for."""
    out = []
    if "hamilton" in names:
        out.append((ic.hamilton_truth(), ic.HAMILTON, ic.hamilton_enrollment()))
    if "walkers" in names:
        crowd = ic.Clip("walkers", 105, [ic.Actor("stranger:crowd", None, 0, 105, region=(0, 0, 1920, 1080))])
        out.append((crowd, WALKERS, {"lin_manuel": [FR_EXAMPLES / "lin-manuel-miranda.png"]}))
    if "montage" in names:
        enrolled, strangers = ic.montage_cast()
        montage = ic.montage_clip(list(enrolled), strangers)
        out.append((montage, ic.render(montage, work / "montage.mp4"), ic.montage_enrollment()))
    wanted = [n for n in SYNTHETIC if n in names]
    if wanted:
        enrolled, strangers = ic.cast()
        for clip in [*ic.standard_clips(list(enrolled), strangers), ic.idle_clip(list(enrolled))]:
            if clip.name in wanted:
                out.append((clip, ic.render(clip, work / f"{clip.name}.mp4"), enrolled))
    return out


def pnet_macs(height: int, width: int) -> int:
    """Multiply-accumulates of one P-Net pass over a height x width input (conv 3x3 x10, max pool 2x2,
    conv 3x3 x16, conv 3x3 x32, 1x1 heads 2 + 4): the detector's dominant cost on full-detection frames."""
    h1, w1 = height - 2, width - 2
    h2, w2 = -(-h1 // 2) - 2, -(-w1 // 2) - 2
    h3, w3 = h2 - 2, w2 - 2
    return h1 * w1 * 10 * 27 + h2 * w2 * 16 * 90 + h3 * w3 * (32 * 144 + 6 * 32)


def pnet_work(overrides: dict, size: tuple[int, int] = (360, 640)) -> str:
    """The P-Net pyramid's arithmetic for a frame of `size` (h, w) at the configured detector settings."""
    from agent.config import config_from_dict
    from agent.vision.mtcnn import pnet_input_shapes

    settings: dict = {}
    for key, value in overrides.items():
        section, name = key.split(".")
        settings.setdefault(section, {})[name] = value
    cfg = config_from_dict(settings, env={})
    d, t = cfg.detector, cfg.tracker
    floor = d.min_face_size if t.track_small_faces else max(d.min_face_size, min(t.min_face_size,
                                                                                 t.verify_min_face_size))
    shapes = pnet_input_shapes(*size, floor, d.scale_factor, d.max_input_side)
    macs = sum(pnet_macs(h, w) for h, w in shapes)
    return (f"P-Net pyramid on a {size[1]}x{size[0]} full-detection frame (video: faces from {floor} px): "
            f"{len(shapes)} scales, {macs / 1e6:.0f} M multiply-adds = {2 * macs / 1e9:.2f} GFLOP")


DLIB_SETS = [ic.SHARED / "dlib" / "examples" / "faces" / f"{name}.xml" for name in ("testing", "training")]


def detection_recall(overrides: dict) -> str:
    """Recall and precision of the detector (agent settings + overrides) on dlib's annotated photo sets."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as tmp:
        toml = Path(tmp) / "agent.toml"
        settings: dict = {"mqtt": {"enabled": False}}
        for key, value in overrides.items():
            section, name = key.split(".")
            settings.setdefault(section, {})[name] = value
        toml.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items())
                                for s, kv in settings.items()))
        for xml in DLIB_SETS:
            out = subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(toml), "eval", "--detections",
                                  str(xml), "--json"], capture_output=True, text=True, cwd=tmp,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
            if out.returncode != 0:
                lines.append(f"{xml.name}: eval failed: {out.stderr.strip()[-300:]}")
                continue
            d = json.loads(out.stdout)["detections"]
            lines.append(f"{xml.parent.parent.parent.name} {xml.name}: recall {d['recall']:.1%} "
                         f"({d['true_positives']}/{d['faces']}), precision {d['precision']:.1%}, "
                         f"mean IoU {d['mean_iou']:.3f}")
    return "detector on photos: " + "; ".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=["hamilton", "walkers", *SYNTHETIC],
                    choices=["hamilton", "walkers", *SYNTHETIC, "montage"])
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=JSON",
                    help="agent settings to override, e.g. tracker.detect_every=5 detector.min_face_size=40")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run both runners N times, alternating, and keep each one's fastest run (a shared, "
                         "noisy machine); per-frame quality is the same in every run")
    ap.add_argument("--cameras", nargs="+", type=int, default=[1], metavar="N",
                    help="run the agent with each of these numbers of cameras (the same clip on each), e.g. 1 2 4")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar="SECTION.KEY=JSON",
                    help="also run the agent (1 camera) with these settings on top of --set, as its own runner; "
                         "repeat for several, e.g. --variant tracker.motion_threshold=0")
    ap.add_argument("--recall", action="store_true",
                    help="also the detector's recall on dlib's annotated photo sets (face-agent eval --detections)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if any(n < 1 for n in args.cameras):
        ap.error("--cameras: 1 or more")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    speed_rows, quality_rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        work = Path(tmp)
        for truth, video, people in clips(args.clips, work):
            people_json = json.dumps({k: [str(p) for p in v] for k, v in people.items()})
            results: dict[str, dict] = {}
            for attempt in range(args.repeat):
                runs = {}
                if not args.skip_baseline:
                    frames_out = work / f"{truth.name}-peer-{attempt}.jsonl"
                    runs["face_recognition"] = run(BASELINE, str(video), people_json, str(frames_out))
                    runs["face_recognition"]["frames_out"] = frames_out
                for cameras in args.cameras:
                    runner = "face-agent" if cameras == 1 else f"face-agent x{cameras} cams"
                    agent_dir = work / f"{truth.name}-agent-{cameras}-{attempt}"
                    agent_dir.mkdir()
                    runs[runner] = run(AGENT, str(video), people_json, str(agent_dir), str(ROOT),
                                       json.dumps(overrides), str(cameras))
                    runs[runner]["frames_out"] = agent_dir / "frames.jsonl"
                for variant in args.variant:
                    runner = "agent " + " ".join(variant)
                    agent_dir = work / f"{truth.name}-variant-{len(runs)}-{attempt}"
                    agent_dir.mkdir()
                    settings = {**overrides, **{k: json.loads(v) for k, v in (item.split("=", 1) for item in variant)}}
                    runs[runner] = run(AGENT, str(video), people_json, str(agent_dir), str(ROOT),
                                       json.dumps(settings), "1")
                    runs[runner]["frames_out"] = agent_dir / "frames.jsonl"
                for runner, r in runs.items():
                    r["fps"] = r["frames"] / r["seconds"]
                    r["cpu_ms"] = 1000 * r["cpu_seconds"] / max(1, r["frames"])
                    if runner not in results or r["fps"] > results[runner]["fps"]:
                        results[runner] = r
                if args.repeat > 1:
                    print(f"{truth.name} run {attempt + 1}/{args.repeat}: " + ", ".join(
                        f"{runner} {r['fps']:.1f} fps ({r['cpu_ms']:.1f} CPU ms/frame)" for runner, r in runs.items()),
                        flush=True)
            for runner, r in results.items():
                speed_rows.append((truth.name, runner, r))
                scores = [ic.score(truth, ic.read_frames(r["frames_out"], camera))
                          for camera in r.get("cameras", [None])]
                quality = scores[0]
                if any(ic.format_scores([q]) != ic.format_scores([quality]) for q in scores[1:]):
                    print(f"{truth.name} {runner}: the cameras differ: " + "; ".join(
                        ic.format_scores([q]).splitlines()[1] for q in scores), flush=True)
                quality["runner"] = runner
                quality_rows.append(quality)
                extra = (f"; splits {r['splits']}, cuts {r['cuts']}, full detections skipped (still) "
                         f"{r['still_skipped']}, latency ms {r['latency_ms']}"
                         if "splits" in r else "")
                print(f"{truth.name} {runner}: {r['fps']:.1f} fps; per person {quality['per_person']}; "
                      f"settle {quality['settle_frames']}{extra}", flush=True)
            if "face_recognition" in results and "face-agent" in results:
                peer, agent = results["face_recognition"], results["face-agent"]
                print(f"{truth.name}: speed-up x{agent['fps'] / peer['fps']:.2f} in frames per second, "
                      f"x{peer['cpu_ms'] / agent['cpu_ms']:.2f} in CPU time per frame", flush=True)
            time.sleep(0.5)
    print()
    print(f"{'clip':12s} {'runner':16s} {'frames':>6s} {'embeds':>6s} {'fps':>7s} {'x peer':>6s} {'cores':>5s} "
          f"{'CPU ms/f':>8s} {'peak MiB':>8s}")
    peer_fps = {name: r["fps"] for name, runner, r in speed_rows if runner == "face_recognition"}
    for name, runner, r in speed_rows:
        ratio = f"{r['fps'] / peer_fps[name]:6.2f}" if name in peer_fps else f"{'':6s}"
        print(f"{name:12s} {runner:16s} {r['frames']:6d} {r['embedded']:6d} {r['fps']:7.1f} {ratio} "
              f"{r['cores_busy']:5.2f} {r['cpu_ms']:8.1f} {r['peak_mib']:8.0f}")
    print()
    print(pnet_work(overrides))
    if args.recall:
        print(detection_recall(overrides))
    print()
    print(ic.format_scores(quality_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
