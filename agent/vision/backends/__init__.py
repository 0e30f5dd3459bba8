"""Backends run one MTCNN network on one batch; everything else (pyramid, crops, NMS) is shared.

A backend is created for a folder of ONNX files and answers `run(net, batch)`:

- `net` is "pnet", "rnet" or "onet";
- `batch` is float32 NCHW, already normalised ((pixel - 127.5) / 128, RGB channel order as MTCNN was
  trained); P-Net takes any H, W >= 12, R-Net 24x24, O-Net 48x48, any batch size;
- the result is a tuple of float32 arrays, in this order:
  pnet: (prob (N, 2, H', W'), reg (N, 4, H', W')); rnet: (prob (N, 2), reg (N, 4));
  onet: (prob (N, 2), reg (N, 4), landmarks (N, 10)).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

NETS = ("pnet", "rnet", "onet")
CROP_SIZE = {"rnet": 24, "onet": 48}  # fixed input side of R-Net and O-Net; P-Net takes any H, W >= 12
PNET_MIN_SIDE = 12
# the ONNX graphs shipped as package data (built by tools/build_mtcnn_onnx.py, see agent/models/README.md)
MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "mtcnn"


class BackendError(RuntimeError):
    """A backend that cannot load or run its networks."""


def check_batch(net: str, batch: Any) -> np.ndarray:
    """The batch as contiguous float32, or BackendError when it breaks the protocol above."""
    if net not in NETS:
        raise BackendError(f"unknown network {net!r}; expected one of {NETS}")
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] == 0:
        raise BackendError(f"{net}: batch must be float32 (N, 3, H, W) with N >= 1, got shape {batch.shape}")
    size = CROP_SIZE.get(net)
    if size is not None and batch.shape[2:] != (size, size):
        raise BackendError(f"{net}: input must be {size}x{size}, got {batch.shape[2]}x{batch.shape[3]}")
    if size is None and min(batch.shape[2:]) < PNET_MIN_SIDE:
        raise BackendError(f"pnet: input must be at least 12x12, got {batch.shape[2]}x{batch.shape[3]}")
    return batch


class Backend(Protocol):
    name: str

    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def close(self) -> None: ...


def create_backend(kind: str, model_dir: str | Path | None = None, **options: Any) -> Backend:
    """A backend by name, loaded from `model_dir` (default `MODEL_DIR`).

    "onnxruntime": options `threads` (intra-op threads, default 2).
    "tensorrt": TensorRT behind the watchdog (options: see tensorrt.create_tensorrt_backend and
    tensorrt.options_from_config); "auto": TensorRT when it imports and a GPU is present, else onnxruntime.
    Raises BackendError for an unknown kind or a backend that cannot start.
    """
    if kind in ("auto", "tensorrt"):
        from agent.vision.backends import tensorrt

        if kind == "auto":
            kind, why = tensorrt.auto_kind()
            # a CPU machine is not news on every command: `face-agent doctor` says why TensorRT is not used
            logging.getLogger(__name__).log(logging.INFO if kind == "tensorrt" else logging.DEBUG,
                                            "detector backend auto -> %s: %s", kind, why)
        if kind == "tensorrt":
            return tensorrt.create_tensorrt_backend(model_dir, **options)
    if kind == "onnxruntime":
        from agent.vision.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_dir, threads=int(options.get("threads", 2)))
    raise BackendError(f"unknown detector backend {kind!r}; expected one of: auto, onnxruntime, tensorrt")
