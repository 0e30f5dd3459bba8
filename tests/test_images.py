"""Image loading: every format of the same face loads alike, every bad file gives one clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import COMPREFACE, FR
from PIL import Image

from agent.images import ImageError, decode_image, decode_image_scaled, load_image, pixel_budget

FILES = COMPREFACE / "embedding-calculator" / "src" / "services" / "imgtools" / "test" / "files"


@pytest.mark.parametrize("name", ["einstein.bmp", "einstein.gif", "einstein.ico", "einstein.jpeg",
                                  "einstein.png", "einstein.tiff", "einstein.webp"])
def test_every_format_loads_as_the_same_rgb_picture(name):
    reference = load_image(FILES / "einstein.png").astype(np.float32)
    img = load_image(FILES / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape == reference.shape
    assert np.abs(img.astype(np.float32) - reference).mean() < 6.0  # lossy formats differ a little


@pytest.mark.parametrize("name, words", [("corrupted.png", "not an image"), ("empty.png", "empty"),
                                         ("truncated.jpg", "truncated"), ("__init__.py", "not an image")])
def test_bad_files_give_one_clear_line(name, words):
    with pytest.raises(ImageError) as err:
        load_image(FILES / name)
    message = str(err.value)
    assert words in message and name in message and "\n" not in message


def test_rgba_png_becomes_rgb():
    img = load_image(FR / "tests" / "test_images" / "32bit.png")
    assert img.shape[2] == 3


def test_exif_orientation_is_applied(tmp_path):
    rgb = load_image(FR / "tests" / "test_images" / "obama.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.shape == rgb.shape
    assert np.abs(loaded.astype(int) - rgb.astype(int)).mean() < 8


def test_pixel_and_byte_limits(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000)).save(big)
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(big, max_pixels=10_000_000)
    with pytest.raises(ImageError, match="byte limit"):
        load_image(big, max_bytes=100)
    assert load_image(big, memory_mb=1024).shape == (3000, 4000, 3)


def test_decompression_bomb_refused_before_decoding():
    # a 30000 x 30000 PNG compresses to a few hundred kB; its header alone must be enough to refuse it
    buf = io.BytesIO()
    Image.new("L", (30000, 30000)).save(buf, format="PNG")
    with pytest.raises(ImageError, match="pixel limit|decompression bomb"):
        decode_image(buf.getvalue(), max_pixels=40_000_000)


def test_palette_with_transparency_and_16_bit(tmp_path):
    p = Image.new("P", (20, 10))
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    path = tmp_path / "palette.png"
    p.save(path, transparency=0)
    assert load_image(path).shape == (10, 20, 3)
    deep = Image.fromarray(np.arange(200, dtype=np.uint16).reshape(10, 20) * 300)
    path16 = tmp_path / "deep.png"
    deep.save(path16)
    img = load_image(path16)
    assert img.shape == (10, 20, 3) and img.max() == 255


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="not a file|folder"):
        load_image(tmp_path)


def test_damaged_exif_is_no_python_warning(tmp_path, caplog):
    """Issue 25.7: an EXIF block whose tag claims more data than the file holds made Pillow print a
    UserWarning with a library path on stderr; now it is one escaped log line, and the photo (with the
    orientation that could still be read) is used."""
    import logging
    import struct
    import warnings

    photo = (FR / "examples" / "knn_examples" / "train" / "biden" / "biden.jpg").read_bytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 0x0112, 3, 1, 6)  # Orientation: turned 90 degrees
    tiff += struct.pack("<HHII", 0x010F, 2, 10**9, 4000)  # Make: 10**9 characters, far beyond the file
    tiff += struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    damaged = photo[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + photo[2:]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="agent.images"):
        warnings.simplefilter("always")
        rgb = decode_image(damaged, name="bad\nexif.jpg")
    assert not caught, [str(w.message) for w in caught]
    plain = decode_image(photo)
    assert rgb.shape == (plain.shape[1], plain.shape[0], 3)  # the orientation still counts
    assert "Tag data larger than file" in caplog.text and "bad\\nexif.jpg" in caplog.text

def _peak_mib_of(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python running `code` (Pillow's buffers are not seen by tracemalloc)."""
    import subprocess
    import sys

    from conftest import ROOT

    # VmHWM, not ru_maxrss: that one keeps the peak of the process before exec (pytest's)
    done = subprocess.run([sys.executable, "-c", code + "\nprint(next(line.split()[1] for line in "
                           "open('/proc/self/status') if line.startswith('VmHWM')))"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def test_a_huge_picture_is_decoded_reduced_within_the_memory_budget(tmp_path):
    # the picture: a small PNG of 6300x6300 (just under the 40 MP cap); analysed whole it took 2.5 GB
    png, jpeg = tmp_path / "huge.png", tmp_path / "huge.jpg"
    face = Image.open(FR / "tests" / "test_images" / "obama.jpg").convert("RGB")
    canvas = Image.new("RGB", (6300, 6300), (200, 200, 200))
    canvas.paste(face, (3000, 3000))
    canvas.save(png, optimize=True)
    canvas.save(jpeg, quality=80)
    for path in (png, jpeg):
        rgb, scale = decode_image_scaled(path.read_bytes(), memory_mb=256)
        assert rgb.shape[0] * rgb.shape[1] <= pixel_budget(256) == 4_194_304
        assert rgb.shape[0] == rgb.shape[1] and scale == pytest.approx(rgb.shape[0] / 6300)
        assert rgb[int(3200 * scale), int(3200 * scale)].tolist() != [200, 200, 200]  # the face is there
    # a PNG must be decoded whole before it can be reduced: over the budget it is refused, saying why
    with pytest.raises(ImageError, match=r"6300x6300 PNG image needs 151 MB to decode, over the 64 MB budget"):
        decode_image(png.read_bytes(), memory_mb=64)
    # a JPEG never is: Pillow's draft decodes it at 1/4 (scaled DCT), a fraction of the full picture's memory
    small = _peak_mib_of(f"from agent.images import load_image\nload_image({str(jpeg)!r}, memory_mb=64)")
    whole = _peak_mib_of(f"from agent.images import load_image\nload_image({str(jpeg)!r}, memory_mb=4096)")
    assert small < 100 < 250 < whole, (small, whole)  # the whole 40 MP picture alone is 160 MB (RGBX) + 120 MB
