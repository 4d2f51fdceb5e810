"""The upright-thumbnail join finds exactly the pairs that correlate >= the bar straight or mirrored."""

from __future__ import annotations

import numpy as np
import pytest

from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.backbone.thumbnail import mirrored
from birder_index.backbone.thumbnail import thumbnail_vectors
from birder_index.dedup import pairs
from birder_index.dedup.thumbnail_pairs import Upright
from birder_index.dedup.thumbnail_pairs import thumbnail_pairs


def _thumbs(n: int, seed: int) -> np.ndarray:
    """Smooth random thumbnails with straight and mirrored noisy copies: pairs at every correlation around the bar.
    A third lean not at all (their copies tip either way: only comparing them both ways finds those), a sixth
    are symmetric (each meets itself mirrored)."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (n, 4, 4))
    x = (np.kron(coarse, np.ones((4, 4))) + 0.3 * rng.normal(0, 1, (n, 16, 16))).reshape(n, THUMB_DIM)
    ramp = np.tile(np.arange(16) - 7.5, 16) / np.linalg.norm(np.tile(np.arange(16) - 7.5, 16))
    x[: n // 3] -= np.outer(x[: n // 3] @ ramp, ramp)
    x[n // 3 : n // 2] += mirrored(x[n // 3 : n // 2])
    x = np.clip(128 + 30 * x, 0, 255)
    src = rng.integers(0, n, n // 2)
    copies = x[src].copy()
    copies[::2] = mirrored(copies[::2])
    copies += rng.normal(0, rng.uniform(1, 8, (len(src), 1)), copies.shape)
    # the worst case: two copies of a picture that leans not at all, tipped apart along the ramp as far as
    # correlating >= 0.98 allows (their leans differ by nearly sqrt(2 - 2 * 0.98))
    level = x[:50].std(axis=1, keepdims=True) * np.sqrt(THUMB_DIM)
    tipped = [x[:50] + 0.09 * level * ramp, mirrored(x[:50] - 0.09 * level * ramp)]
    return np.clip(np.concatenate([x, copies, *tipped]), 0, 255).astype(np.uint8)


def _brute(a: np.ndarray, b: np.ndarray, bar: float, same: bool) -> set[tuple[int, int]]:
    va, vb = thumbnail_vectors(a), thumbnail_vectors(b)
    corr = np.maximum(va @ vb.T, thumbnail_vectors(mirrored(a)) @ vb.T)
    i, j = np.nonzero(corr >= bar)
    return {(p, q) for p, q in zip(i.tolist(), j.tolist(), strict=True) if not same or p < q}


@pytest.mark.parametrize("bar", [0.98, 0.95])
def test_self_join_equals_brute_force_straight_and_mirrored(monkeypatch: pytest.MonkeyPatch, bar: float) -> None:
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)  # many cells even for a small test set
    x = _thumbs(1200, seed=1)
    a, b = thumbnail_pairs(lambda p: x[p], len(x), bar)
    expected = _brute(x, x, bar, same=True)
    vx = thumbnail_vectors(x)
    mirrored_only = {(p, q) for p, q in expected if vx[p] @ vx[q] < bar}
    assert len(expected) > 300 and len(mirrored_only) > 100
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected
    assert len(a) == len(expected)  # each pair once, and no symmetric thumbnail with itself
    both = set(Upright.of(lambda p: x[p], len(x), bar).both.tolist())
    assert set(range(400)) <= both and len(both) < len(x)  # those that lean not at all both ways, not every one
    with_flat = np.concatenate([x, np.full((1, THUMB_DIM), 128, np.uint8)])
    assert len(x) not in Upright.of(lambda p: with_flat[p], len(with_flat), bar).both  # flat: matches nothing


def test_join_of_two_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)
    x = _thumbs(1500, seed=2)
    xq, xb = x[::2], x[1::2]
    a, b = thumbnail_pairs(lambda p: xq[p], len(xq), 0.97, read_b=lambda p: xb[p], nb=len(xb))
    expected = _brute(xq, xb, 0.97, same=False)
    assert len(expected) > 50
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected
