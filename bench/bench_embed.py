"""Per-face embedding time: dlib's ResNet vs the same network converted to ONNX (ONNX Runtime, CPU).

    python bench/bench_embed.py [--runs 5] [--threads 2] [--faces 55]

Input: the 55 aligned 150x150 chips of ../shared/faces/dlib/examples/johns (real faces, what the pipeline
feeds the embedder). For each backend and batch size (1 and 8) all chips are embedded `--runs` times after
one warm-up pass; the table shows the median per-face time, faces per second, and the speed-up over dlib
at the same batch size. Also prints the max L2 difference between the two backends on these chips, and
the per-face time as video embeds (one face per call, batch_size 8) with and without `[embedding] flip`
(the chip and its mirror in one call, averaged).
The ONNX file is converted into a temporary folder first (not timed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.images import load_image  # noqa: E402
from agent.vision.dlib_convert import ensure_onnx  # noqa: E402
from agent.vision.embed import (  # noqa: E402
    RESNET_DAT,
    DlibEmbedder,
    OnnxRuntimeEmbedder,
    dlib_model_path,
    embed_chips,
)

JOHNS = ROOT.parent / "shared" / "faces" / "dlib" / "examples" / "johns"
BATCHES = (1, 8)


def per_face_ms(embedder, chips: np.ndarray, runs: int) -> float:
    embedder.embed(chips)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        embedder.embed(chips)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(chips) * 1000.0


def one_face_per_call_ms(embedder, chips: np.ndarray, runs: int, flip: bool) -> float:
    """Median per-face time embedding one face per call, as the video loop does (flip: chip + mirror)."""
    embed_chips(embedder, chips[:1], flip)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for k in range(len(chips)):
            embed_chips(embedder, chips[k:k + 1], flip)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(chips) * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="timed passes over all chips (median is reported)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--faces", type=int, default=55, help="how many of the johns chips to use")
    args = ap.parse_args()
    files = sorted(JOHNS.rglob("*.jpg"))[: args.faces]
    if not files:
        print(f"no chips found under {JOHNS}", file=sys.stderr)
        return 1
    chips = np.stack([load_image(f) for f in files])
    dat = dlib_model_path(RESNET_DAT)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        onnx_path = ensure_onnx(dat, tmp)
        rows = []
        outputs = {}
        for batch in BATCHES:
            for name, make in (("dlib", lambda b=batch: DlibEmbedder(batch_size=b, model_path=dat)),
                               ("onnxruntime", lambda b=batch: OnnxRuntimeEmbedder(onnx_path, b, args.threads))):
                embedder = make()
                rows.append((name, batch, per_face_ms(embedder, chips, args.runs)))
                outputs[name] = embedder.embed(chips)
        diff = float(np.linalg.norm(outputs["dlib"] - outputs["onnxruntime"], axis=1).max())
        video = OnnxRuntimeEmbedder(onnx_path, 8, args.threads)
        per_call = {flip: one_face_per_call_ms(video, chips, args.runs, flip) for flip in (False, True)}

    import dlib
    import onnxruntime

    print(f"{len(chips)} chips 150x150, {args.runs} runs (median), {os.cpu_count()} CPUs (load average "
          f"{os.getloadavg()[0]:.1f}); dlib {dlib.__version__} (CUDA: {dlib.DLIB_USE_CUDA}), onnxruntime "
          f"{onnxruntime.__version__} ({args.threads} threads)")
    print(f"{'backend':<12} {'batch':>5} {'ms/face':>9} {'faces/s':>9} {'speed-up vs dlib':>17}")
    dlib_ms = {batch: t for name, batch, t in rows if name == "dlib"}
    for name, batch, t in rows:
        print(f"{name:<12} {batch:>5} {t:>9.1f} {1000.0 / t:>9.1f} {dlib_ms[batch] / t:>16.1f}x")
    print(f"max L2 difference dlib vs onnxruntime: {diff:.2e}")
    print(f"onnxruntime, one face per call (video): {per_call[False]:.1f} ms/face; with [embedding] flip "
          f"(chip + mirror in one call): {per_call[True]:.1f} ms/face ({per_call[True] / per_call[False]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
