"""The arithmetic of MTCNN's engine profiles: which input shapes each network's TensorRT engine is built for.

- P-Net: ONE engine with an optimisation profile covering every pyramid scale that the configured input
  size (`[source] width/height`, after `[detector] max_input_side`) and `min_face_size`/`scale_factor`
  produce: min = the smallest P-Net input of the pyramid, max = opt = the largest (`pnet_profile`):
  TensorRT tunes its kernels for opt, and the largest scale is about half of all P-Net work. No
  per-scale engines, no rebuild per scale. A frame of another size whose pyramid leaves the profile is
  run on the CPU runner (`overflow`) and logged, never a rebuild at run time.
- R-Net and O-Net: dynamic batch 1..`max_batch` (opt = a typical candidate count); larger candidate
  sets are split into chunks of `max_batch`.

Pure: runs (and is tested) without TensorRT. `options_from_config` turns the config into the detector
runner's options (`create_mtcnn_runner`), `config_engine_specs` into the engine specs it builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Config
from agent.vision.backends import CROP_SIZE, MODEL_DIR, NETS
from agent.vision.backends.engine_cache import EngineSpec

INPUT_NAME = "input"  # the MTCNN graphs' input
DEFAULT_INPUT_SIZE = (720, 1280)  # (height, width) the P-Net profile is built for unless told
# opt batch of the R-/O-Net profiles: typical candidate counts for a frame with a few faces (P-Net
# survivors after NMS; R-Net survivors); the engine is tuned for it and runs any batch up to max_batch
TYPICAL_BATCH = {"rnet": 64, "onet": 16}


def pnet_profile(height: int, width: int, min_face_size: int = 20, scale_factor: float = 0.709,
                 max_input_side: int = 0) -> list[list[int]]:
    """[min, opt, max] NCHW shapes covering every P-Net input of the pyramid of a height x width frame."""
    return pnet_profile_for([(height, width)], min_face_size, scale_factor, max_input_side)


def pnet_profile_for(sizes: Sequence[tuple[int, int]], min_face_size: int = 20, scale_factor: float = 0.709,
                     max_input_side: int = 0) -> list[list[int]]:
    """[min, opt, max] NCHW shapes covering every P-Net input of the pyramids of frames of every
    (height, width) in `sizes` (one per camera): min from the smallest scale of any camera (a 480p camera
    beside a 1080p one must not run its smallest scales on the CPU), max from the largest."""
    from agent.vision.mtcnn import pnet_input_shapes

    sizes = list(dict.fromkeys((int(h), int(w)) for h, w in sizes))
    if not sizes:
        raise ValueError("pnet_profile_for: no frame size")
    shapes: list[tuple[int, int]] = []
    for height, width in sizes:
        found = pnet_input_shapes(height, width, min_face_size, scale_factor, max_input_side)
        if not found:
            raise ValueError(f"a {width}x{height} frame has no pyramid scale for min_face_size {min_face_size}")
        shapes += found
    hs, ws = [h for h, _ in shapes], [w for _, w in shapes]
    # opt = the largest scale (of the largest frame): TensorRT picks the kernels fastest at opt, and the
    # first (largest) scale is about half of all P-Net work (each further scale has scale_factor^2 ~ 0.5
    # times the pixels)
    opt_h, opt_w = max(shapes, key=lambda hw: hw[0] * hw[1])
    return [[1, 3, min(hs), min(ws)], [1, 3, opt_h, opt_w], [1, 3, max(hs), max(ws)]]


def input_sizes(input_size: tuple[int, int] | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """One (height, width) or a list of them (one per camera) as a list of (height, width)."""
    if len(input_size) == 2 and all(isinstance(d, int | np.integer) for d in input_size):
        return [(int(input_size[0]), int(input_size[1]))]  # type: ignore[arg-type]
    return [(int(h), int(w)) for h, w in input_size]  # type: ignore[misc]


def batch_profile(net: str, max_batch: int) -> list[list[int]]:
    """[min, opt, max] shapes of R-Net/O-Net: batch 1..max_batch of size x size crops."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    s = CROP_SIZE[net]
    return [[1, 3, s, s], [min(TYPICAL_BATCH[net], max_batch), 3, s, s], [max_batch, 3, s, s]]


def engine_specs(model_dir: Path, input_size: tuple[int, int] | Sequence[tuple[int, int]],
                 min_face_size: int = 20, scale_factor: float = 0.709, max_input_side: int = 0,
                 precision: str = "fp16", max_batch: int = 128, workspace_mb: int = 256) -> dict[str, EngineSpec]:
    """The three engine specs for one configuration (input_size = (height, width) of the frames, or a
    list of them: one per camera, and the P-Net profile covers them all)."""
    profiles = {"pnet": pnet_profile_for(input_sizes(input_size), min_face_size, scale_factor, max_input_side),
                "rnet": batch_profile("rnet", max_batch), "onet": batch_profile("onet", max_batch)}
    return {net: EngineSpec(label=f"mtcnn-{net}", onnx_path=Path(model_dir) / f"{net}.onnx",
                            precision=precision, profile={INPUT_NAME: profiles[net]},
                            options={"workspace_mb": int(workspace_mb)})
            for net in NETS}


def options_from_config(cfg: Config) -> dict[str, Any]:
    """create_mtcnn_runner options for the configured detector."""
    d = cfg.detector
    # one P-Net profile covers every camera: the pyramid scales of each camera's frame size (largest first),
    # with the smallest faces any camera looks for
    cameras = cfg.cameras()
    sizes = sorted({(int(c.source.height), int(c.source.width)) for c in cameras}, key=lambda hw: -hw[0] * hw[1])
    input_size = sizes[0] if len(sizes) == 1 else sizes
    min_face_size = min(c.detector.min_face_size for c in cameras)
    return {"threads": d.threads, "pnet_threads": 1 if d.pyramid_workers > 1 else 0,
            "engines_dir": cfg.path("engines"),
            "input_size": input_size, "min_face_size": min_face_size,
            "scale_factor": d.scale_factor, "max_input_side": d.max_input_side, "precision": d.precision,
            "max_batch": d.max_batch, "workspace_mb": d.workspace_mb,
            "inference_timeout": d.inference_timeout}


def config_engine_specs(cfg: Config, model_dir: str | Path | None = None) -> dict[str, EngineSpec]:
    """The MTCNN engine specs the configured detector uses."""
    o = options_from_config(cfg)
    return engine_specs(Path(model_dir) if model_dir is not None else MODEL_DIR, o["input_size"],
                        o["min_face_size"], o["scale_factor"], o["max_input_side"], o["precision"],
                        o["max_batch"], o["workspace_mb"])
