"""One runner for every network here: "run this ONNX model on this batch", on ONNX Runtime or TensorRT.

A runner is created for a set of `Model`s (what `run` calls them, the ONNX file, input and output names,
the input shape) and answers `run(model, batch)`:

- `model` is a model's name;
- `batch` is float32 NCHW, checked against the model (`Model.check`) before it runs;
- the result is a tuple of float32 arrays, one per output, in the model's `outputs` order.

Runners (each one small class with `name`, `run`, `close`):

- `onnxruntime.OnnxRuntimeRunner(models, threads)`: the CPU, everywhere;
- `tensorrt.TensorRTRunner(models, specs, ...)`: one TensorRT engine per model from the engine cache
  (`engine_cache.py`), with the CPU runner for inputs outside an engine's profile;
- `watchdog.GuardedBackend(primary, fallback, ...)`: a runner behind a timeout, one background rebuild and
  the CPU fallback; `tensorrt.create_tensorrt_runner` puts TensorRT behind it the way the service runs.

Two networks use them:

- MTCNN (agent/vision/mtcnn.py): models "pnet", "rnet", "onet" (`mtcnn_models`), created by
  `create_backend` from `[detector] backend`. Their batches are normalised ((pixel - 127.5) / 128, RGB
  channel order as MTCNN was trained); P-Net takes any H, W >= 12, R-Net 24x24, O-Net 48x48, any batch
  size; outputs: pnet (prob (N, 2, H', W'), reg (N, 4, H', W')); rnet (prob (N, 2), reg (N, 4));
  onet (prob (N, 2), reg (N, 4), landmarks (N, 10));
- dlib's ResNet converted to ONNX (agent/vision/embed.py): model "resnet", (N, 3, 150, 150) -> (N, 128),
  created from `[embedding] backend`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

NETS = ("pnet", "rnet", "onet")
CROP_SIZE = {"rnet": 24, "onet": 48}  # fixed input side of R-Net and O-Net; P-Net takes any H, W >= 12
PNET_MIN_SIDE = 12
# the ONNX graphs shipped as package data (built by tools/build_mtcnn_onnx.py, see agent/models/README.md)
MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "mtcnn"


class BackendError(RuntimeError):
    """A runner that cannot load or run its networks."""


@dataclass(frozen=True)
class Model:
    """One ONNX network a runner serves, and the batches it takes: (N >= 1, channels, H, W) float32."""

    name: str  # what `run` is called with, e.g. "pnet", "resnet"
    path: Path  # the ONNX file
    outputs: tuple[str, ...]  # output names, in the order `run` returns them
    size: int | None = None  # fixed input side (H = W = size); None: any H, W >= min_side
    min_side: int = 1
    channels: int = 3
    input: str = "input"  # the one input's name
    label: str = "model"  # what error messages call the file, e.g. "MTCNN model"
    hint: str = ""  # said when the file is missing, e.g. how to regenerate it
    # ONNX Runtime tuning: input shapes change from call to call (no arena or memory patterns: they keep
    # a buffer per shape seen), and whether idle intra-op threads spin between calls
    varying_shapes: bool = False
    spin: bool = True
    threads: int = 0  # ONNX Runtime intra-op threads for this model; 0 = the runner's setting

    def check(self, batch: Any) -> np.ndarray:
        """The batch as contiguous float32, or BackendError when it is not what this model takes."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != self.channels or batch.shape[0] == 0:
            raise BackendError(f"{self.name}: batch must be float32 (N, {self.channels}, H, W) with N >= 1, "
                               f"got shape {batch.shape}")
        if self.size is not None and batch.shape[2:] != (self.size, self.size):
            raise BackendError(f"{self.name}: input must be {self.size}x{self.size}, "
                               f"got {batch.shape[2]}x{batch.shape[3]}")
        if self.size is None and min(batch.shape[2:]) < self.min_side:
            raise BackendError(f"{self.name}: input must be at least {self.min_side}x{self.min_side}, "
                               f"got {batch.shape[2]}x{batch.shape[3]}")
        return batch


def models_by_name(models: Iterable[Model]) -> dict[str, Model]:
    found: dict[str, Model] = {}
    for model in models:
        if model.name in found:
            raise BackendError(f"two models named {model.name!r}")
        found[model.name] = model
    if not found:
        raise BackendError("a runner needs at least one model")
    return found


def check_input(models: Mapping[str, Model], name: str, batch: Any) -> np.ndarray:
    """`models[name].check(batch)`, or BackendError for a name that is not one of the models."""
    model = models.get(name)
    if model is None:
        raise BackendError(f"unknown network {name!r}; expected one of {tuple(models)}")
    return model.check(batch)


def model_check(models: Iterable[Model]) -> Callable[[str, Any], np.ndarray]:
    """`check_input` for these models, as a (name, batch) function: what the watchdog checks calls with."""
    by_name = models_by_name(models)

    def check(name: str, batch: Any) -> np.ndarray:
        return check_input(by_name, name, batch)

    return check


def mtcnn_models(model_dir: str | Path | None = None, pnet_threads: int = 0) -> list[Model]:
    """MTCNN's three networks from `model_dir` (default MODEL_DIR); `pnet_threads` > 0 gives P-Net its own
    ONNX Runtime thread count (1 when the detector runs several pyramid scales at once)."""
    folder = Path(model_dir) if model_dir is not None else MODEL_DIR
    outputs = {"pnet": ("prob", "reg"), "rnet": ("prob", "reg"), "onet": ("prob", "reg", "landmarks")}
    return [Model(net, folder / f"{net}.onnx", outputs[net], size=CROP_SIZE.get(net), min_side=PNET_MIN_SIDE,
                  label="MTCNN model", hint="regenerate with tools/build_mtcnn_onnx.py",
                  varying_shapes=True, spin=False, threads=pnet_threads if net == "pnet" else 0)
            for net in NETS]


_MTCNN = models_by_name(mtcnn_models())


def check_batch(net: str, batch: Any) -> np.ndarray:
    """An MTCNN batch as contiguous float32, or BackendError when it breaks the protocol above."""
    return check_input(_MTCNN, net, batch)


class Runner(Protocol):
    """The one interface of every backend: `run(model, batch)` -> outputs (see above); `close()`."""

    name: str

    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def close(self) -> None: ...


Backend = Runner  # the name the detector's code has always used


def create_backend(kind: str, model_dir: str | Path | None = None, **options: Any) -> Backend:
    """The MTCNN runner by name, loaded from `model_dir` (default `MODEL_DIR`).

    "onnxruntime": options `threads` (intra-op threads, default 2), `pnet_threads` (P-Net's own, 0 = threads).
    "tensorrt": TensorRT behind the watchdog (options: see tensorrt.create_tensorrt_backend and
    tensorrt.options_from_config); "auto": TensorRT when it imports and a GPU is present, else onnxruntime.
    Raises BackendError for an unknown kind or a backend that cannot start.
    """
    pnet_threads = int(options.pop("pnet_threads", 0))  # ONNX Runtime only (see mtcnn_models)
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

        return OnnxRuntimeBackend(model_dir, threads=int(options.get("threads", 2)), pnet_threads=pnet_threads)
    raise BackendError(f"unknown detector backend {kind!r}; expected one of: auto, onnxruntime, tensorrt")
