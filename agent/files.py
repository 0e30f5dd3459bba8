"""File helpers every layer uses: content hashes, atomic writes, and telling a full or read-only disk."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
FULL_BELOW_BYTES = 1 << 20  # a file system with less free space than this counts as full
STORAGE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A data folder cannot be read or written (full disk, read-only mount, permissions); the message is one
    line naming the path and what to do."""


def _virtual(st: os.statvfs_result) -> bool:
    """A file system without blocks (/proc, /sys, ...): it cannot hold files at all (not "full")."""
    return st.f_blocks == 0


def storage_state(folder: str | os.PathLike) -> str | None:
    """"read-only" or "full" when the file system holding `folder` cannot take writes, else None."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if _virtual(st):
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < FULL_BELOW_BYTES:
        return "full"
    return None


def storage_hint(folder: str | os.PathLike) -> str:
    """What to do about a write that failed in `folder`: free space, a writable mount, or permissions."""
    with contextlib.suppress(OSError):
        if _virtual(os.statvfs(_existing(Path(folder)))):
            return f"{folder} is on a virtual file system (like /proc) that cannot hold files: point [paths] elsewhere"
    state = storage_state(folder)
    if state == "full":
        return f"the disk holding {folder} is full: free some space"
    if state == "read-only":
        return f"{folder} is on a read-only file system: mount it read-write or point [paths] elsewhere"
    return f"check that {folder} is writable by this user"


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free space (bytes this user may fill) on the file system holding `path` or its nearest existing parent;
    None when it cannot be told."""
    existing = _existing(Path(path))
    try:
        st = os.statvfs(existing)
    except OSError as exc:
        log.debug("statvfs(%s) failed: %s", existing, exc)
        return None
    return st.f_bavail * st.f_frsize


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be a data folder the agent writes (None: it can, or can be created), as the end of a
    sentence starting with the path: "is not a folder", "is not writable", "is on a virtual file system..."."""
    path = Path(path).absolute()
    existing = _existing(path)
    if not existing.is_dir():
        return "is not a folder" if existing == path else f"cannot be created ({existing} is not a folder)"
    with contextlib.suppress(OSError):
        if _virtual(os.statvfs(existing)):
            return f"is on a virtual file system ({existing}) that cannot hold files"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "is not writable" if existing == path else \
            f"does not exist and cannot be created ({existing} is not writable)"
    return None


def output_file_problem(path: str | os.PathLike) -> str | None:
    """Why a file the agent is asked to write (e.g. `run --frames-out`) cannot be written there (None: it can),
    as the end of a sentence starting with the path. The folder must exist: a typo is not created silently."""
    path = Path(path).absolute()
    if path.is_dir():
        return "is a folder, not a file"
    folder = path.parent
    if not folder.exists():
        return f"cannot be written: the folder {folder} does not exist"
    if not folder.is_dir():
        return f"cannot be written: {folder} is not a folder"
    with contextlib.suppress(OSError):
        if _virtual(os.statvfs(folder)):
            return f"cannot be written: {folder} is on a virtual file system (like /proc)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be written: the folder {folder} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "is not writable"
    return None


TMP_MARK = ".tmp-"  # temporary files are named <name>.tmp-<pid>-<thread>; cleaners look for this mark


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes] | Callable[[BinaryIO], None],
                 mode: int | None = None) -> int:
    """Write `path` so that readers see all of it or the previous file, even after a crash.

    `data`: bytes, chunks of bytes, or a function writing into the open binary file (e.g. np.savez).
    The bytes go to `<path>.tmp-<pid>-<thread>` in the same folder, are flushed and fsync'ed, and the file
    is renamed over `path`; on any error the temporary file is removed and the error raised. `mode`: file
    permissions to set (e.g. 0o644 for a file other users read), else the umask's. Returns the size written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            written = f.tell()
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return written
