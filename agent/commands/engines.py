"""`face-agent engines build|list|clean`: the TensorRT engine cache ([paths] engines).

build: builds (or checks) the MTCNN engines for the current [detector]/[source] settings ahead of time,
  e.g. in the install step, so the service does not spend minutes building at its first start; plus the
  dlib ResNet engine when `[embedding] backend = "tensorrt"`. Fails clearly where TensorRT is missing.
list: every engine with its record (what it was built for) and whether it is intact and current.
clean: removes stale engines (broken, superseded by the current settings, other TensorRT/GPU) and
  leftovers of interrupted writes; --all empties the cache. Converted ONNX files are never touched.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agent.commands._common import action, actions_of, config_of, fail
from agent.config import Config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engines", help="build, list or clean the TensorRT engine cache")
    actions = actions_of(p, "engines_action")
    action(actions, "build", run_build, help="build the TensorRT engines for the current config now")
    listing = action(actions, "list", run_list, help="list cached engines and what they were built for")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    clean = action(actions, "clean", run_clean, help="remove stale engines (--all: every engine)")
    clean.add_argument("--all", action="store_true", dest="remove_all", help="remove every engine")



def _cache(cfg: Config) -> Any:
    from agent.vision.backends.tensorrt import engine_cache

    return engine_cache(cfg.path("engines"))


def run_build(args: argparse.Namespace) -> int:
    from agent.vision.backends import RunnerError
    from agent.vision.backends.engine_cache import EngineCacheError
    from agent.vision.backends.mtcnn_profile import config_engine_specs, options_from_config
    from agent.vision.backends.tensorrt import TensorRTMtcnnRunner
    from agent.vision.backends.trt_probe import tensorrt_status

    cfg = config_of(args)
    ok, why = tensorrt_status()
    if not ok:
        return fail(f"cannot build TensorRT engines: {why}")
    cache = _cache(cfg)
    try:
        specs = config_engine_specs(cfg)
    except ValueError as exc:
        return fail(f"invalid detector settings: {exc}")
    start = time.monotonic()
    try:
        for spec in specs.values():
            cache.load_or_build(spec)
            print(f"{spec.label}: {cache.paths(spec)[0]}")
        built, cached = cache.builds, cache.loads
        # load them once the way the service does (deserialize, allocate): proves they run here
        options = {k: v for k, v in options_from_config(cfg).items()
                   if k not in ("threads", "pnet_threads", "inference_timeout")}
        TensorRTMtcnnRunner(cache=cache, **options).close()
    except (EngineCacheError, RunnerError, OSError) as exc:
        return fail(str(exc))
    print(f"MTCNN engines ready ({built} built, {cached} already cached; all three load) "
          f"in {time.monotonic() - start:.1f} s: {why}")
    if cfg.embedding.backend == "tensorrt":
        from agent.vision.embed import TensorRTEmbedder, converted_model

        try:
            # without the watchdog: a failing engine is an error here, not a quiet fall-back to the CPU
            onnx_path = converted_model(cfg.embedding, cfg.path("engines"), cfg.base_dir)
            TensorRTEmbedder(onnx_path, cfg.path("engines"), batch_size=cfg.embedding.batch_size,
                             precision=cfg.embedding.precision, cache=cache, guard=False).close()
        except Exception as exc:  # its own error types; the message says what is wrong
            return fail(f"embedding engine: {exc}")
        print("embedding engine ready")
    return 0


def _row(entry: Any, current: set) -> dict[str, Any]:
    key = (entry.record or {}).get("key") or {}
    return {
        "file": entry.engine_path.name,
        "label": key.get("label", "?"),
        "precision": key.get("precision", "?"),
        "tensorrt": key.get("tensorrt_version", "?"),
        "gpu": f"{key.get('gpu_name', '?')} ({key.get('compute_capability', '?')}"
               + (f", {key['multiprocessors']} SMs, {key.get('memory_gb', '?')} GB" if key.get("multiprocessors")
                  else "") + ")",
        "profile": key.get("profile", {}),
        "onnx": f"{key.get('onnx_file', '?')} {str(key.get('onnx_sha256', ''))[:12]}",
        "bytes": (entry.record or {}).get("engine_size"),
        "built_at": (entry.record or {}).get("built_at", ""),
        "build_seconds": (entry.record or {}).get("build_seconds"),
        "status": entry.problem or ("current" if entry.engine_path in current else "ok"),
    }


def _current_paths(cfg: Config, cache: Any) -> set:
    """Engine files the current config would load, when this machine can tell (TensorRT present)."""
    from agent.vision.backends.mtcnn_profile import config_engine_specs

    try:
        return {cache.paths(spec)[0] for spec in config_engine_specs(cfg).values()}
    except Exception:  # no TensorRT / GPU here, or invalid settings: cannot name the current engines
        return set()


def run_list(args: argparse.Namespace) -> int:
    from agent.vision.dlib_resnet import list_conversions

    cfg = config_of(args)
    cache = _cache(cfg)
    rows = [_row(e, _current_paths(cfg, cache)) for e in cache.entries()]
    temporary = [str(p) for p in cache.temporary_files()]
    onnx = list_conversions(cache.folder)
    if args.json:
        print(json.dumps({"folder": str(cache.folder), "engines": rows, "onnx": onnx,
                          "temporary_files": temporary}, indent=2))
        return 0
    for o in onnx:
        print(f"{o['file']}\n  the dlib ResNet converted to ONNX (the embedding model)\n"
              f"  from {o['dat']}\n  {o['bytes']} bytes  [{o['status']}]")
    if not rows:
        print(f"no TensorRT engines in {cache.folder}")
    for r in rows:
        print(f"{r['file']}\n  {r['label']} {r['precision']}  TensorRT {r['tensorrt']}  GPU {r['gpu']}\n"
              f"  onnx {r['onnx']}  profile {json.dumps(r['profile'])}\n"
              f"  {r['bytes']} bytes, built {r['built_at']} in {r['build_seconds']} s  [{r['status']}]")
    for t in temporary:
        print(f"{t}  [left by an interrupted write; `face-agent engines clean` removes it]")
    return 0


def run_clean(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    cache = _cache(cfg)
    removed = cache.clean(remove_all=args.remove_all, keep=_current_paths(cfg, cache))
    for path in removed:
        print(f"removed {path}")
    left = len(cache.entries())
    print(f"{len(removed)} file(s) removed, {left} engine(s) left in {cache.folder}")
    return 0
