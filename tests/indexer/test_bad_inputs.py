"""A corpus of bad and unusual inputs, made here: each file is indexed correctly or recorded as failed with its
reason; the build never crashes and exits 0 with a warning count; `info --failed` lists the failures."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from birder_index.cli import cli
from birder_index.indexer import open_index
from birder_index.search.queries import embed_files
from tests.helpers import photo

EXPECTED_FAILURES = {
    "truncated.jpg": "truncated",
    "zero.jpg": "empty file",
    "random.jpg": "not an image",
    "bomb.png": "decompression bomb",
    "loop.jpg": "symlink loop",
    "drawing.svg": "SVG",
    "bad\\xff.jpg": "not valid UTF-8",
}
EXPECTED_INDEXED = [
    "cmyk.jpg", "gray16.png", "palette_alpha.png", "animated.gif", "rotated.jpg", "upright.jpg",
    "rotated.png", "upright.png", "phone.heic", "photo.avif", "good.jpg",
]  # fmt: skip


def _bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _rotated(upright: Image.Image, path: Path, **kw: object) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise: rotate clockwise to view
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, **kw)


def make_bad_corpus(folder: Path) -> None:
    folder.mkdir()
    photo(1).save(folder / "good.jpg", quality=90)
    good = io.BytesIO()
    photo(2, (200, 160)).save(good, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(good.getvalue()[:2000])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "bomb.png").write_bytes(_bomb())
    photo(3).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    Image.fromarray((np.linspace(0, 65535, 96 * 72).reshape(72, 96)).astype(np.uint16)).save(folder / "gray16.png")
    pal = photo(4).convert("P")
    pal.info["transparency"] = 3
    pal.save(folder / "palette_alpha.png", transparency=3)
    frames = [photo(5).convert("P"), photo(6).convert("P")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    upright = photo(7, (96, 64))
    upright.save(folder / "upright.jpg", quality=100, subsampling=0)
    _rotated(upright, folder / "rotated.jpg", quality=100, subsampling=0)
    upright.save(folder / "upright.png")
    _rotated(upright, folder / "rotated.png")
    import pillow_heif

    pillow_heif.register_heif_opener()  # an encoder for the test's HEIC file
    photo(8).save(folder / "phone.heic")
    photo(9).save(folder / "photo.avif")
    os.symlink("loop.jpg", folder / "loop.jpg")
    noread = folder / "noread.jpg"
    photo(10).save(noread)
    noread.chmod(0)
    (folder / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    with open(os.path.join(os.fsencode(folder), b"bad\xff.jpg"), "wb") as f:
        photo(11).save(f, "JPEG")


@pytest.fixture
def bad_corpus(tmp_path: Path) -> Path:
    make_bad_corpus(tmp_path / "bad")
    return tmp_path / "bad"


def test_every_bad_input_is_indexed_or_recorded(bad_corpus: Path, tiny_pt: Path) -> None:
    result = CliRunner().invoke(cli, ["build", str(bad_corpus), "--weights", str(tiny_pt), "--workers", "2"])
    assert result.exit_code == 0, result.output
    can_read_unreadable = os.geteuid() == 0  # root reads a mode-000 file: then it is simply indexed
    n_failed = len(EXPECTED_FAILURES) + (0 if can_read_unreadable else 1)
    assert f"Warning: {n_failed} files could not be indexed" in result.output
    info = json.loads(
        CliRunner().invoke(cli, ["info", "--json", "--failed", "--index-dir", str(bad_corpus / ".birder-index")]).output
    )
    failed = {f["path"]: f["error"] for f in info["failed_files"]}
    for name, reason in EXPECTED_FAILURES.items():
        assert reason in failed.pop(name), (name, reason)
    if not can_read_unreadable:
        assert failed.pop("noread.jpg") == "permission denied"
    assert failed == {}
    assert info["indexed"] == len(EXPECTED_INDEXED) + int(can_read_unreadable)
    # a second run neither retries the failures nor crashes on them
    again = CliRunner().invoke(cli, ["build", str(bad_corpus), "--workers", "0"])
    assert again.exit_code == 0 and again.output.startswith("0 indexed, ") and "Warning" not in again.output


def test_exif_rotation_gives_the_upright_embedding(bad_corpus: Path, tiny_pt: Path) -> None:
    CliRunner().invoke(cli, ["build", str(bad_corpus), "--weights", str(tiny_pt), "--workers", "0"])
    with open_index(bad_corpus / ".birder-index") as index:
        enc = index.load_encoder(precision="float32")
        v = embed_files(
            enc, [str(bad_corpus / n) for n in ("upright.png", "rotated.png", "upright.jpg", "rotated.jpg")], exact=True
        )
    assert np.array_equal(v[0], v[1])  # lossless: identical pixels, identical embedding
    cos = float(v[2] @ v[3] / np.linalg.norm(v[2]) / np.linalg.norm(v[3]))
    assert cos >= 0.999  # JPEG: the same picture, re-encoded in the other orientation
