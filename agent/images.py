"""Loading images robustly: every format Pillow reads, EXIF orientation, alpha and palettes, size caps.

Everything returns an (H, W, 3) uint8 RGB array or raises `ImageError` with one line saying why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from agent.logsafe import escape

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 30_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ico", ".ppm", ".pgm"}

# a truncated file is an error, not a half-grey picture
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image that cannot be used; str() is a one-line reason."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                 name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to (H, W, 3) uint8 RGB, or raise ImageError."""
    if len(data) == 0:
        raise ImageError(f"{name}: empty file")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        with _pillow_warnings(name):
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"{name}: {width}x{height} is over the {max_pixels}-pixel limit "
                                 "([images] max_pixels)")
            if width < 1 or height < 1:
                raise ImageError(f"{name}: image has no pixels")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a format this agent reads") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard (MAX_IMAGE_PIXELS) fired while reading the header: the image is far over ours
        raise ImageError(f"{name}: over the {max_pixels}-pixel limit ([images] max_pixels); refused as a "
                         "decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


@contextlib.contextmanager
def _pillow_warnings(name: str) -> Iterator[None]:
    """Pillow's warnings while decoding `name`: a decompression bomb is an error; anything else (a damaged EXIF
    block: "Tag data larger than file") is one escaped log line, not a UserWarning with a library path on
    stderr - the image itself is still read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            for message in dict.fromkeys(str(w.message) for w in caught):  # each once (EXIF is read twice)
                log.info("%s: %s (damaged metadata; the image is read without it)", escape(name), escape(message))


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8))
    rgb = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def load_image(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Load a file (or bytes) as (H, W, 3) uint8 RGB with EXIF orientation applied, or raise ImageError."""
    if isinstance(source, (bytes, bytearray)):
        return decode_image(bytes(source), max_pixels, max_bytes)
    path = Path(source)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{path}: {size} bytes is over the {max_bytes}-byte limit")
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, max_pixels, max_bytes, name=str(path))
