"""Decoding: birder's exact resize, EXIF orientation, every pixel mode to RGB, and damaged files as ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birder_index.backbone.images import decode
from birder_index.backbone.images import open_upright
from birder_index.errors import ImageError
from tests.helpers import photo


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def test_exact_path_is_pil_bicubic_squash_resize() -> None:
    img = photo(1, (300, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    got = decode(buf.getvalue(), (64, 48)).pixels
    expected = np.asarray(img.resize((48, 64), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert got.shape == (3, 64, 48) and got.dtype == np.uint8
    assert np.array_equal(got, expected)


def test_fast_path_is_close_to_exact_on_a_large_jpeg() -> None:
    data = _jpeg(photo(2, (2400, 1600)))
    exact = decode(data, (224, 224)).pixels.astype(np.float32)
    fast = decode(data, (224, 224), fast=True).pixels.astype(np.float32)
    assert np.abs(exact - fast).mean() < 2.0  # grey levels, out of 255
    assert decode(data, (224, 224), fast=True).width == 2400


def test_exif_orientation_is_applied() -> None:
    upright = photo(3, (120, 80))
    rotated = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag that says "rotate 90 degrees clockwise to view"
    buf = io.BytesIO()
    rotated.save(buf, "PNG", exif=exif)
    img, w, h = open_upright(buf.getvalue())
    assert (w, h) == (120, 80) and img.size == (120, 80)
    assert np.array_equal(np.asarray(img), np.asarray(upright))


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    img, _, _ = open_upright(buf.getvalue())
    out = np.asarray(img)
    assert img.mode == "RGB" and out.max() == 255 and out.min() == 0
    assert 100 < out.mean() < 155  # clipping would make most pixels 255


@pytest.mark.parametrize("mode", ["P", "PA", "LA", "RGBA", "CMYK", "L", "1", "I", "F"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    base = photo(4, (40, 30))
    img = base.convert(mode) if mode not in ("PA",) else base.convert("P").convert("PA")
    if mode == "P":
        img.info["transparency"] = 0
    buf = io.BytesIO()
    img.save(buf, "TIFF" if mode in ("CMYK", "I", "F", "PA") else "PNG")
    out = decode(buf.getvalue(), (16, 16)).pixels
    assert out.shape == (3, 16, 16)


def test_transparent_pixels_are_composited_not_dropped() -> None:
    # White everywhere, the picture only in the alpha channel (as some wallpapers and icons are made).
    alpha = np.asarray(photo(9, (40, 30)).convert("L"))
    rgba = np.dstack([np.full((30, 40, 3), 255, np.uint8), alpha])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    out = decode(buf.getvalue(), (30, 40)).pixels
    assert out.std() > 10  # dropping the alpha would give a blank white image
    expected = 128 + (255 - 128) * alpha.astype(np.float32) / 255
    assert np.abs(out[0].astype(np.float32) - expected).max() <= 1.5


def test_cmyk_jpeg() -> None:
    data = _jpeg(photo(5, (64, 64)).convert("CMYK"))
    assert decode(data, (32, 32)).pixels.shape == (3, 32, 32)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [photo(6, (40, 40)).convert("P"), photo(7, (40, 40)).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    img, _, _ = open_upright(buf.getvalue())
    assert np.array_equal(np.asarray(img), np.asarray(frames[0].convert("RGB")))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "not an image"),
        (b"\xff\xd8\xff\xe0 random bytes" * 10, "(?i)not an image|truncated"),
        (_png_header_only(100_000, 100_000), "over the 178956970-pixel limit \\(decompression bomb\\?\\)"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not an image"),
    ],
)
def test_damaged_files_raise_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode(data, (32, 32))


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _jpeg(photo(8, (200, 200)))
    with pytest.raises(ImageError, match="truncated"):
        decode(data[: len(data) // 2], (32, 32))
