"""The neighbours the curation signals read: each photo's nearest photos through the index's batch search, a
chunk of queries at a time, with the photo itself and its own copies left out.

Memory is linear in N: the queries' vectors are read a chunk at a time and only (N, k) neighbour lists are kept.
"""

from __future__ import annotations

import logging

import numpy as np

from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.progress import Progress
from birder_index.progress import silent
from birder_index.search.knn import nearest

logger = logging.getLogger(__name__)

CHUNK = 4096  # queries searched at once through the FAISS index
CHUNK_AMONG = 512  # ... among a subset, scored exactly against blocks of 65536 ids (128 MB of scores)
EXTRA = 8  # neighbours asked for beyond k, to fill in for copies left out


def drop_neighbours(D: np.ndarray, I: np.ndarray, own: np.ndarray, *, k: int, copy_min: float = np.inf,
                    copies: dict[int, set[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(D, I) (n, k) of search results (n, depth) without each query's own id (`own`, (n,)), without neighbours
    scoring >= `copy_min` (near copies) and without the ids `copies[own]`; -inf / -1 where fewer are left."""
    keep = (I >= 0) & (own[:, None] != I) & (copy_min > D)
    if copies:
        for row, i in enumerate(own.tolist()):
            if i in copies:
                keep[row] &= ~np.isin(I[row], list(copies[i]))
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept ones first, in score order
    kept = np.take_along_axis(keep, order, 1)
    D = np.where(kept, np.take_along_axis(D, order, 1), -np.inf).astype(np.float32)
    I = np.where(kept, np.take_along_axis(I, order, 1), -1)
    if D.shape[1] < k:  # fewer candidates than k in the whole search
        pad = k - D.shape[1]
        D = np.pad(D, ((0, 0), (0, pad)), constant_values=-np.inf)
        I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
    return D, I


def neighbour_lists(
    index: Index, ids: np.ndarray, *, k: int, among: np.ndarray | None = None, copy_min: float = np.inf,
    copies: dict[int, set[int]] | None = None, progress: Progress = silent, what: str = "neighbours",
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(D, I) (len(ids), k): each photo's k nearest photos (among `among` ids when given), itself, its near copies
    (similarity >= `copy_min`) and the ids `copies[id]` left out. -inf / -1 where fewer exist."""
    if k < 1:
        raise BirderIndexError(f"k must be >= 1, got {k}")
    ids = np.asarray(ids, np.int64)
    D = np.full((len(ids), k), -np.inf, np.float32)
    I = np.full((len(ids), k), -1, np.int64)
    step = CHUNK if among is None else CHUNK_AMONG
    for start in range(0, len(ids), step):
        progress(what, start, len(ids))
        chunk = ids[start : start + step]
        xq, _ = index.fetch_normalized(chunk)
        known = max((len(copies.get(i, ())) for i in chunk.tolist()), default=0) if copies else 0
        Dc, Ic = nearest(index, xq, k=k + 1 + EXTRA + known, among=among)
        D[start : start + len(chunk)], I[start : start + len(chunk)] = drop_neighbours(
            Dc, Ic, chunk, k=k, copy_min=copy_min, copies=copies
        )
    progress(what, len(ids), len(ids))
    return D, I
