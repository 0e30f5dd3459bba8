"""MTCNN networks on ONNX Runtime (CPU): the reference backend, used wherever TensorRT is not available."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from agent.vision.backends import NETS, BackendError, check_batch

log = logging.getLogger(__name__)

# output names of the graphs written by tools/build_mtcnn_onnx.py, in the order `run` returns them
OUTPUTS = {"pnet": ("prob", "reg"), "rnet": ("prob", "reg"), "onet": ("prob", "reg", "landmarks")}


class OnnxRuntimeBackend:
    """One ONNX Runtime session per network, loaded from `model_dir`/{pnet,rnet,onet}.onnx."""

    name = "onnxruntime"

    def __init__(self, model_dir: str | Path | None = None, threads: int = 2):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise BackendError(f"onnxruntime is not installed ({exc})") from None
        from agent.vision.backends import MODEL_DIR

        self.model_dir = Path(model_dir) if model_dir is not None else MODEL_DIR
        if threads < 1:
            raise BackendError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; our own log says what was loaded
        # idle ORT threads sleep instead of spinning: between network calls the detector resizes and crops in
        # Python, and the agent runs embedding/tracking threads on the same (2) cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # P-Net sees a different input shape at every pyramid scale and R/O-Net a different batch size every
        # frame: ORT's arena and memory-pattern planning keep a buffer per shape seen and grow without
        # bound (measured: +200 MiB over one 275-frame clip); plain allocations cost nothing measurable here
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        self._sessions = {}
        for net in NETS:
            path = self.model_dir / f"{net}.onnx"
            if not path.is_file():
                raise BackendError(f"MTCNN model {path} not found (regenerate with tools/build_mtcnn_onnx.py)")
            try:
                session = ort.InferenceSession(str(path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types for bad files
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BackendError(f"MTCNN model {path} cannot be loaded: {first_line}") from None
            outputs = tuple(o.name for o in session.get_outputs())
            if outputs != OUTPUTS[net] or [i.name for i in session.get_inputs()] != ["input"]:
                raise BackendError(f"MTCNN model {path} has inputs {[i.name for i in session.get_inputs()]} "
                                   f"and outputs {list(outputs)}; expected ['input'] and {list(OUTPUTS[net])}")
            self._sessions[net] = session
        log.info("MTCNN on ONNX Runtime %s (CPU, %d threads) from %s", ort.__version__, self.threads,
                 self.model_dir)

    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        session = self._sessions.get(net)
        if session is None:
            if net in NETS:
                raise BackendError("backend is closed")
            raise BackendError(f"unknown network {net!r}; expected one of {NETS}")
        batch = check_batch(net, batch)
        try:
            return tuple(session.run(None, {"input": batch}))
        except Exception as exc:
            raise BackendError(f"{net} inference failed: {str(exc).strip().splitlines()[0]}") from None

    def close(self) -> None:
        self._sessions.clear()

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend(model_dir={str(self.model_dir)!r}, threads={self.threads})"
