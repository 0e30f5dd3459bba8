"""Models on ONNX Runtime (CPU): the reference runner, used wherever TensorRT is not available."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.backends import Model, RunnerError, check_input, models_by_name, mtcnn_models

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxRuntimeRunner:
    """One ONNX Runtime session per model, `threads` intra-op threads each."""

    name = "onnxruntime"

    def __init__(self, models: Iterable[Model], threads: int = 2, what: str = "models"):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise RunnerError(f"onnxruntime is not installed ({exc})") from None
        if threads < 1:
            raise RunnerError(f"threads must be >= 1, got {threads}")
        self.models = models_by_name(models)
        self.threads = int(threads)
        self._sessions = {}
        for model in self.models.values():
            self._sessions[model.name] = self._session(ort, model)
        paths = [m.path for m in self.models.values()]
        log.info("%s on ONNX Runtime %s (CPU, %d threads) from %s", what, ort.__version__, self.threads,
                 paths[0] if len(paths) == 1 else ", ".join(sorted({str(p.parent) for p in paths})))

    def _session(self, ort: Any, model: Model) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = model.threads or self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; our own log says what was loaded
        if not model.spin:
            # idle ORT threads sleep instead of spinning: between MTCNN's network calls the detector resizes
            # and crops in Python, and the agent runs embedding/tracking threads on the same (2) cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if model.varying_shapes:
            # P-Net sees a different input shape at every pyramid scale and R/O-Net a different batch size
            # every frame: ORT's arena and memory-pattern planning keep a buffer per shape seen and grow
            # without bound (measured: +200 MiB over one 275-frame clip); plain allocations cost nothing
            # measurable here
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
        path = model.path
        if not path.is_file():
            raise RunnerError(f"{model.label} {path} not found" + (f" ({model.hint})" if model.hint else ""))
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise RunnerError(f"{model.label} {path} cannot be loaded: {_first_line(exc)}") from None
        inputs = [i.name for i in session.get_inputs()]
        outputs = tuple(o.name for o in session.get_outputs())
        if outputs != model.outputs or inputs != [model.input]:
            raise RunnerError(f"{model.label} {path} has inputs {inputs} and outputs {list(outputs)}; "
                              f"expected [{model.input!r}] and {list(model.outputs)}")
        return session

    def metadata(self, name: str) -> dict[str, str]:
        """The custom metadata stored in a model's ONNX file."""
        return dict(self._sessions[name].get_modelmeta().custom_metadata_map)

    def run(self, net: str, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        session = self._sessions.get(net)
        if session is None and net in self.models:
            raise RunnerError("backend is closed")
        batch = check_input(self.models, net, batch)
        model = self.models[net]
        try:
            return tuple(session.run(None, {model.input: batch}))
        except Exception as exc:
            raise RunnerError(f"{net} inference failed: {_first_line(exc)}") from None

    def close(self) -> None:
        self._sessions.clear()

    def __repr__(self) -> str:
        return f"OnnxRuntimeRunner(models={list(self.models)}, threads={self.threads})"


class OnnxRuntimeMtcnnRunner(OnnxRuntimeRunner):
    """MTCNN on ONNX Runtime: pnet, rnet and onet loaded from `model_dir`/{pnet,rnet,onet}.onnx.

    `run` may be called from several threads at once (ONNX Runtime sessions are thread-safe), which the
    detector uses to run pyramid scales in parallel (`concurrent`); `pnet_threads` > 0 sets P-Net's own
    intra-op thread count (1 when scales run in parallel: each call then keeps to one core)."""

    concurrent = True

    def __init__(self, model_dir: str | Path | None = None, threads: int = 2, pnet_threads: int = 0):
        from agent.vision.backends import MODEL_DIR

        if pnet_threads < 0:
            raise RunnerError(f"pnet_threads must be >= 0, got {pnet_threads}")
        self.model_dir = Path(model_dir) if model_dir is not None else MODEL_DIR
        super().__init__(mtcnn_models(self.model_dir, pnet_threads), threads, what="MTCNN")

    def __repr__(self) -> str:
        return f"OnnxRuntimeMtcnnRunner(model_dir={str(self.model_dir)!r}, threads={self.threads})"


def mtcnn_runner(model_dir: str | Path | None = None, *, threads: int = 2, pnet_threads: int = 0,
                 **_options: Any) -> OnnxRuntimeMtcnnRunner:
    """The registry's MTCNN factory (backends.create_mtcnn_runner); the other options are TensorRT's."""
    return OnnxRuntimeMtcnnRunner(model_dir, threads=int(threads), pnet_threads=int(pnet_threads))
