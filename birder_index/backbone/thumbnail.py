"""A photo's thumbnail: 16 x 16 greyscale, dedup's second signal where the encoder misses.

Encoders trained for recognition can score a heavily compressed copy of a smooth picture (JPEG banding across a
grey gradient) well below a different photo of a similar scene (docs/dedup.md). Their pixels still agree:
box-filtered down to 16 x 16, with the mean removed and scaled to unit length, copy and original correlate
almost perfectly. That correlation is
unchanged by resizing, re-encoding and brightness or contrast edits; a mirrored copy matches the thumbnail
flipped left to right (`thumbnail_match` takes the better of the two). Crops and rotations move it, which is
where the encoder does well.

The thumbnail is stored as the grey levels themselves (uint8, 256 bytes); `thumbnail_vectors` turns stored rows
into the vectors whose dot product is the correlation. A flat thumbnail (no contrast to correlate) and a missing
one (an index built before thumbnails, imported embeddings) become zero vectors, which match nothing.
"""

from __future__ import annotations

import math

import numpy as np

SIDE = 16  # larger thumbnails found no other pairs on the quality benchmark (docs/dedup.md), and cost more
THUMB_DIM = SIDE * SIDE
MIN_CONTRAST = 2.0  # grey levels (standard deviation) below which a thumbnail is flat: nothing to correlate


def thumbnail(pixels: np.ndarray, *, side: int = SIDE) -> np.ndarray:
    """uint8 (3, H, W) pixels -> uint8 (side * side,) grey levels of a side x side box-filtered thumbnail."""
    from PIL import Image  # here, not at the top: a search opens the thumbnail store and never makes one

    grey = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), pixels.astype(np.float32), axes=1)
    img = Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((side, side), Image.Resampling.BOX), np.uint8).ravel()


def thumbnails(pixels: np.ndarray, *, side: int = SIDE) -> np.ndarray:
    """uint8 (N, 3, H, W) -> uint8 (N, side * side)."""
    out = np.zeros((len(pixels), side * side), np.uint8)
    for i, p in enumerate(pixels):
        out[i] = thumbnail(p, side=side)
    return out


_RAMP = np.tile(np.arange(SIDE, dtype=np.float32) - (SIDE - 1) / 2, SIDE)
_RAMP /= np.linalg.norm(_RAMP)  # grey levels rising left to right, mean zero: mirrored, it is its own negative


def has_thumbnail(stored: np.ndarray) -> np.ndarray:
    """bool (N,): which stored thumbnails have contrast to correlate (not flat, not missing)."""
    return np.asarray(stored, np.float32).std(axis=1) >= MIN_CONTRAST


def thumbnail_vectors(stored: np.ndarray) -> np.ndarray:
    """uint8 (N, THUMB_DIM) stored thumbnails -> float32 (N, THUMB_DIM): mean removed, unit length, so that the
    dot product of two rows is their correlation; zeros for a flat or missing thumbnail (matches nothing)."""
    x = np.asarray(stored, np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    spread = np.sqrt((x * x).mean(axis=1, keepdims=True))
    return np.where(spread >= MIN_CONTRAST, x / np.maximum(spread, 1e-6) / np.sqrt(x.shape[1]), 0.0).astype(np.float32)


def mirrored(stored: np.ndarray) -> np.ndarray:
    """(N, side * side) stored thumbnails flipped left to right: the thumbnails of mirrored copies."""
    side = math.isqrt(stored.shape[1])
    return np.ascontiguousarray(stored.reshape(len(stored), side, side)[:, :, ::-1].reshape(stored.shape))


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise correlation of two (N, THUMB_DIM) stored-thumbnail arrays, in [-1, 1]; 0 where either is flat or
    missing."""
    return np.einsum("ij,ij->i", thumbnail_vectors(a), thumbnail_vectors(b))


def lean(vectors: np.ndarray) -> np.ndarray:
    """How each thumbnail vector (`thumbnail_vectors`) leans: its correlation with a left-to-right ramp, which
    mirroring negates."""
    return vectors @ _RAMP


def upright(vectors: np.ndarray) -> np.ndarray:
    """Thumbnail vectors turned to lean right (mirrored where they lean left), so that a thumbnail and its mirror
    image come out the same, and one range join over upright thumbnails meets straight and mirrored copies alike.
    Copies can only be turned opposite ways when both lean little: vectors with correlation >= c lean within
    sqrt(2 - 2c) of each other (the ramp has unit length), so the join also compares, turned the other way, those
    leaning less than `ambiguous_lean(c)`."""
    left = lean(vectors) < 0
    out = vectors.copy()
    out[left] = mirrored(vectors[left])
    return out


def ambiguous_lean(bar: float) -> float:
    """Below this |lean| a thumbnail and a copy correlating >= bar with it may be turned opposite ways."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * bar)) / 2 + 1e-4  # + float32 rounding


def thumbnail_match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise, the better of the straight and the mirrored correlation (a copy flipped left to right matches its
    original as well as a straight copy does), and whether it is the mirrored one."""
    straight, flipped = thumbnail_correlation(a, b), thumbnail_correlation(mirrored(a), b)
    return np.maximum(straight, flipped), flipped > straight
