"""Representatives: N typical photos that together cover a class or the whole collection, for review or to label
first.

k-medoids under cosine similarity, by alternation (Park and Jun's Voronoi iteration): each photo joins its most
similar medoid, then each cluster's medoid becomes the member with the greatest total similarity to the other
members, until no medoid changes (or `iterations`). That medoid needs no N x N matrix: for unit vectors the total
similarity of x to the members is <x, sum of members>, so it is the member nearest the cluster's summed direction,
found in one pass. Seeds: spherical k-means (FAISS, seeded by greedy k-means++) on a sample. The photos
`find_outliers` ranks most isolated (`skip`, 2 % by default) are left out first: a medoid is typical by
construction, but they would still pull on the clusters they join.

Why k-medoids rather than a k-center (farthest-point) cover: a k-center cover minimises the worst distance, so
it picks the most unusual photos still left (the edges of the collection), which is what one reviews last; a
medoid is the photo most like its share of the collection, and comes with how many photos it stands for.

Memory linear in N: assignments (N,), cluster sums (n, d); vectors read a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from birder_index.curation.copies import copy_threshold
from birder_index.curation.outliers import isolation_scores
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.progress import Progress
from birder_index.progress import silent
from birder_index.search.knn import matching_ids

Fetch = Callable[[np.ndarray], np.ndarray]  # positions -> unit vectors (len, d), as dedup.pairs
CHUNK = 65536
SKIP = 0.02
ITERATIONS = 10
SEED_SAMPLE = 256  # photos per medoid that seed k-means is trained on


# -- arrays --------------------------------------------------------------------------------------------------------


def assign(xb: np.ndarray, medoids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster, similarity to its medoid) of unit vectors xb (n, d) against unit medoid vectors (m, d)."""
    sims = xb @ medoids.T
    best = sims.argmax(1)
    return best, sims[np.arange(len(xb)), best]


def _blocks(n: int) -> list[np.ndarray]:
    return [np.arange(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]


def plus_plus(xs: np.ndarray, m: int, *, seed: int = 0) -> np.ndarray:
    """Greedy k-means++ seeding on unit vectors xs (n, d): each next seed is the best, by the squared distances
    left, of 2 + log(m) candidates drawn with probability proportional to their squared distance to the nearest
    seed so far (as scikit-learn seeds). (m log m, n) work."""
    rng = np.random.default_rng(seed)
    trials = 2 + int(np.log(max(m, 1)))
    chosen = [int(rng.integers(len(xs)))]
    d2 = np.maximum(2 - 2 * xs @ xs[chosen[0]], 0)
    for _ in range(1, m):
        total = float(d2.sum())
        if total <= 0:
            chosen.append(int(rng.integers(len(xs))))
            continue
        candidates = rng.choice(len(xs), trials, p=d2 / total)
        left = np.minimum(d2[None, :], np.maximum(2 - 2 * xs[candidates] @ xs.T, 0))  # (trials, n)
        best = int(left.sum(1).argmin())
        chosen.append(int(candidates[best]))
        d2 = left[best]
    return xs[chosen]


def seeds(fetch: Fetch, n: int, m: int, *, seed: int = 0) -> np.ndarray:
    """m unit centroids (m, d): spherical k-means, seeded by k-means++, on a random sample of the n vectors."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, m * SEED_SAMPLE), replace=False))
    xs = np.ascontiguousarray(fetch(sample), np.float32)
    if len(xs) <= m:
        return xs
    km = faiss.Kmeans(xs.shape[1], m, niter=20, spherical=True, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(xs, init_centroids=np.ascontiguousarray(plus_plus(xs, m, seed=seed), np.float32))
    return np.asarray(km.centroids, np.float32)


def medoids_of(fetch: Fetch, n: int, cluster: np.ndarray, m: int) -> np.ndarray:
    """Each cluster's medoid under cosine similarity (positions, -1 for an empty cluster): the member x with the
    greatest <x, sum of the cluster's members>, which is its total similarity to them. Two passes."""
    sums: np.ndarray | None = None
    for block in _blocks(n):
        x = fetch(block).astype(np.float64)
        sums = np.zeros((m, x.shape[1])) if sums is None else sums
        np.add.at(sums, cluster[block], x)
    assert sums is not None
    best, out = np.full(m, -np.inf), np.full(m, -1, np.int64)
    for block in _blocks(n):
        c = cluster[block]
        score = np.einsum("ij,ij->i", fetch(block).astype(np.float64), sums[c])
        order = np.lexsort((-score, c))  # by cluster, best first
        first = order[np.r_[True, c[order][1:] != c[order][:-1]]]
        better = score[first] > best[c[first]]
        best[c[first][better]], out[c[first][better]] = score[first][better], block[first][better]
    return out


def assign_all(fetch: Fetch, n: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cluster, sims = np.zeros(n, np.int64), np.zeros(n, np.float32)
    for block in _blocks(n):
        cluster[block], sims[block] = assign(fetch(block), centres)
    return cluster, sims


def k_medoids(
    fetch: Fetch, n: int, m: int, *, iterations: int = ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(medoid positions, each vector's cluster (an index into the medoids), its similarity to its medoid, rounds
    run) of n unit vectors in at most m clusters."""
    centres = seeds(fetch, n, min(m, n), seed=seed)
    medoids = np.zeros(0, np.int64)
    rounds = 0
    for rounds in range(1, iterations + 1):  # noqa: B007 (rounds is returned)
        cluster, _ = assign_all(fetch, n, centres)
        new = medoids_of(fetch, n, cluster, len(centres))
        new = np.sort(new[new >= 0])
        if np.array_equal(new, medoids):
            break
        medoids, centres = new, np.ascontiguousarray(fetch(new), np.float32)
    cluster, sims = assign_all(fetch, n, centres)
    return medoids, cluster, sims, rounds


@dataclass(frozen=True)
class Representative:
    id: int
    path: str
    members: int  # photos whose most similar representative it is (itself included)
    mean_similarity: float  # of those members to it

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "members": self.members,
                "mean_similarity": round(self.mean_similarity, 4)}  # fmt: skip


@dataclass
class Representatives:
    photos: int  # photos in scope
    skipped: int  # of them left out as outliers
    iterations: int  # k-medoids rounds run
    representatives: list[Representative]  # most members first

    def to_json(self) -> dict[str, object]:
        return {"photos": self.photos, "skipped": self.skipped, "iterations": self.iterations,
                "representatives": [r.to_json() for r in self.representatives]}  # fmt: skip


def find_representatives(
    index: Index, *, top: int = 10, label: str | None = None, set_name: str = "labels", skip: float = SKIP,
    iterations: int = ITERATIONS, copy_min: float | None = None, seed: int = 0, progress: Progress = silent,
) -> Representatives:  # fmt: skip
    """`top` medoids of the collection, or of the photos labelled `label` in `set_name`, outliers skipped first."""
    if top < 1:
        raise BirderIndexError(f"--top must be >= 1, got {top}")
    if not 0 <= skip < 1:
        raise BirderIndexError(f"skip must be in [0, 1), got {skip}")
    among = matching_ids(index, label=(set_name, label)) if label is not None else None
    scope = index.id_rows()[0] if among is None else among
    if label is not None and not len(scope):
        raise BirderIndexError(
            f"no indexed photo is labelled {label!r} in set {set_name!r} (`birder-index label list`)"
        )
    kept = scope
    n_skip = int(skip * len(scope))
    if n_skip:
        threshold = copy_threshold(index, copy_min=copy_min)
        scores, _, _ = isolation_scores(index, scope, copy_min=threshold, among=among, progress=progress)
        kept = np.sort(scope[np.argsort(scores, kind="stable")[n_skip:]])
    if not len(kept):
        return Representatives(len(scope), n_skip, 0, [])
    progress("k-medoids", 0, None)

    def fetch(positions: np.ndarray) -> np.ndarray:
        return index.fetch_normalized(kept[positions])[0]

    medoids, cluster, sims, rounds = k_medoids(fetch, len(kept), top, iterations=iterations, seed=seed)
    members = np.bincount(cluster, minlength=len(medoids))
    mean_sim = np.bincount(cluster, weights=sims, minlength=len(medoids)) / np.maximum(members, 1)
    ids = kept[medoids]
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, ids.tolist())
    root = index.root
    reps = [Representative(int(i), absolute_path(root, paths[int(i)]), int(c), float(ms))
            for i, c, ms in zip(ids, members, mean_sim, strict=True)]  # fmt: skip
    reps.sort(key=lambda r: (-r.members, r.path))
    return Representatives(len(scope), n_skip, rounds, reps)
