"""A photo's colour signature: what ImageNet-style encoders are trained to ignore, and dedup must not.

Encoders learn with colour-jitter augmentation, so a recoloured version of a picture (a light and a dark theme of
one wallpaper, a product in two colours) embeds almost like the original. The signature has two parts, both
unchanged by resizing, re-encoding, flips, crops and brightness:

- the distribution of the photo's chromaticity (r / (r+g+b), g / (r+g+b)), a 13 x 13 histogram, each pixel
  weighted by the square root of its intensity (the chromaticity of near-black pixels is noise). It tells grey
  from colour and catches subtle recolouring, but a contrast or saturation edit moves it;
- the distribution of hue, 24 bins around the colour wheel, each pixel weighted by its saturation: unchanged by
  contrast and saturation edits, but undefined for a near-grey photo.

Each histogram shares a pixel between its nearest bins (no cliff at a bin edge) and is stored as the square roots
of its frequencies, so the cosine of two parts is their Bhattacharyya coefficient (1.0: the same colours). Two
photos' colours agree when either part does: recolouring changes both, a contrast edit only the first.
"""

from __future__ import annotations

import numpy as np

BINS = 12  # intervals per chromaticity axis; bilinear sharing puts mass on BINS + 1 grid points
CHROMA_DIM = (BINS + 1) ** 2
HUE_BINS = 24
HUE_FLOOR = 0.02  # mean saturation weight below which a photo has no hue to speak of
SIGNATURE_DIM = CHROMA_DIM + HUE_BINS
SCALE = 255  # stored as uint8: sqrt(frequency) * SCALE
SAMPLE_PIXELS = 112 * 112  # every k-th pixel of each k-th row: plenty for a histogram, 4x less work at 224 px


def colour_signature(pixels: np.ndarray) -> np.ndarray:
    """uint8 (3, H, W) pixels -> uint8 (SIGNATURE_DIM,) signature; all zeros for an all-black image (unknown)."""
    step = max(1, round((pixels.shape[1] * pixels.shape[2] / SAMPLE_PIXELS) ** 0.5))
    px = pixels[:, ::step, ::step].reshape(3, -1).astype(np.float32)
    total = px.sum(0)
    safe = np.maximum(total, 1.0)
    r, g = px[0] / safe, px[1] / safe
    weight = np.sqrt(total / (3 * 255.0))
    out = np.zeros(SIGNATURE_DIM, np.uint8)
    if weight.sum() <= 0:
        return out
    out[:CHROMA_DIM] = _stored(_chroma_histogram(r, g, weight))
    # Offsets from grey (1/3, 1/3) in orthonormal chromaticity-plane axes: angle = hue, length = saturation.
    x, y = r - 1 / 3 + (g - 1 / 3) / 2, (g - 1 / 3) * np.sqrt(3) / 2
    saturation = np.sqrt(x * x + y * y) * weight
    if saturation.mean() >= HUE_FLOOR:
        out[CHROMA_DIM:] = _stored(_hue_histogram(x, y, saturation))
    return out


def _chroma_histogram(r: np.ndarray, g: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x, y = r * BINS, g * BINS
    x0 = np.minimum(x.astype(np.int64), BINS - 1)
    y0 = np.minimum(y.astype(np.int64), BINS - 1)
    fx, fy = x - x0, y - y0
    hist = np.zeros(CHROMA_DIM, np.float64)
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        hist += np.bincount((x0 + dx) * (BINS + 1) + y0 + dy, weights=weight * share, minlength=CHROMA_DIM)
    return hist


def _hue_histogram(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    angle = (np.arctan2(y, x) / (2 * np.pi) % 1.0) * HUE_BINS
    lower = np.floor(angle).astype(np.int64) % HUE_BINS
    share = angle - np.floor(angle)
    hist = np.bincount(lower, weights=weight * (1 - share), minlength=HUE_BINS)
    return hist + np.bincount((lower + 1) % HUE_BINS, weights=weight * share, minlength=HUE_BINS)


def _stored(hist: np.ndarray) -> np.ndarray:
    return np.round(np.sqrt(hist / hist.sum()) * SCALE).astype(np.uint8)


def colour_signatures(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> uint8 (N, SIGNATURE_DIM)."""
    out = np.zeros((len(pixels), SIGNATURE_DIM), np.uint8)
    for i, p in enumerate(pixels):
        out[i] = colour_signature(p)
    return out


def colour_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise agreement of two (N, SIGNATURE_DIM) signature arrays, in [0, 1]: the larger Bhattacharyya
    coefficient of the chromaticity parts and of the hue parts (a photo without hue has no say there).

    A row of zeros (no signature: imported embeddings, an index older than signatures, an all-black photo)
    matches anything: 1.0.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    chroma = _cosine(a[:, :CHROMA_DIM], b[:, :CHROMA_DIM])
    hue = _cosine(a[:, CHROMA_DIM:], b[:, CHROMA_DIM:])
    known = a[:, :CHROMA_DIM].any(axis=1) & b[:, :CHROMA_DIM].any(axis=1)
    return np.where(known, np.maximum(chroma, hue), 1.0).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; 0 where either row is all zeros."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)
