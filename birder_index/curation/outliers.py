"""Outliers: the photos farthest from everything else, most isolated first.

Score: the mean cosine similarity of a photo to its k nearest other photos (k = 20), its own near copies left out
(neighbours at or above the duplicate threshold: the pairs dedup finds). Lowest first. Why this one rather than
a local outlier factor: it takes one batch search (LOF needs the neighbours' own neighbourhoods too, a second
pass and their k-distances), it reads as a similarity a person can compare with `search` scores, and it does not
forgive a photo for standing in a sparse region: LOF divides by the neighbours' density, so a broken capture among
other varied photos scores as ordinary. What it cannot see: a group of more than k foreign photos like one
another (they are each other's neighbours: hence k = 20, docs/benchmarks.md#curation).

Plain functions over arrays, then `find_outliers` over an Index (neighbours through its batch search, in chunks:
memory linear in N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birder_index.curation.copies import copy_threshold
from birder_index.curation.neighbours import neighbour_lists
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.progress import Progress
from birder_index.progress import silent

K = 20  # a group of up to k alike foreign photos still stands out: 13 noise images among the digits did not at 10


def isolation(D: np.ndarray) -> np.ndarray:
    """Mean similarity to the neighbours found (D (n, k), -inf where none); -1 (most isolated) for none at all."""
    valid = np.isfinite(D)
    total = np.where(valid, D, 0).sum(1)
    return np.where(valid.any(1), total / np.maximum(valid.sum(1), 1), -1.0).astype(np.float32)


@dataclass(frozen=True)
class Outlier:
    id: int
    path: str
    score: float  # mean similarity to its k nearest other photos
    nearest: list[tuple[int, str, float]]  # (id, path, similarity) of its nearest few

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "score": round(self.score, 4),
                "nearest": [{"id": i, "path": p, "similarity": round(s, 4)} for i, p, s in self.nearest]}  # fmt: skip


@dataclass
class Outliers:
    photos: int  # photos scored
    k: int
    copy_min: float
    median: float  # the median photo's score, for scale (nan: fewer than 2 photos)
    outliers: list[Outlier]  # most isolated first
    ids: np.ndarray  # every photo scored ...
    scores: np.ndarray  # ... and its score: the whole ranking

    def to_json(self) -> dict[str, object]:
        median = None if np.isnan(self.median) else round(self.median, 4)
        return {"photos": self.photos, "k": self.k, "copy_min": round(self.copy_min, 4), "median": median,
                "outliers": [o.to_json() for o in self.outliers]}  # fmt: skip


def isolation_scores(
    index: Index, ids: np.ndarray, *, k: int = K, copy_min: float, among: np.ndarray | None = None,
    progress: Progress = silent,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(scores, D, I) for photos `ids`: mean similarity to the k nearest other photos (of `among`), copies at or
    above `copy_min` left out."""
    D, I = neighbour_lists(index, ids, k=k, among=among, copy_min=copy_min, progress=progress, what="neighbours")
    return isolation(D), D, I


def find_outliers(
    index: Index, *, top: int = 20, k: int = K, ids: np.ndarray | None = None, copy_min: float | None = None,
    progress: Progress = silent,
) -> Outliers:  # fmt: skip
    """The `top` most isolated photos of the collection (or of `ids`, neighbours among them only)."""
    if top < 1:
        raise BirderIndexError(f"--top must be >= 1, got {top}")
    among = None if ids is None else np.unique(np.asarray(ids, np.int64))
    scope = index.id_rows()[0] if among is None else among
    threshold = copy_threshold(index, copy_min=copy_min)
    if len(scope) < 2:
        return Outliers(len(scope), k, threshold, float("nan"), [], scope, np.zeros(len(scope), np.float32))
    scores, D, I = isolation_scores(index, scope, k=k, copy_min=threshold, among=among, progress=progress)
    order = np.argsort(scores, kind="stable")[:top]
    shown = 3
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, [*scope[order].tolist(), *I[order, :shown].ravel().tolist()])
    root = index.root
    out = [
        Outlier(int(scope[r]), absolute_path(root, paths[int(scope[r])]), float(scores[r]),
                [(int(i), absolute_path(root, paths[int(i)]), float(d))
                 for d, i in zip(D[r, :shown], I[r, :shown], strict=True) if i >= 0 and int(i) in paths])
        for r in order.tolist()
    ]  # fmt: skip
    return Outliers(len(scope), k, threshold, float(np.median(scores)), out, scope, scores)
