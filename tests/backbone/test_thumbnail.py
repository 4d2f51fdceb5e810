"""The thumbnail signal: unchanged by the edits the encoder can miss, mirrored for flips, different for different
pictures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL import ImageEnhance

from birder_index.backbone.images import resize
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.backbone.thumbnail import mirrored
from birder_index.backbone.thumbnail import thumbnail
from birder_index.backbone.thumbnail import thumbnail_correlation
from birder_index.backbone.thumbnail import thumbnail_match
from birder_index.backbone.thumbnail import thumbnail_vectors
from tests.helpers import gradient
from tests.helpers import photo

SIZE = (224, 224)


def _thumb(img: Image.Image) -> np.ndarray:
    return thumbnail(resize(img, SIZE))[None]  # of the pixels the model sees, as the build stores it


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("seed", range(3))
def test_copies_correlate_above_the_default_bar(seed: int) -> None:
    for img in (photo(seed, (400, 300)), gradient(seed)):
        original = _thumb(img)
        copies = {
            "jpeg30": _jpeg(img, 30),
            "half size": img.resize((200, 150), Image.Resampling.BICUBIC),
            "brighter, less contrast": ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.2)).enhance(0.8),
        }
        for name, copy in copies.items():
            assert thumbnail_correlation(original, _thumb(copy))[0] >= 0.98, name


def test_different_pictures_correlate_below_it() -> None:
    thumbs = np.concatenate([_thumb(photo(seed, (400, 300))) for seed in range(8)])
    corr = thumbnail_vectors(thumbs) @ thumbnail_vectors(thumbs).T
    assert np.allclose(np.diag(corr), 1.0, atol=1e-5)
    assert corr[~np.eye(8, dtype=bool)].max() < 0.9
    assert thumbnail_match(thumbs, thumbs[::-1])[0][:4].max() < 0.9  # mirrored either


def test_a_mirrored_copy_matches_its_original_mirrored() -> None:
    img = photo(0, (400, 300))
    flipped = _thumb(_jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 40))
    assert thumbnail_correlation(_thumb(img), flipped)[0] < 0.9  # straight, a flip is a different picture
    assert thumbnail_match(_thumb(img), flipped)[0][0] >= 0.98
    assert thumbnail_match(flipped, _thumb(img))[0][0] == pytest.approx(thumbnail_match(_thumb(img), flipped)[0][0])
    assert np.array_equal(mirrored(mirrored(flipped)), flipped)


def test_flat_and_missing_thumbnails_match_nothing() -> None:
    flat = _thumb(Image.new("RGB", (64, 64), (90, 120, 200)))
    assert flat.shape == (1, THUMB_DIM) and not thumbnail_vectors(flat).any()
    missing = np.zeros((1, THUMB_DIM), np.uint8)  # rows of an index built before thumbnails
    assert thumbnail_correlation(flat, flat)[0] == 0.0 and thumbnail_correlation(missing, missing)[0] == 0.0
