"""The cell-pruned range join finds exactly the pairs a brute force finds."""

from __future__ import annotations

import numpy as np
import pytest

from birder_index.dedup import pairs
from birder_index.dedup.pairs import similar_pairs


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Clusters with near-duplicates inside them: pairs at every similarity, many near cell boundaries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    dups = x[rng.integers(0, n, n // 10)] + 0.02 * rng.standard_normal((n // 10, d)).astype(np.float32)
    x = np.concatenate([x, dups])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(xq: np.ndarray, xb: np.ndarray, threshold: float, same: bool) -> set[tuple[int, int]]:
    i, j = np.nonzero(xq @ xb.T >= threshold)
    return {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True) if not same or a < b}


@pytest.mark.parametrize("threshold", [0.99, 0.95, 0.8])
def test_self_join_equals_brute_force(monkeypatch: pytest.MonkeyPatch, threshold: float) -> None:
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)  # many cells even for a small test set
    x = _clustered(3000, 24, seed=1)
    assert pairs.n_cells(len(x)) == 64
    a, b, s = similar_pairs(lambda p: x[p], len(x), threshold)
    expected = _brute(x, x, threshold, same=True)
    assert len(expected) > 100
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected
    assert len(a) == len(expected)  # each pair once
    np.testing.assert_allclose(s, np.einsum("ij,ij->i", x[a], x[b]), atol=1e-5)


def test_self_join_past_the_probes_it_can_hold_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes kept from the assignment pass run out part way: the rest are found again in the join's rounds."""
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)
    monkeypatch.setattr(pairs, "BLOCK", 256)
    monkeypatch.setattr(pairs, "HELD_MAX", 1000)  # about the first three blocks' probes
    monkeypatch.setattr(pairs, "PROBES_MAX", 700)  # and several rounds of the join
    x = _clustered(3000, 24, seed=3)
    kept, again = [], []
    block, probe_block = pairs.HeldProbes.block, pairs._probe_block
    monkeypatch.setattr(pairs.HeldProbes, "block", lambda self, start: kept.append(start) or block(self, start))
    monkeypatch.setattr(pairs, "_probe_block", lambda *a: again.append(a[-2]) or probe_block(*a))
    a, b, _ = similar_pairs(lambda p: x[p], len(x), 0.95)
    expected = _brute(x, x, 0.95, same=True)
    assert len(expected) > 100 and len(a) == len(expected)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected
    assert kept and again and max(kept) < min(again)  # the first blocks' probes kept, the rest found again


def test_join_of_two_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)
    x = _clustered(2000, 16, seed=2)
    xq, xb = x[:700], x[700:]
    a, b, _ = similar_pairs(lambda p: xq[p], len(xq), 0.97, fetch_b=lambda p: xb[p], nb=len(xb))
    expected = _brute(xq, xb, 0.97, same=False)
    assert len(expected) > 50
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected


def test_small_collections_use_one_cell_and_identical_vectors_pair() -> None:
    x = np.tile(np.eye(4, dtype=np.float32)[:1], (5, 1))  # five identical vectors: all 10 pairs at 1.0
    a, b, s = similar_pairs(lambda p: x[p], 5, 1.0)
    assert pairs.n_cells(5) == 1
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert np.all(s >= 1.0 - 1e-6)
    empty = similar_pairs(lambda p: x[p], 0, 0.9)
    assert all(len(v) == 0 for v in empty)


@pytest.mark.parametrize("bf16", [True, False])
def test_pairs_within_bfloat16_rounding_of_the_threshold_are_decided_in_float32(
    monkeypatch: pytest.MonkeyPatch, bf16: bool
) -> None:
    """Pairs planted 0.002 above and below the threshold, far inside bfloat16's rounding of a dot product (~0.01):
    the bfloat16 products only pick candidates, the float32 re-check decides, with float32 scores."""
    monkeypatch.setattr(pairs, "fast_bf16", lambda device: bf16)
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)
    rng = np.random.default_rng(4)
    base = rng.standard_normal((2000, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    targets = 0.95 + np.tile([0.002, -0.002, 0.0005, -0.0005], 50)  # 200 copies, half of them decoys
    noise = rng.standard_normal((200, 64)).astype(np.float32)
    noise -= np.einsum("ij,ij->i", noise, base[:200])[:, None] * base[:200]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = targets[:, None] * base[:200] + np.sqrt(1 - targets[:, None] ** 2) * noise
    x = np.concatenate([base, copies.astype(np.float32)])
    a, b, s = similar_pairs(lambda p: x[p], len(x), 0.95)
    expected = _brute(x, x, 0.95, same=True)
    assert {(i, 2000 + i) for i in range(0, 200, 2)} <= expected
    assert not expected & {(i, 2000 + i) for i in range(1, 200, 2)}
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected
    np.testing.assert_allclose(s, np.einsum("ij,ij->i", x[a], x[b]), atol=1e-6)


def test_a_low_threshold_scores_in_float32_when_most_pairs_are_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs, "fast_bf16", lambda device: True)
    x = _clustered(500, 8, seed=5)
    checked = []
    above = pairs._above
    monkeypatch.setattr(pairs, "_above", lambda scores, t: checked.append(scores.dtype) or above(scores, t))
    a, b, _ = similar_pairs(lambda p: x[p], len(x), 0.0)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == _brute(x, x, 0.0, same=True)
    assert checked and set(checked) == {pairs.torch.float32}
