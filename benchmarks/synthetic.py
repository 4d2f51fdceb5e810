"""Synthetic embeddings that look like real ones, and the statistics that say whether they do.

Uniform random vectors and plain Gaussian mixtures make every IVF-PQ look broken: in high dimension all their
neighbours are about equally far. Real image embeddings are not like that: they lie near a low-dimensional,
clustered manifold (crops of one photo, photos of one species) around a common mean direction. The generator
draws clusters in a `rank`-dimensional latent space with a power-law spectrum, embeds it in d dimensions around a
mean direction, adds isotropic noise, and is calibrated so that its local intrinsic dimension at k = 20 and the
similarities of the 1st, the 10th and an average neighbour match real pretrained features.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stats:
    lid20: float  # local intrinsic dimension at k = 20 (maximum-likelihood estimate, median over queries)
    sim1: float  # median cosine similarity of the 1st neighbour
    sim10: float  # ... of the 10th neighbour
    sim_avg: float  # ... of a random other vector ("an average neighbour")

    def row(self) -> str:
        return f"LID@20 {self.lid20:5.1f}   1st {self.sim1:.3f}   10th {self.sim10:.3f}   average {self.sim_avg:.3f}"


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def stats(x: np.ndarray, n_queries: int = 2000, k: int = 20, seed: int = 0) -> Stats:
    xb = normalize(np.asarray(x, np.float32))
    rng = np.random.default_rng(seed)
    qi = rng.choice(len(xb), min(n_queries, len(xb)), replace=False)
    sims = np.empty((len(qi), k), np.float32)
    for start in range(0, len(qi), 500):
        block = xb[qi[start : start + 500]] @ xb.T
        block[np.arange(len(block)), qi[start : start + 500]] = -np.inf  # not itself
        top = np.argpartition(-block, k, axis=1)[:, :k]
        sims[start : start + 500] = -np.sort(-np.take_along_axis(block, top, 1), axis=1)
    dist = np.sqrt(np.maximum(2 - 2 * sims, 1e-8))  # Euclidean distance on the unit sphere
    with np.errstate(divide="ignore"):
        lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)
    others = rng.integers(0, len(xb), len(qi))
    avg = np.einsum("ij,ij->i", xb[qi], xb[others])
    return Stats(
        float(np.median(lid)), float(np.median(sims[:, 0])), float(np.median(sims[:, 9])), float(np.median(avg))
    )


@dataclass(frozen=True)
class Shape:
    """A generated collection's shared draws (`Generator.shape`)."""

    basis: np.ndarray  # (rank, d)
    direction: np.ndarray  # (d,) the common mean direction
    centres: np.ndarray  # (clusters, rank)
    local: np.ndarray  # (clusters, local_rank, d): each cluster's own directions of variation


@dataclass(frozen=True)
class Generator:
    mean: float = 1.0  # weight of the shared mean direction (sets the average similarity)
    spread: float = 0.3  # within-cluster spread relative to the spread of cluster centres
    rank: int = 64  # latent dimension
    decay: float = 0.5  # power-law decay of the latent spectrum
    noise: float = 0.3  # isotropic noise in the full dimension
    per_cluster: int = 370  # vectors per cluster (as crops of one photo in the real set)
    local_rank: int = 8  # each cluster varies along this many directions of its own (crop, scale, light...)

    def sample(self, n: int, d: int, seed: int = 0, chunk: int = 16_384) -> np.ndarray:
        """float32 (n, d), L2-normalised, generated in chunks (1M x 1024 takes about 4 GB)."""
        rng = np.random.default_rng(seed)
        shape = self.shape(n, d, rng)
        out = np.empty((n, d), np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            out[start : start + m] = self.draw(shape, m, rng)
        return out

    def shape(self, n: int, d: int, rng: np.random.Generator) -> Shape:
        """What every vector of a collection of n shares: the latent basis, the mean direction, the clusters."""
        spectrum = (np.arange(1, self.rank + 1) ** -self.decay).astype(np.float32)
        basis = rng.standard_normal((self.rank, d)).astype(np.float32) / np.sqrt(self.rank)
        direction = normalize(rng.standard_normal((1, d)).astype(np.float32))[0]
        k = max(1, n // self.per_cluster)
        centres = rng.standard_normal((k, self.rank)).astype(np.float32) * spectrum
        local = rng.standard_normal((k, self.local_rank, d)).astype(np.float32) / np.sqrt(d)
        return Shape(basis, direction, centres, local)

    def draw(self, shape: Shape, m: int, rng: np.random.Generator) -> np.ndarray:
        """m vectors of the collection `shape` describes: float32 (m, d), L2-normalised. Chunks drawn with
        independent generators can be made in parallel (benchmarks/gpu_check.py)."""
        d = shape.basis.shape[1]
        cluster = rng.integers(0, len(shape.centres), m)
        coords = rng.standard_normal((m, self.local_rank)).astype(np.float32)
        x = shape.centres[cluster] @ shape.basis + self.mean * shape.direction
        for axis in range(self.local_rank):  # an einsum over local[cluster] made an (m, rank, d) copy: 5x slower
            x += (self.spread * coords[:, axis : axis + 1]) * shape.local[cluster, axis]
        x += self.noise * rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d)
        return normalize(x)


def calibrate(target: Stats, n: int, d: int, per_cluster: int) -> tuple[Generator, Stats]:
    """Coordinate search over the generator's knobs to match `target` at the same collection size."""

    def loss(g: Generator) -> tuple[float, Stats]:
        s = stats(g.sample(n, d, seed=1), n_queries=1000)
        err = ((s.lid20 - target.lid20) / max(target.lid20, 1)) ** 2
        err += sum(((a - b) / 0.05) ** 2 for a, b in ((s.sim1, target.sim1), (s.sim10, target.sim10),
                                                      (s.sim_avg, target.sim_avg)))  # fmt: skip
        return err, s

    best = Generator(per_cluster=per_cluster)
    best_loss, best_stats = loss(best)
    grid = {
        "mean": [0.2, 0.5, 1.0, 1.5, 2.0, 3.0],
        "spread": [0.1, 0.2, 0.3, 0.5, 0.8],
        "rank": [16, 32, 64, 128, 256],
        "decay": [0.0, 0.3, 0.5, 0.8, 1.0],
        "noise": [0.05, 0.1, 0.2, 0.4, 0.8],
        "local_rank": [2, 4, 6, 8, 12, 16],
    }
    for _round in range(3):  # a few passes of coordinate descent, then finer steps around the best
        for name, values in grid.items():
            for value in values:
                candidate = dataclasses.replace(best, **{name: value})
                err, s = loss(candidate)
                if err < best_loss:
                    best, best_loss, best_stats = candidate, err, s
        grid = {k: _refine(getattr(best, k), v) for k, v in grid.items()}
    return best, best_stats


def _refine(value: float, values: list[float]) -> list[float]:
    if isinstance(value, int):
        return sorted({max(4, int(value * f)) for f in (0.75, 1.0, 1.33)})
    return sorted({round(value * f, 4) for f, _ in itertools.product((0.8, 0.9, 1.0, 1.1, 1.25), [0])})
