"""`face-agent doctor`: what this machine offers the agent, and which detector backend `auto` picks and why.

Reports Python, numpy, ONNX Runtime (version and execution providers), whether `tensorrt` (of a supported
version: JetPack 6, TensorRT 8.6 or 10.x) and `pycuda` import, the GPU found, dlib, OpenCV and whether it
was built with GStreamer, the model files (with sha256) and the engines folder. Exit code 1, with one
line per problem, when something the configuration needs is missing: dlib (every face is aligned with
it), a model file, OpenCV with GStreamer for a `csi://` or `gst:` source, or TensorRT for
`backend = "tensorrt"` of the detector or the embedder.

`doctor --gpu` runs the GPU self-test instead (agent/vision/gpu_selftest.py; its healthy output on an Orin
Nano is in docs/tensorrt.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

from agent import __version__
from agent.commands._common import config_of
from agent.config import Config
from agent.files import file_sha256
from agent.logsafe import redact


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, ONNX Runtime, TensorRT/GPU, dlib and model files")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--gpu", action="store_true",
                   help="the GPU self-test instead (a few minutes): versions, engines loaded or built, TensorRT "
                        "against ONNX Runtime at every shape the configuration uses, speed, a forced recoverable "
                        "failure through the watchdog, memory given back; one line per check, exit 1 on a failure")
    p.add_argument("--runs", type=int, default=100, help="--gpu: timed runs per network (default 100)")
    p.set_defaults(func=run)


def _module(name: str) -> tuple[Any, str]:
    """(module or None, version or the import error)."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        return None, f"not available ({type(exc).__name__}: {exc})"
    return module, str(getattr(module, "__version__", getattr(module, "VERSION", "?")))


def _opencv() -> tuple[str, bool | None]:
    """("<version> (<path>)", built with GStreamer?) of the cv2 this interpreter imports."""
    cv2, version = _module("cv2")
    if cv2 is None:
        return version, None
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return f"{version} ({getattr(cv2, '__file__', '?')})", bool(match and match.group(1).upper() == "YES")


def _source_needs_gstreamer(uri: str) -> bool:
    """True for a Jetson CSI camera (csi://N) or a GStreamer pipeline (gst:...)."""
    from agent.sources import SourceError, parse_uri

    try:
        kind, _ = parse_uri(uri)
    except SourceError:  # a missing file or a malformed URI: `config check` and `run` say so
        return False
    return kind in ("csi", "gst")


def _jetson_model() -> str:
    try:
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace")
    except OSError:
        return ""


def _gpu() -> dict[str, Any]:
    cuda, version = _module("pycuda.driver")
    if cuda is None:
        return {"found": False, "detail": f"pycuda {version}"}
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        return {"found": False, "detail": f"CUDA cannot be initialised: {exc}"}
    if count < 1:
        return {"found": False, "detail": "no CUDA device"}
    dev = cuda.Device(0)
    major, minor = dev.compute_capability()
    return {"found": True, "name": dev.name(), "compute_capability": f"{major}.{minor}",
            "memory_mb": dev.total_memory() // (1 << 20), "devices": count,
            "driver_version": cuda.get_driver_version()}


def _model_files(cfg: Config) -> tuple[list[dict[str, Any]], list[str]]:
    from agent.vision.backends import MODEL_DIR, NETS

    files: list[dict[str, Any]] = []
    problems: list[str] = []

    def add(role: str, path: Path | None, error: str = "") -> None:
        if path is not None and path.is_file():
            files.append({"role": role, "path": str(path), "bytes": path.stat().st_size,
                          "sha256": file_sha256(path)})
        else:
            problems.append(f"{role}: {error or f'{path} not found'}")
            files.append({"role": role, "path": str(path) if path else "", "missing": error or "not found"})

    for net in NETS:
        add(f"MTCNN {net}", MODEL_DIR / f"{net}.onnx")
    try:
        from agent.vision.embed import dlib_model_path, resnet_dat_path

        add("dlib 5-point shape predictor", dlib_model_path("shape_predictor_5_face_landmarks.dat"))
        add("dlib ResNet", resnet_dat_path(cfg.embedding, cfg.base_dir))
    except Exception as exc:  # ModelFileError: package missing or [embedding] model wrong
        add("dlib models", None, str(exc))
    converted = sorted(cfg.path("engines").glob("*.onnx")) if cfg.path("engines").is_dir() else []
    for path in converted:
        files.append({"role": "converted ResNet (engines folder)", "path": str(path),
                      "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return files, problems


def _engines(cfg: Config) -> dict[str, Any]:
    from agent.vision.backends.mtcnn_profile import config_engine_specs
    from agent.vision.backends.tensorrt import engine_cache

    folder = cfg.path("engines")
    entries = engine_cache(folder).entries()
    report: dict[str, Any] = {"folder": str(folder), "engines": len(entries),
                              "broken": sum(not e.ok for e in entries)}
    try:
        report["pnet_profile"] = config_engine_specs(cfg)["pnet"].profile["input"]
    except ValueError as exc:
        report["pnet_profile"] = f"invalid: {exc}"
    return report


def collect(cfg: Config) -> tuple[dict[str, Any], list[str]]:
    """The report and the list of problems that make the configured setup unusable."""
    from agent.vision.backends.trt_probe import SUPPORTED_PLATFORM, auto_kind, check_tensorrt_version, tensorrt_status

    problems: list[str] = []
    report: dict[str, Any] = {
        "face_agent": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
    }
    if _jetson_model():
        report["jetson"] = _jetson_model()
    _, report["numpy"] = _module("numpy")
    ort, version = _module("onnxruntime")
    report["onnxruntime"] = version
    report["onnxruntime_providers"] = ort.get_available_providers() if ort is not None else []
    if ort is None:
        problems.append(f"onnxruntime {version}")
    report["gpu_platform"] = SUPPORTED_PLATFORM
    trt, version = _module("tensorrt")
    unsupported = check_tensorrt_version(version) if trt is not None else ""
    report["tensorrt"] = f"{version} (NOT SUPPORTED: {unsupported})" if unsupported else version
    _, report["pycuda"] = _module("pycuda")
    report["gpu"] = _gpu()
    dlib, version = _module("dlib")
    report["dlib"] = version if dlib is None else f"{version} (CUDA: {bool(getattr(dlib, 'DLIB_USE_CUDA', False))})"
    if dlib is None:
        problems.append(f"dlib is {version}: it aligns every face (and runs the classifier), nothing works "
                        "without it. x86-64: pip install dlib-bin; aarch64 (Jetson): deploy/install.sh builds "
                        "it from source (pip install dlib, see deploy/README.md)")
    report["opencv"], gstreamer = _opencv()
    report["opencv_gstreamer"] = gstreamer
    if gstreamer is None:
        problems.append(f"OpenCV (cv2) is {report['opencv']}")
    elif not gstreamer:
        for camera in cfg.cameras():
            if not _source_needs_gstreamer(camera.source.uri):
                continue
            where = f"camera {camera.name!r}" if cfg.sources else "[source]"
            problems.append(f"{where} uri {redact(camera.source.uri)!r} needs OpenCV built with GStreamer, but this "
                            f"OpenCV ({report['opencv']}) has none (pip's opencv-python wheels never do): on a Jetson "
                            "use JetPack's OpenCV from a venv made with --system-site-packages, without pip's "
                            "opencv-python-headless (deploy/install.sh does this)")
    report["models"], model_problems = _model_files(cfg)
    problems += model_problems

    kind, why = auto_kind()
    report["detector"] = {"configured": cfg.detector.backend, "auto_picks": kind, "why": why,
                          "precision": cfg.detector.precision,
                          "inference_timeout": cfg.detector.inference_timeout}
    usable, trt_why = tensorrt_status()
    if cfg.detector.backend == "tensorrt" and not usable:
        problems.append(f"[detector] backend = \"tensorrt\" but {trt_why}")
    report["embedder"] = {"configured": cfg.embedding.backend, "precision": cfg.embedding.precision,
                          "batch_size": cfg.embedding.batch_size,
                          "runs_on": ("tensorrt" if usable else "onnxruntime (degraded: TensorRT not usable)")
                          if cfg.embedding.backend == "tensorrt" else cfg.embedding.backend}
    if cfg.embedding.backend == "tensorrt" and not usable:
        problems.append(f"[embedding] backend = \"tensorrt\" but {trt_why}: the ResNet would run on the CPU")
    report["engines"] = _engines(cfg)
    return report, problems


def _print(report: dict[str, Any], problems: list[str]) -> None:
    width = 22

    def line(label: str, value: Any) -> None:
        print(f"{label:<{width}} {value}")

    for key in ("face_agent", "python", "platform", "jetson", "numpy", "onnxruntime"):
        if key in report:
            line(key.replace("_", "-"), report[key])
    line("  providers", ", ".join(report["onnxruntime_providers"]) or "-")
    line("gpu platform", f"supported: {report['gpu_platform']}")
    line("tensorrt", report["tensorrt"])
    line("pycuda", report["pycuda"])
    gpu = report["gpu"]
    line("gpu", f"{gpu['name']} (compute {gpu['compute_capability']}, {gpu['memory_mb']} MB)"
         if gpu["found"] else f"none ({gpu['detail']})")
    line("dlib", report["dlib"])
    gst = {True: "yes", False: "no", None: "-"}[report["opencv_gstreamer"]]
    line("opencv", f"{report['opencv']}, GStreamer: {gst}")
    print("models:")
    for m in report["models"]:
        state = f"sha256 {m['sha256']}  {m['bytes']} bytes" if "sha256" in m else f"MISSING: {m['missing']}"
        print(f"  {m['role']:<34} {m['path']}\n  {'':<34} {state}")
    d = report["detector"]
    line("detector backend", f"{d['configured']} (auto picks {d['auto_picks']}: {d['why']})")
    m = report["embedder"]
    line("embedder backend", f"{m['configured']} (runs on {m['runs_on']}; precision {m['precision']}, "
                             f"batch {m['batch_size']})")
    e = report["engines"]
    line("engines folder", f"{e['folder']}: {e['engines']} engine(s), {e['broken']} broken")
    line("  P-Net profile", e["pnet_profile"])
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
    else:
        print("\nno problems found")


def run_gpu(cfg: Config, as_json: bool, runs: int) -> int:
    """`doctor --gpu`: agent/vision/gpu_selftest.py, one line per check as it finishes (or one JSON
    document); exit 1 when a check failed."""
    from agent.vision.gpu_selftest import gpu_selftest

    if runs < 1:
        print("face-agent: --runs must be >= 1", file=sys.stderr)
        return 2

    def emit(check: Any) -> None:
        if not as_json:
            print(check.line(), flush=True)

    checks = gpu_selftest(cfg, runs=runs, emit=emit)
    failed = [c for c in checks if c.failed]
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [{"name": c.name, "status": c.status, "detail": c.detail,
                                                        **c.data} for c in checks]}, indent=2, default=str))
    else:
        print(f"\n{len(failed)} check(s) failed" if failed else "\nGPU self-test passed")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    if getattr(args, "gpu", False):
        return run_gpu(cfg, args.json, args.runs)
    report, problems = collect(cfg)
    if args.json:
        print(json.dumps({**report, "problems": problems}, indent=2, default=str))
    else:
        _print(report, problems)
    return 1 if problems else 0
