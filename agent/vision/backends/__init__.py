"""One runner for every network here: "run this ONNX model on this batch", on ONNX Runtime or TensorRT.

A runner is created for a set of `Model`s (what `run` calls them, the ONNX file, input and output names,
the input shape) and answers `run(model, batch)`:

- `model` is a model's name;
- `batch` is float32 NCHW, checked against the model (`Model.check`) before it runs;
- the result is a tuple of float32 arrays, one per output, in the model's `outputs` order.

Runners (each one small class with `name`, `run`, `close`: the `Runner` Protocol):

- `onnxruntime.OnnxRuntimeRunner(models, threads)`: the CPU, everywhere;
- `tensorrt.TensorRTRunner(models, specs, ...)`: one TensorRT engine per model from the engine cache
  (`engine_cache.py`), with the CPU runner for inputs outside an engine's profile (`trt_probe.py`: what
  TensorRT and GPU the machine has; `mtcnn_profile.py`: the shapes MTCNN's engines are built for);
- `watchdog.GuardedRunner(primary, fallback, ...)`: a runner behind a timeout, one background rebuild and
  the CPU fallback; `tensorrt.create_tensorrt_runner` puts TensorRT behind it the way the service runs.

`RUNNERS` registers them by the name the config gives them (`[detector] backend`, `[embedding] backend`):
the config's choices (`DETECTOR_BACKENDS`, `EMBEDDING_BACKENDS`) and `create_mtcnn_runner` are derived
from it. A runner module registered for the network "mtcnn" defines `mtcnn_runner(model_dir, **options)`;
one registered for "resnet" has an embedder in agent/vision/embed.py (`EMBEDDERS`, checked by a test).

Two networks use them:

- MTCNN (agent/vision/mtcnn.py): models "pnet", "rnet", "onet" (`mtcnn_models`), created by
  `create_mtcnn_runner` from `[detector] backend`. Their batches are normalised ((pixel - 127.5) / 128, RGB
  channel order as MTCNN was trained); P-Net takes any H, W >= 12, R-Net 24x24, O-Net 48x48, any batch
  size; outputs: pnet (prob (N, 2, H', W'), reg (N, 4, H', W')); rnet (prob (N, 2), reg (N, 4));
  onet (prob (N, 2), reg (N, 4), landmarks (N, 10));
- dlib's ResNet converted to ONNX (agent/vision/embed.py): model "resnet", (N, 3, 150, 150) -> (N, 128),
  created from `[embedding] backend`.
"""

from __future__ import annotations

import importlib
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


class RunnerError(RuntimeError):
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
        """The batch as contiguous float32, or RunnerError when it is not what this model takes."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != self.channels or batch.shape[0] == 0:
            raise RunnerError(f"{self.name}: batch must be float32 (N, {self.channels}, H, W) with N >= 1, "
                              f"got shape {batch.shape}")
        if self.size is not None and batch.shape[2:] != (self.size, self.size):
            raise RunnerError(f"{self.name}: input must be {self.size}x{self.size}, "
                              f"got {batch.shape[2]}x{batch.shape[3]}")
        if self.size is None and min(batch.shape[2:]) < self.min_side:
            raise RunnerError(f"{self.name}: input must be at least {self.min_side}x{self.min_side}, "
                              f"got {batch.shape[2]}x{batch.shape[3]}")
        return batch


def models_by_name(models: Iterable[Model]) -> dict[str, Model]:
    found: dict[str, Model] = {}
    for model in models:
        if model.name in found:
            raise RunnerError(f"two models named {model.name!r}")
        found[model.name] = model
    if not found:
        raise RunnerError("a runner needs at least one model")
    return found


def check_input(models: Mapping[str, Model], name: str, batch: Any) -> np.ndarray:
    """`models[name].check(batch)`, or RunnerError for a name that is not one of the models."""
    model = models.get(name)
    if model is None:
        raise RunnerError(f"unknown network {name!r}; expected one of {tuple(models)}")
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
    """An MTCNN batch as contiguous float32, or RunnerError when it breaks the protocol above."""
    return check_input(_MTCNN, net, batch)


class Runner(Protocol):
    """The one interface of every backend: `run(model, batch)` -> outputs (see above); `close()`."""

    name: str

    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunnerKind:
    """One Runner implementation, registered under the name the config gives it."""

    name: str  # the value of `[detector] backend` / `[embedding] backend`
    module: str  # the module implementing it (imported only when it is used)
    networks: tuple[str, ...]  # "mtcnn": it defines mtcnn_runner(model_dir, **options); "resnet": embed.py
    about: str  # one line for the docs and `face-agent doctor`

    def mtcnn_runner(self) -> Callable[..., Runner]:
        """The module's `mtcnn_runner(model_dir, **options) -> Runner`."""
        return importlib.import_module(self.module).mtcnn_runner


RUNNERS: dict[str, RunnerKind] = {kind.name: kind for kind in (
    RunnerKind("onnxruntime", "agent.vision.backends.onnxruntime", ("mtcnn", "resnet"),
               "the CPU (ONNX Runtime), everywhere"),
    RunnerKind("tensorrt", "agent.vision.backends.tensorrt", ("mtcnn", "resnet"),
               "NVIDIA GPUs: TensorRT engines from the engine cache behind the watchdog, the CPU as fallback"),
)}
AUTO = "auto"  # [detector] backend: TensorRT when it imports and a GPU is present, else onnxruntime
DLIB = "dlib"  # [embedding] backend: dlib's own ResNet (the reference), not a runner


def runner_names(network: str) -> tuple[str, ...]:
    """The registered runners that run `network` ("mtcnn" or "resnet")."""
    return tuple(name for name, kind in RUNNERS.items() if network in kind.networks)


DETECTOR_BACKENDS = (AUTO, *runner_names("mtcnn"))  # the choices of [detector] backend
EMBEDDING_BACKENDS = (DLIB, *runner_names("resnet"))  # the choices of [embedding] backend


def create_mtcnn_runner(kind: str, model_dir: str | Path | None = None, **options: Any) -> Runner:
    """MTCNN's runner by its registered name (or "auto"), loaded from `model_dir` (default `MODEL_DIR`).

    "onnxruntime": options `threads` (intra-op threads, default 2), `pnet_threads` (P-Net's own, 0 = threads).
    "tensorrt": TensorRT behind the watchdog (options: see tensorrt.create_tensorrt_mtcnn_runner and
    mtcnn_profile.options_from_config); "auto": TensorRT when it imports and a GPU is present, else onnxruntime.
    Raises RunnerError for an unknown kind or a runner that cannot start.
    """
    if kind == AUTO:
        from agent.vision.backends.trt_probe import auto_kind

        kind, why = auto_kind()
        # a CPU machine is not news on every command: `face-agent doctor` says why TensorRT is not used
        logging.getLogger(__name__).log(logging.INFO if kind == "tensorrt" else logging.DEBUG,
                                        "detector backend auto -> %s: %s", kind, why)
    if kind not in runner_names("mtcnn"):
        raise RunnerError(f"unknown detector backend {kind!r}; expected one of: {', '.join(DETECTOR_BACKENDS)}")
    return RUNNERS[kind].mtcnn_runner()(model_dir, **options)
