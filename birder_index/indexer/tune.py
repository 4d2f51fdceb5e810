"""Measure what an index delivers and tune it: recall@k against exact search on held-out queries from the
collection itself, and the fastest (nprobe, k_factor) that reaches the target recall.

Queries are random collection vectors held out of training; each query's own id is excluded from both the exact and
the approximate neighbours, so recall measures the neighbours a user sees, not the trivial self-match.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# search(xq, k, nprobe, k_factor) -> (D, I)
SearchFn = Callable[[np.ndarray, int, int, int], tuple[np.ndarray, np.ndarray]]
K_FACTORS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


@dataclass(frozen=True)
class Tuning:
    nprobe: int
    k_factor: int
    recall: float  # recall@k at these settings
    qps: float  # queries per second, in one batch of all the tuning queries


def exact_knn(xq: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Ids (nq, k) of the exact top-k inner products, streaming (ids, xb) blocks.

    FAISS keeps each block's top k in heaps, so memory is the block plus (nq, 2k) arrays; a numpy (nq, block)
    score matrix, with its copies and argpartition, holds about 24 bytes per query and stored vector at once."""
    import faiss

    xq = np.ascontiguousarray(xq, dtype=np.float32)
    best_d = np.full((len(xq), k), -np.inf, np.float32)
    best_i = np.full((len(xq), k), -1, np.int64)
    for ids, xb in blocks:
        d, pos = faiss.knn(xq, np.ascontiguousarray(xb, dtype=np.float32), min(k, len(xb)), faiss.METRIC_INNER_PRODUCT)
        d = np.concatenate([best_d, d], axis=1)
        i = np.concatenate([best_i, np.asarray(ids)[pos]], axis=1)
        top = np.argpartition(-d, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(d, top, 1), np.take_along_axis(i, top, 1)
    order = np.argsort(-best_d, axis=1)
    return np.take_along_axis(best_i, order, 1)


def drop_self(I: np.ndarray, q_ids: np.ndarray, k: int) -> np.ndarray:
    """The first k ids of each row other than the query's own id."""
    out = np.full((len(I), k), -1, np.int64)
    for row, (ids, own) in enumerate(zip(I, q_ids, strict=True)):
        kept = ids[ids != own][:k]
        out[row, : len(kept)] = kept
    return out


def recall_at(I: np.ndarray, gt: np.ndarray) -> float:
    """Mean fraction of the true k neighbours found in the k returned (recall@k)."""
    hits = sum(len(np.intersect1d(found[found >= 0], truth[truth >= 0])) for found, truth in zip(I, gt, strict=True))
    return hits / max(1, int((gt >= 0).sum()))


def measure(
    search: SearchFn, xq: np.ndarray, q_ids: np.ndarray, gt: np.ndarray, nprobe: int, *, k_factor: int
) -> Tuning:
    k = gt.shape[1]
    t0 = time.perf_counter()
    _, I = search(xq, k + 1, nprobe, k_factor)
    seconds = time.perf_counter() - t0
    return Tuning(nprobe, k_factor, recall_at(drop_self(I, q_ids, k), gt), len(xq) / max(seconds, 1e-9))


def tune(search: SearchFn, xq: np.ndarray, q_ids: np.ndarray, gt: np.ndarray, nlist: int, *, target: float) -> Tuning:
    """For each k_factor, the smallest power-of-two nprobe reaching `target`; then the fastest of those. When no
    setting reaches the target, the most accurate one measured."""
    reached: list[Tuning] = []
    best: Tuning | None = None
    for k_factor in K_FACTORS:
        nprobe = 1
        while True:
            t = measure(search, xq, q_ids, gt, nprobe, k_factor=k_factor)
            logger.debug("nprobe %d k_factor %d: recall %.4f, %.0f q/s", nprobe, k_factor, t.recall, t.qps)
            if best is None or t.recall > best.recall:
                best = t
            if t.recall >= target:
                reached.append(t)
                break
            if nprobe >= nlist:
                break
            nprobe = min(nprobe * 2, nlist)
        if reached and reached[-1].k_factor == k_factor and reached[-1].nprobe == 1:
            break  # larger k_factors cannot be faster than nprobe 1 with fewer candidates
    assert best is not None
    if not reached:
        logger.warning("recall@%d target %.3f not reached; best measured %.4f", gt.shape[1], target, best.recall)
        return best
    return max(reached, key=lambda t: t.qps)
