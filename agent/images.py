"""Loading images robustly: every format Pillow reads, EXIF orientation, alpha and palettes, size caps.

Everything returns an (H, W, 3) uint8 RGB array or raises `ImageError` with one line saying why.

Memory: a picture is decoded and analysed within `[images] memory_mb`. Finding faces in a picture costs
about `ANALYSIS_BYTES_PER_PIXEL` bytes per pixel (the picture, the detector's pyramid and P-Net maps), so a
picture of more than memory_mb / ANALYSIS_BYTES_PER_PIXEL pixels (4.2 MP at 256 MB) is decoded reduced to
that many: a JPEG already at decoding (Pillow's draft: the DCT scaled by 1/2, 1/4 or 1/8, never the full
picture in memory), other formats decoded whole and then reduced - unless that whole decode alone (at
Pillow's bytes per pixel) exceeds the budget, then the picture is refused. Measured on a 6300x6300 picture
with one face (bench/bench_decode.py, PNG and JPEG): `identify` peaked at 2.4-2.7 GB whole, 385-391 MiB at
256 MB (the process alone: ~230 MiB), 167-202 MiB at 64 MB (the PNG refused), and still named the face;
the same PNG through the gallery as remote enrollment takes it (add_image, then training) peaked at 2644 MiB
before, 580 MiB now (the process with its models: ~300 MiB).
`identify` reports boxes in the picture's own pixels (`load_image_scaled` gives the scale).
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

from agent.logsafe import escape, shown

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 30_000_000
DEFAULT_MEMORY_MB = 256
# peak RSS of `identify` grows by ~60 bytes per pixel of the picture (measured: 40 MP -> +2.4 GB)
ANALYSIS_BYTES_PER_PIXEL = 64
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ico", ".ppm", ".pgm"}

# a truncated file is an error, not a half-grey picture
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image that cannot be used; str() is a one-line reason."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def pixel_budget(memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """Pixels a picture is decoded at, at most, within `memory_mb` (larger ones are decoded reduced)."""
    return max(1, memory_mb * 2**20 // ANALYSIS_BYTES_PER_PIXEL)


def _decoded_bytes(img: Image.Image) -> int:
    """Bytes Pillow takes for the whole picture decoded (multi-band modes are stored 4 bytes a pixel)."""
    width, height = img.size
    bands = len(img.getbands())
    per_pixel = 4 if bands > 1 or img.mode in ("I", "F") else 2 if img.mode.startswith("I;16") else 1
    return width * height * per_pixel


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                 name: str = "image", memory_mb: int = DEFAULT_MEMORY_MB) -> np.ndarray:
    """Decode encoded image bytes to (H, W, 3) uint8 RGB, or raise ImageError. Pictures over the pixel
    budget of `memory_mb` come reduced (see the module docstring; decode_image_scaled says by how much)."""
    return decode_image_scaled(data, max_pixels, max_bytes, name, memory_mb)[0]


def decode_image_scaled(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                        name: str = "image", memory_mb: int = DEFAULT_MEMORY_MB) -> tuple[np.ndarray, float]:
    """decode_image and the scale it was decoded at (1.0, or decoded width / the picture's width)."""
    name = shown(name)  # a file name from outside: escaped in every message (logs, CLI, replies)
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
            img = _load_within(img, pixel_budget(memory_mb), memory_mb, name)
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
            # the scale along the picture's own width (before EXIF rotation): rotated or not, a uniform scale
            return rgb, min(1.0, max(rgb.shape[:2]) / max(width, height))
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

def _load_within(img: Image.Image, budget: int, memory_mb: int, name: str) -> Image.Image:
    """`img` decoded with at most `budget` pixels: JPEGs reduced while decoding, others decoded whole (if
    that fits `memory_mb`) and then reduced."""
    width, height = img.size
    if width * height <= budget:
        img.load()
        return img
    shrink = (budget / (width * height)) ** 0.5
    size = (max(1, int(width * shrink)), max(1, int(height * shrink)))
    if img.format == "JPEG":
        img.draft("RGB" if img.mode not in ("L", "CMYK") else img.mode, size)  # 1/2, 1/4 or 1/8, >= size
    elif _decoded_bytes(img) > memory_mb * 2**20:
        raise ImageError(f"{name}: {width}x{height} {img.format or ''} image needs "
                         f"{_decoded_bytes(img) / 2**20:.0f} MB to decode, over the {memory_mb} MB budget "
                         "([images] memory_mb): save it smaller or as JPEG (decoded reduced)")
    img.load()
    if img.size[0] * img.size[1] > budget:
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    log.debug("%s: %dx%d decoded at %dx%d ([images] memory_mb %d)", name, width, height, *img.size, memory_mb)
    return img


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
               max_bytes: int = DEFAULT_MAX_BYTES, memory_mb: int = DEFAULT_MEMORY_MB) -> np.ndarray:
    """Load a file (or bytes) as (H, W, 3) uint8 RGB with EXIF orientation applied, or raise ImageError.
    Pictures over the pixel budget of `memory_mb` come reduced (load_image_scaled says by how much)."""
    return load_image_scaled(source, max_pixels, max_bytes, memory_mb)[0]


def load_image_scaled(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                      max_bytes: int = DEFAULT_MAX_BYTES, memory_mb: int = DEFAULT_MEMORY_MB
                      ) -> tuple[np.ndarray, float]:
    """load_image and the scale it was decoded at (1.0, or decoded size / the picture's size)."""
    if isinstance(source, (bytes, bytearray)):
        return decode_image_scaled(bytes(source), max_pixels, max_bytes, memory_mb=memory_mb)
    path = Path(source)
    label = shown(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{label}: {size} bytes is over the {max_bytes}-byte limit")
        if not path.is_file():
            raise ImageError(f"{label}: not a file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    return decode_image_scaled(data, max_pixels, max_bytes, name=str(path), memory_mb=memory_mb)
