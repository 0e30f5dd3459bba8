"""Peak RSS and time of `face-agent identify` on one huge picture (6300x6300, just under the 40 MP cap, a face
pasted in), as PNG and JPEG, for each `[images] memory_mb` given: what the decode budget buys.

    python bench/bench_decode.py [--memory-mb 64 256 1024] [--side 6300]

Each run is a fresh process (its VmHWM is its own); the gallery is one person (obama, 2 photos).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FR = ROOT.parent / "shared" / "faces" / "face_recognition"
PEAK = ("import atexit, runpy, sys\n"
        "atexit.register(lambda: print('peak', next(l.split()[1] for l in open('/proc/self/status')"
        " if l.startswith('VmHWM')), file=sys.stderr))\n"
        "sys.argv = ['face-agent', *sys.argv[1:]]\n"
        "runpy.run_module('agent', run_name='__main__')\n")


def face_agent(*argv: str) -> tuple[float, float, str]:
    """(peak MiB, seconds, stdout) of one face-agent command."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PEAK, *argv], cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr)
    return int(done.stderr.split("peak")[-1].split()[0]) / 1024, seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--side", type=int, default=6300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        face = Image.open(FR / "examples" / "obama.jpg").convert("RGB")
        canvas = Image.new("RGB", (args.side, args.side), (200, 200, 200))
        canvas.paste(face.resize((face.width * 2, face.height * 2)), (args.side // 3, args.side // 3))
        pictures = [work / "huge.png", work / "huge.jpg"]
        canvas.save(pictures[0], optimize=True)
        canvas.save(pictures[1], quality=85)
        del canvas
        raw = work / "faces" / "train" / "raw" / "obama"
        raw.mkdir(parents=True)
        for photo in (FR / "examples" / "knn_examples" / "train" / "obama").iterdir():
            (raw / photo.name).write_bytes(photo.read_bytes())
        print(f"{'picture':10s} {'bytes':>9s} {'memory_mb':>9s} {'peak MiB':>9s} {'seconds':>8s}  result")
        for memory_mb in args.memory_mb:
            config = work / f"agent-{memory_mb}.toml"
            config.write_text(f'[paths]\nfaces = "faces"\nstorage = "storage"\nsvm = "svm"\n'
                              f'engines = "{ROOT / "engines"}"\n[mqtt]\nenabled = false\n'
                              f'[images]\nmemory_mb = {memory_mb}\n')
            face_agent("-q", "-c", str(config), "enroll")
            for picture in pictures:
                peak, seconds, out = face_agent("-q", "-c", str(config), "identify", "--no-train", str(picture))
                result = " / ".join(line.strip()[:60] for line in out.splitlines()[:2]) or "refused"
                print(f"{picture.name:10s} {picture.stat().st_size:9d} {memory_mb:9d} {peak:9.0f} {seconds:8.1f}  "
                      f"{result}")


if __name__ == "__main__":
    main()
