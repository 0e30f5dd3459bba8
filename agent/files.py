"""File helpers every layer uses: content hashes and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
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


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes] | Callable[[BinaryIO], None]) -> int:
    """Write `path` so that readers see all of it or the previous file, even after a crash.

    `data`: bytes, chunks of bytes, or a function writing into the open binary file (e.g. np.savez).
    The bytes go to `<path>.tmp-<pid>-<thread>` in the same folder, are flushed and fsync'ed, and the file
    is renamed over `path`; on any error the temporary file is removed and the error raised. Returns the
    size written.
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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return written
