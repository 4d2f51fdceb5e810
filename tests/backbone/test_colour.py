"""Colour signatures: the same under the changes a near duplicate goes through, different after recolouring."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from birder_index.backbone.colour import CHROMA_DIM
from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.colour import colour_signature
from birder_index.backbone.colour import colour_similarity
from birder_index.backbone.images import resize
from tests.helpers import photo


def _sig(img: Image.Image) -> np.ndarray:
    return colour_signature(resize(img.convert("RGB"), (224, 224)))


def _warm(seed: int) -> Image.Image:
    """A photo in warm tones (most real photos have a dominant hue; the test photos have every hue)."""
    return Image.fromarray((np.asarray(photo(seed, (400, 300))) * np.array([1.0, 0.75, 0.5])).astype(np.uint8))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _sim(a: Image.Image, b: Image.Image) -> float:
    return float(colour_similarity(_sig(a)[None], _sig(b)[None])[0])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_near_duplicate_changes_keep_the_colours(seed: int) -> None:
    img = photo(seed, (400, 300))
    w, h = img.size
    copies = {
        "downscale": img.resize((w // 3, h // 3), Image.Resampling.BILINEAR),
        "jpeg30": _jpeg(img, 30),
        "flip": ImageOps.mirror(img),
        "crop85": img.crop((20, 15, w - 20, h - 15)),
        "brighter": ImageEnhance.Brightness(img).enhance(1.2),
    }
    for kind, copy in copies.items():
        assert _sim(img, copy) >= 0.95, kind


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_contrast_and_saturation_edits_keep_the_hues(seed: int) -> None:
    warm = _warm(seed)
    flat = ImageEnhance.Contrast(ImageEnhance.Brightness(warm).enhance(1.25)).enhance(0.6)
    pale = ImageEnhance.Color(warm).enhance(0.5)
    a, b, c = _sig(warm), _sig(flat), _sig(pale)
    assert colour_similarity(a[None, :CHROMA_DIM], b[None, :CHROMA_DIM])[0] < 0.95  # chromaticity alone: moved
    assert colour_similarity(a[None], b[None])[0] >= 0.95 and colour_similarity(a[None], c[None])[0] >= 0.95


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recolouring_and_greyscale_change_the_colours(seed: int) -> None:
    warm = _warm(seed)
    r, g, b = warm.split()
    assert _sim(warm, Image.merge("RGB", (b, g, r))) < 0.9  # the same design in a cool theme
    assert _sim(warm, ImageOps.grayscale(warm)) < 0.5


def test_signatures_are_small_and_unknown_matches_anything() -> None:
    sig = _sig(photo(1))
    assert sig.dtype == np.uint8 and sig.shape == (SIGNATURE_DIM,)
    black = colour_signature(np.zeros((3, 64, 64), np.uint8))
    assert not black.any()  # no colour information
    assert colour_similarity(black[None], sig[None])[0] == 1.0
    assert colour_similarity(sig[None], sig[None])[0] == pytest.approx(1.0, abs=1e-6)
    grey_a = _sig(ImageOps.grayscale(photo(1)))
    grey_b = _sig(ImageOps.grayscale(photo(2)))
    assert colour_similarity(grey_a[None], grey_b[None])[0] == pytest.approx(1.0, abs=1e-3)  # all neutral
