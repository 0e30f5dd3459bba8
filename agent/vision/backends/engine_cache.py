"""A folder of TensorRT engines that are only ever loaded for the exact setup they were built for.

A TensorRT engine is specific to the ONNX graph, the TensorRT version, the GPU (name, compute
capability, number of streaming multiprocessors and memory size: Orin modules all report compute
capability 8.7), the precision, the input-shape profile and the builder settings it was built with. Every
engine file therefore has a JSON sidecar record of all of these (the *key*), plus the size and sha256 of
the engine bytes.
The file name carries a hash of the key, so a changed setup never even looks at the old file; and on
load the record is compared field by field and the engine bytes are checked against the recorded size
and sha256, so a hand-copied, stale or truncated engine is rebuilt instead of loaded.

Writes are atomic: the bytes go to a temporary file in the same folder, are fsync'ed and then renamed
over the final name (`os.replace`), engine first, record last. An interrupted write leaves at most a
`*.tmp` file (ignored, removed by `clean`) or an engine without its record (never loaded).

Nothing here imports TensorRT: the device-specific steps are plain callables handed in by the caller,
`describe_device() -> DeviceInfo`, `build(spec, device) -> bytes` and, optionally,
`settings(spec, device) -> dict` (every builder setting the build applies: it goes into the key, so a
changed setting names a new engine without bumping CACHE_FORMAT by hand), so the cache logic is
exercised on the CPU with real files (tests/test_engine_cache.py) and reused by every TensorRT backend
(MTCNN detector, dlib ResNet embedding).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.files import TMP_MARK, atomic_write, file_sha256

__all__ = ["TMP_MARK", "atomic_write", "file_sha256"]  # part of this module's interface (tests, tools)

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the record layout or the key changes meaning (2: SMs, memory, builder settings)
ENGINE_SUFFIX = ".engine"
RECORD_SUFFIX = ".json"


class EngineCacheError(RuntimeError):
    """An engine that can neither be loaded from the cache nor built."""


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is specific to, besides its own build inputs."""

    tensorrt_version: str  # trt.__version__
    gpu_name: str  # e.g. "Orin"
    compute_capability: str  # "major.minor", e.g. "8.7"
    fast_fp16: bool = True  # fp16 requested on a GPU without fast fp16 builds fp32 instead
    multiprocessors: int = 0  # streaming multiprocessors (Orin Nano 4 GB: 4 ... AGX Orin 64 GB: 16)
    memory_gb: int = 0  # device memory rounded to whole GiB (shared RAM on a Jetson)

    @property
    def identity(self) -> tuple:
        """What makes two GPUs interchangeable for an engine (with the TensorRT version)."""
        return (self.tensorrt_version, self.gpu_name, self.compute_capability, self.multiprocessors,
                self.memory_gb)


@dataclass(frozen=True)
class EngineSpec:
    """Everything the builder needs for one engine (and that the engine depends on).

    `profile` maps each dynamic input name to its optimisation profile [min, opt, max] shapes;
    `options` holds any other build setting that changes the engine (e.g. workspace_mb).
    """

    label: str  # short file-name-safe name, e.g. "mtcnn-pnet"
    onnx_path: Path
    precision: str  # "fp16" | "fp32" (as requested; the key records what is actually built)
    profile: dict[str, list[list[int]]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.label):
            raise ValueError(f"engine label {self.label!r}: only letters, digits, '_', '.', '-'")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        for name, shapes in self.profile.items():
            if len(shapes) != 3 or len({len(s) for s in shapes}) != 1:
                raise ValueError(f"profile of {name!r}: need [min, opt, max] of one rank, got {shapes}")
            lo, opt, hi = shapes
            if not all(1 <= a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
                raise ValueError(f"profile of {name!r}: need 1 <= min <= opt <= max per dim, got {shapes}")


@dataclass
class CachedEngine:
    """One engine file in the folder and what its record says (for `engines list` / `clean`)."""

    engine_path: Path
    record_path: Path
    record: dict | None  # None: missing or unreadable
    problem: str  # "" when the record is readable and the engine bytes match it

    @property
    def ok(self) -> bool:
        return not self.problem


def effective_precision(requested: str, device: DeviceInfo) -> str:
    """fp16 only when asked for and the GPU has fast fp16; otherwise fp32."""
    return "fp16" if requested == "fp16" and device.fast_fp16 else "fp32"


def engine_key(spec: EngineSpec, device: DeviceInfo, onnx_sha256: str | None = None,
               builder: dict | None = None) -> dict:
    """The full record of what an engine depends on; two engines are interchangeable iff keys are equal.

    `builder`: every setting the build applies (network flags, builder flags, memory pools, ...), as the
    `settings` callable of the cache returns it.
    """
    return {
        "format": CACHE_FORMAT,
        "label": spec.label,
        "onnx_file": Path(spec.onnx_path).name,
        "onnx_sha256": onnx_sha256 or file_sha256(Path(spec.onnx_path)),
        "tensorrt_version": device.tensorrt_version,
        "gpu_name": device.gpu_name,
        "compute_capability": device.compute_capability,
        "multiprocessors": device.multiprocessors,
        "memory_gb": device.memory_gb,
        "precision": effective_precision(spec.precision, device),
        "profile": {name: [[int(d) for d in s] for s in shapes]
                    for name, shapes in sorted(spec.profile.items())},
        "options": dict(sorted(spec.options.items())),
        "builder": json.loads(json.dumps(builder or {}, sort_keys=True)),
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that two processes (service, `engines build`) do not build the same engine."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _heartbeat(label: str, every: float) -> Iterator[None]:
    """Log "still building" every `every` seconds so a long build is visibly alive."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            log.info("still building %s engine: %.0f s elapsed", label, time.monotonic() - start)

    thread = threading.Thread(target=beat, name=f"engine-build-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)


class EngineCache:
    """Engines in `folder`, loaded when their record matches, else built with `build` and stored.

    describe_device: () -> DeviceInfo, called once (lazily) per cache.
    build: (spec, device) -> engine bytes; may take minutes (TensorRT), progress is logged.
    settings: (spec, device) -> dict of the builder settings `build` applies (part of the key).
    """

    def __init__(self, folder: str | os.PathLike, describe_device: Callable[[], DeviceInfo],
                 build: Callable[[EngineSpec, DeviceInfo], bytes], heartbeat_seconds: float = 15.0,
                 settings: Callable[[EngineSpec, DeviceInfo], dict] | None = None) -> None:
        self.folder = Path(folder)
        self._describe_device = describe_device
        self._build = build
        self._settings = settings
        self._device: DeviceInfo | None = None
        self.heartbeat_seconds = heartbeat_seconds
        self.builds = 0  # engines built by this cache object (tests and logs)
        self.loads = 0  # engines loaded from disk

    @property
    def device(self) -> DeviceInfo:
        if self._device is None:
            self._device = self._describe_device()
        return self._device

    # -- naming -------------------------------------------------------------------------------------
    def key(self, spec: EngineSpec) -> dict:
        device = self.device
        builder = self._settings(spec, device) if self._settings is not None else None
        return engine_key(spec, device, builder=builder)

    def paths(self, spec: EngineSpec, key: dict | None = None) -> tuple[Path, Path]:
        """(engine file, record file) for `spec` on this device."""
        digest = key_digest(key or self.key(spec))[:16]
        engine = self.folder / f"{spec.label}-{digest}{ENGINE_SUFFIX}"
        return engine, engine.with_name(engine.name + RECORD_SUFFIX)

    # -- load / build -------------------------------------------------------------------------------
    def check(self, spec: EngineSpec, key: dict | None = None) -> str:
        """Why the cached engine for `spec` cannot be used ("" if it can)."""
        key = key or self.key(spec)
        engine_path, record_path = self.paths(spec, key)
        return _problem(engine_path, record_path, key)

    def load_or_build(self, spec: EngineSpec) -> bytes:
        """The engine bytes for `spec`: from the cache when the record matches and the file is intact,
        else freshly built (and stored atomically)."""
        key = self.key(spec)
        engine_path, record_path = self.paths(spec, key)
        data, problem = _read_verified(engine_path, record_path, key)
        if data is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with _build_lock(self.folder / f".{spec.label}.lock"):
                # another process may have built it while we waited for the lock
                data, _ = _read_verified(engine_path, record_path, key)
                if data is None:
                    return self._build_and_store(spec, key, engine_path, record_path, problem)
        self.loads += 1
        log.info("loaded %s engine from %s (%.1f MB)", spec.label, engine_path, len(data) / 1e6)
        return data

    def _build_and_store(self, spec: EngineSpec, key: dict, engine_path: Path, record_path: Path,
                         reason: str) -> bytes:
        log.warning("building %s engine (%s); this can take several minutes: %s precision, profile %s",
                    spec.label, reason, key["precision"], key["profile"] or "static")
        start = time.monotonic()
        with _heartbeat(spec.label, self.heartbeat_seconds):
            try:
                data = self._build(spec, self.device)
            except EngineCacheError:
                raise
            except Exception as exc:
                raise EngineCacheError(f"building the {spec.label} engine from {spec.onnx_path} failed: "
                                       f"{exc}") from exc
        data = bytes(data) if data is not None else b""
        if not data:
            raise EngineCacheError(f"building the {spec.label} engine from {spec.onnx_path} produced nothing")
        seconds = time.monotonic() - start
        self.builds += 1
        record = {
            "key": key,
            "key_sha256": key_digest(key),
            "engine_file": engine_path.name,
            "engine_size": len(data),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(seconds, 1),
        }
        # record last: an engine without a (matching) record is never loaded
        with contextlib.suppress(FileNotFoundError):
            record_path.unlink()
        atomic_write(engine_path, data)
        atomic_write(record_path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        log.warning("built %s engine in %.1f s -> %s (%.1f MB)", spec.label, seconds, engine_path,
                    len(data) / 1e6)
        return data

    # -- listing / cleaning -------------------------------------------------------------------------
    def entries(self) -> list[CachedEngine]:
        """Every engine (or orphan record) in the folder, with what is wrong with it, if anything."""
        if not self.folder.is_dir():
            return []
        seen: dict[Path, CachedEngine] = {}
        for path in sorted(self.folder.iterdir()):
            if TMP_MARK in path.name:
                continue
            if path.name.endswith(ENGINE_SUFFIX):
                engine, record = path, path.with_name(path.name + RECORD_SUFFIX)
            elif path.name.endswith(ENGINE_SUFFIX + RECORD_SUFFIX):
                engine, record = path.with_name(path.name[: -len(RECORD_SUFFIX)]), path
            else:
                continue
            if engine in seen:
                continue
            rec = _record_of(record)
            problem = _problem(engine, record, rec["key"] if rec and "key" in rec else None)
            seen[engine] = CachedEngine(engine, record, rec, problem)
        return list(seen.values())

    def temporary_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if TMP_MARK in p.name)

    def clean(self, remove_all: bool = False, keep: Iterable[Path] = ()) -> list[Path]:
        """Remove leftovers and stale engines; returns the files removed.

        `remove_all`: every engine, record and temporary file. Otherwise the stale ones: temporary files of
        interrupted writes; broken entries (record missing, unreadable or not matching the engine bytes);
        engines superseded by one in `keep` (the engines the current config uses: same label, other key);
        and, when the device can be described, engines built for another TensorRT version or GPU (name,
        compute capability, SM count, memory).
        """
        keep_set = {Path(p).resolve() for p in keep}
        entries = self.entries()
        kept_labels = {e.record["key"].get("label") for e in entries
                       if e.ok and e.record and e.engine_path.resolve() in keep_set}
        device: DeviceInfo | None = None
        if not remove_all:
            try:
                device = self.device
            except Exception as exc:  # no TensorRT here: version/GPU staleness cannot be judged
                log.info("cannot describe the GPU (%s): not judging engines by TensorRT version/GPU", exc)
        removed: list[Path] = list(self.temporary_files())
        for entry in entries:
            if remove_all or not entry.ok:
                stale = True
            elif entry.engine_path.resolve() in keep_set:
                stale = False
            else:
                key = entry.record["key"] if entry.record else {}
                stale = key.get("label") in kept_labels or (device is not None and (
                    key.get("tensorrt_version"), key.get("gpu_name"), key.get("compute_capability"),
                    key.get("multiprocessors"), key.get("memory_gb")) != device.identity)
            if stale:
                removed += [p for p in (entry.engine_path, entry.record_path) if p.exists()]
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.info("removed %s", path)
        return removed


def _record_of(record_path: Path) -> dict | None:
    try:
        rec = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _record_problem(engine_path: Path, rec: dict | None, key: dict | None) -> str:
    if not engine_path.is_file():
        return "no cached engine"
    if rec is None:
        return "record missing or unreadable"
    if key is None or rec.get("key") != key:
        return f"record does not match ({_key_diff(rec.get('key'), key)})"
    return ""


def _bytes_problem(size: int, sha256: str, rec: dict) -> str:
    if size != rec.get("engine_size"):
        return f"engine file is {size} bytes, record says {rec.get('engine_size')} (truncated or replaced)"
    if sha256 != rec.get("engine_sha256"):
        return "engine sha256 differs from the record (corrupted or replaced)"
    return ""


def _problem(engine_path: Path, record_path: Path, key: dict | None) -> str:
    """Why this engine file must not be loaded for `key` ("" if it may)."""
    rec = _record_of(record_path)
    problem = _record_problem(engine_path, rec, key)
    if problem:
        return problem
    return _bytes_problem(engine_path.stat().st_size, file_sha256(engine_path), rec)


def _read_verified(engine_path: Path, record_path: Path, key: dict) -> tuple[bytes | None, str]:
    """(engine bytes, "") when the record matches `key` and the bytes read match the record, else
    (None, why not). The check is on the bytes actually read, so a file changing underneath is caught."""
    rec = _record_of(record_path)
    problem = _record_problem(engine_path, rec, key)
    if problem:
        return None, problem
    try:
        data = engine_path.read_bytes()
    except OSError as exc:
        return None, f"cannot read {engine_path}: {exc}"
    problem = _bytes_problem(len(data), hashlib.sha256(data).hexdigest(), rec)
    return (None, problem) if problem else (data, "")


def _key_diff(old: Any, new: dict | None) -> str:
    if not isinstance(old, dict) or new is None:
        return "no key"
    parts = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)]
    return "; ".join(parts)[:300] or "no difference"
