"""Every pair of vectors with cosine similarity >= a threshold, exactly, in memory linear in N.

A range join without an N x N matrix: spherical k-means splits the database vectors into cells, and each query
is compared only with the cells that can hold a vector within the threshold of it. The pruning is exact, not a
heuristic: cell j is {x : <x, c_j> >= <x, c_i> for all i}, so for a query a whose best centroid is c_i, every
x in cell j lies on the far side of the hyperplane between c_i and c_j, at least
(<a, c_i> - <a, c_j>) / |c_i - c_j| from a. Unit vectors with cosine >= t are within sqrt(2 - 2t) of each
other, so cells farther than that are skipped. The result is the brute force's, for a fraction of its work:
at threshold 0.995 a vector is compared with one or two cells of the ~sqrt(N).

Plain functions over arrays: vectors come from `fetch(positions) -> (len, d)` L2-normalised float32 rows, so a
memory-mapped store is read a cell at a time and never held whole.

The work comes in pieces that a `Runner` runs: blocks of vectors scored against the centroids, then a round's
cells joined in ranges of cells. `Here` runs them one after the other in this process; `dedup --ray` runs them as
Ray tasks (distributed/tasks.py `RayTasks`) and gets the same pairs in the same order: each cell is joined with
the same queries, and the results are taken in the order of the pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Protocol

import faiss
import numpy as np
import torch

from birder_index.backbone.hardware import fast_bf16

Fetch = Callable[[np.ndarray], np.ndarray]
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]

ROUNDING = 1e-4  # float32 rounding of scores and cell assignments (~1e-6) can never drop a pair
ONE_CELL_MAX = 4096  # up to here one cell (a blocked brute force) is cheaper than training k-means
POINTS_PER_CENTROID = 40  # k-means training sample; the pruning is exact however rough the centroids are
BLOCK = 8192  # vectors scored against the centroids at once
PROBES_MAX = 1 << 23  # (query, cell) probes held before they are joined: 128 MB
HELD_MAX = 1 << 26  # a self-join's probes kept from its assignment pass (int32 pairs): 512 MB at most
SCORES_MAX = 1 << 22  # query x cell-member scores computed at once (16 MB of float32)
ACCUMULATION = 1e-4  # float32 accumulation error of a bfloat16 product of unit vectors (~1e-5 at 512 dimensions)
RECHECK_SHARE = 1 / 16  # above this share of candidate pairs a float32 product is cheaper than re-checking each
RECHECK = 1 << 13  # candidate pairs re-checked at once (two 16 MB gathers at 512 dimensions)
QUERIES_MAX = 1 << 10  # queries scored at once: bounded, so a cell's work allocates the same few MB again and again


class Runner(Protocol):
    """Runs the pieces of a join: `fn(*shared, *call)` for each call, results in the order of `calls`."""

    @property
    def parts(self) -> int:
        """Ranges of cells a round's join is cut into."""

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, shared: tuple[Any, ...] = ()
    ) -> Iterator[Any]:
        """`fn(*shared, *call)` for each call, in the order of `calls`."""


class Here:
    """One piece after another, in this process: a round's join is one piece."""

    parts = 1

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, shared: tuple[Any, ...] = ()
    ) -> Iterator[Any]:
        return (fn(*shared, *call) for call in calls)


def similar_pairs(
    fetch_q: Fetch, nq: int, threshold: float, *, fetch_b: Fetch | None = None, nb: int = 0, seed: int = 0,
    runner: Runner | None = None,
) -> Pairs:  # fmt: skip
    """(query positions, database positions, cosine) of every pair with cosine >= threshold.

    Without `fetch_b` the queries are the database (a self-join): each pair comes once, with the smaller
    position first, and no vector is paired with itself. `runner`: where the pieces run (default: here).
    """
    run = runner or Here()
    same = fetch_b is None
    if fetch_b is None:
        fetch_b, nb = fetch_q, nq
    if nq == 0 or nb == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    radius = math.sqrt(max(0.0, 2.0 - 2.0 * threshold))
    centroids = train_centroids(fetch_b, nb, seed=seed)
    gaps = torch.cdist(torch.from_numpy(centroids), torch.from_numpy(centroids)).numpy()  # |c_i - c_j|
    # Every member's cell must be known before the first round of the join. A self-join's queries are its members:
    # the scores that give a block its cells give its probes too, kept (int32) while they fit in HELD_MAX; blocks
    # past that are scored against the centroids again in the join's rounds. This saved one of the three passes
    # over N x cells (docs/benchmarks.md#one-machine-1m-3m-10m).
    held, homes = HeldProbes(), []
    shared_assign = (fetch_b, centroids, (gaps, radius) if same else None)
    for (start, end), (home, probes) in zip(
        _blocks(nb), run.map(assign_block, _blocks(nb), shared=shared_assign), strict=True
    ):
        homes.append(home)
        if probes is not None:
            held.add(start, probes[0], probes[1], end)
    b_home = np.concatenate(homes)
    cells = CellMembers.of(b_home, len(centroids))
    parts: list[Pairs] = []
    pending, pos_parts, cell_parts = 0, [], []
    shared = (fetch_q, centroids, gaps, radius, b_home if same else None)
    again = run.map(_probe_block, [b for b in _blocks(nq) if b[0] >= held.until], shared=shared)
    for start, end in _blocks(nq):
        q_pos, q_cell = held.block(start) if start < held.until else next(again)
        pos_parts.append(q_pos)
        cell_parts.append(q_cell)
        pending += len(q_pos)
        if pending >= PROBES_MAX or end >= nq:  # joined in rounds when a low threshold prunes little
            q_pos, q_cell = np.concatenate(pos_parts), np.concatenate(cell_parts)
            parts.extend(_join_round(run, fetch_q, fetch_b, q_pos, q_cell, cells, threshold=threshold, same=same))
            pending, pos_parts, cell_parts = 0, [], []
    qa, qb, scores = (np.concatenate(v) for v in zip(*parts, strict=True))
    return qa, qb, scores


@dataclass
class HeldProbes:
    """The probes of a self-join's first `until` vectors, kept from the assignment pass: per block of BLOCK
    vectors, (positions, cells) as int32."""

    until: int = 0
    blocks: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    count: int = 0

    def add(self, start: int, positions: np.ndarray, cells: np.ndarray, end: int) -> None:
        if self.until == start and self.count + len(positions) <= HELD_MAX:
            self.blocks[start] = (positions.astype(np.int32), cells.astype(np.int32))
            self.count += len(positions)
            self.until = end

    def block(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        positions, cells = self.blocks.pop(start)
        return positions.astype(np.int64), cells.astype(np.int64)


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + BLOCK, n)) for start in range(0, n, BLOCK)]


def assign_block(
    fetch: Fetch, centroids: np.ndarray, probing: tuple[np.ndarray, float] | None, start: int, end: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The cell of each vector at positions start..end-1 (the centroid it scores highest with) and, with
    `probing` (gaps, radius) in a self-join, the (positions, cells) it must be compared with, from the same scores."""
    positions = np.arange(start, end)
    with torch.inference_mode():  # torch.tensor copies: in a Ray task the centroids are a read-only shared array
        scores = _rows(fetch, positions) @ torch.tensor(centroids).T
        home = scores.argmax(1)
        if probing is None:
            return home.numpy(), None
        gaps, radius = probing
        return home.numpy(), _probed(scores, positions, home, np.array(gaps), radius, self_join=True)


def _probe_block(
    fetch: Fetch, centroids: np.ndarray, gaps: np.ndarray, radius: float, home: np.ndarray | None, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`reachable_cells` for the vectors at positions start..end-1 (`home`: every vector's cell, in a self-join)."""
    q = np.arange(start, end)
    centroids, gaps = np.array(centroids), np.array(gaps)  # writable copies (Ray's shared arrays are read-only)
    return reachable_cells(fetch, q, centroids, gaps, radius, home=None if home is None else home[q])


def _join_round(
    run: Runner, fetch_q: Fetch, fetch_b: Fetch, q_pos: np.ndarray, q_cell: np.ndarray, cells: CellMembers, *,
    threshold: float, same: bool,
) -> Iterator[Pairs]:  # fmt: skip
    """A round's probes joined in `run.parts` ranges of cells of about equal work, in cell order."""
    if run.parts <= 1:
        yield join_cells(fetch_q, fetch_b, q_pos, q_cell, cells, threshold=threshold, same=same)
        return
    work = np.bincount(q_cell, minlength=len(cells)) * np.diff(cells.bounds)  # queries x members of each cell
    edges = np.searchsorted(np.cumsum(work), np.linspace(0, work.sum(), run.parts + 1)[1:-1], side="right")
    calls = []
    for lo, hi in zip([0, *edges.tolist()], [*edges.tolist(), len(cells)], strict=True):
        mine = (q_cell >= lo) & (q_cell < hi)
        if mine.any():
            calls.append((q_pos[mine], q_cell[mine]))
    yield from run.map(_join_part, calls, shared=(fetch_q, fetch_b, cells, threshold, same))


def _join_part(
    fetch_q: Fetch, fetch_b: Fetch, cells: CellMembers, threshold: float, same: bool, q_pos: np.ndarray,
    q_cell: np.ndarray,
) -> Pairs:  # fmt: skip
    return join_cells(fetch_q, fetch_b, q_pos, q_cell, cells, threshold=threshold, same=same)


def n_cells(nb: int) -> int:
    """About sqrt(N), a power of two: balances scoring every vector against the centroids (N x cells) with
    comparing it to the members of the one or two cells it probes (N x probes x N / cells); half or twice as many
    cells were no faster (docs/benchmarks.md#dedup)."""
    if nb <= ONE_CELL_MAX:
        return 1
    return 1 << math.ceil(math.log2(math.sqrt(nb)))


def train_centroids(fetch: Fetch, n: int, *, seed: int = 0) -> np.ndarray:
    """Spherical k-means centroids (cells, d) from a random sample of the vectors."""
    cells = n_cells(n)
    first = fetch(np.zeros(1, np.int64))
    if cells == 1:
        return np.zeros((1, first.shape[1]), np.float32)  # one cell holds everything
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, cells * POINTS_PER_CENTROID), replace=False))
    km = faiss.Kmeans(first.shape[1], cells, niter=10, spherical=True, seed=seed, verbose=False)
    km.train(np.ascontiguousarray(fetch(sample), np.float32))
    return np.asarray(km.centroids, np.float32)


def reachable_cells(
    fetch: Fetch, positions: np.ndarray, centroids: np.ndarray, gaps: np.ndarray, radius: float,
    *, home: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(positions, cells): every cell each vector must be compared with. `gaps` are the centroids' distances.

    The bound holds for any reference centroid; the vector's best one makes it tightest. With `home` (a
    self-join: the vectors' own cells) only cells numbered from the vector's own up are kept: a pair across
    cells i < j is found once, by its member in cell i, which is as sure to probe cell j as the other is to
    probe cell i.
    """
    with torch.inference_mode():
        scores = _rows(fetch, positions) @ torch.from_numpy(centroids).T
        ref = scores.argmax(1) if home is None else torch.from_numpy(home)
        return _probed(scores, positions, ref, gaps, radius, self_join=home is not None)


def _probed(
    scores: torch.Tensor, positions: np.ndarray, ref: torch.Tensor, gaps: np.ndarray, radius: float, *,
    self_join: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`reachable_cells` from the vectors' scores against the centroids and their reference cells."""
    top = scores.gather(1, ref[:, None])[:, 0]
    # the vector's distance to cell j's boundary, (top - score_j) / gap_ij, must be within the radius (0 for its
    # own cell). Written without the division; checked only where the largest gap lets it pass.
    rows, cells = torch.nonzero(scores >= (top - radius * float(gaps.max()) - ROUNDING)[:, None], as_tuple=True)
    near = top[rows] - scores[rows, cells] <= radius * torch.from_numpy(gaps)[ref[rows], cells] + ROUNDING
    if self_join:
        near &= cells >= ref[rows]
    return positions[rows[near].numpy()], cells[near].numpy().astype(np.int64)


@dataclass(frozen=True)
class CellMembers:
    home: np.ndarray  # each database vector's cell
    order: np.ndarray  # database positions sorted by cell
    bounds: np.ndarray  # cell j's members are order[bounds[j] : bounds[j + 1]]

    @classmethod
    def of(cls, home: np.ndarray, cells: int) -> CellMembers:
        order = np.argsort(home, kind="stable")
        return cls(home, order, np.searchsorted(home[order], np.arange(cells + 1)))

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, cell: int) -> np.ndarray:
        return self.order[self.bounds[cell] : self.bounds[cell + 1]]


def join_cells(
    fetch_q: Fetch, fetch_b: Fetch, q_pos: np.ndarray, q_cell: np.ndarray, cells: CellMembers, *, threshold: float,
    same: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Score each cell's probing queries against the cell's members and keep pairs >= threshold (a self-join:
    each pair once, smaller position first)."""
    coarse = fast_bf16(torch.device("cpu"))
    order = np.lexsort((q_pos, q_cell))
    q_pos, q_cell = q_pos[order], q_cell[order]
    q_bounds = np.searchsorted(q_cell, np.arange(len(cells) + 1))
    out_q, out_b, out_s = [], [], []
    for cell in range(len(cells)):
        members = cells[cell]
        queries = q_pos[q_bounds[cell] : q_bounds[cell + 1]]
        if not len(members) or not len(queries):
            continue
        xb = Scored.of(_rows(fetch_b, members), coarse)
        step = max(1, min(SCORES_MAX // len(members), QUERIES_MAX))
        for start in range(0, len(queries), step):
            qs = queries[start : start + step]
            i, j, scores = Scored.of(_rows(fetch_q, qs), coarse).at_least(xb, threshold)
            a, b = qs[i], members[j]
            if same:  # within the query's own cell both orders (and the vector itself) come up: keep a < b
                keep = (a < b) | (cells.home[a] != cell)
                a, b, scores = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep]), scores[keep]
            out_q.append(a)
            out_b.append(b)
            out_s.append(scores)
    if not out_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_q), np.concatenate(out_b), np.concatenate(out_s)


@dataclass(frozen=True)
class Scored:
    """Unit vectors (float32) with, where the CPU runs bfloat16 matrix products natively, their bfloat16 copy and
    the largest rounding error of a row, |x - bfloat16(x)|.

    `at_least` finds the pairs >= threshold in bfloat16, with a slack that can drop none, and keeps those whose
    float32 dot product reaches the threshold: the same pairs and float32 scores as a float32 product, in less
    time (docs/benchmarks.md#one-machine-1m-3m-10m). The slack: with a~ = a + e and b~ = b + f, |a~.b~ - a.b| <=
    |e| + |f| + |e||f| for unit a and b (|e| <= 2**-8, typically ~2**-10 at 512 dimensions: measured per block);
    the product is rounded to bfloat16 by at most 2**-9 below 1 (values from 1 up are kept anyway); float32
    accumulation adds ~1e-5, ACCUMULATION covers it.
    """

    full: torch.Tensor
    coarse: torch.Tensor | None
    error: float  # the largest |x - bfloat16(x)| of a row

    @classmethod
    def of(cls, x: torch.Tensor, coarse: bool) -> Scored:
        if not coarse:
            return cls(x, None, 0.0)
        low = x.to(torch.bfloat16)
        return cls(x, low, float(torch.linalg.vector_norm(x - low.float(), dim=1).max()) if len(x) else 0.0)

    def at_least(self, other: Scored, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, float32 score) of each row pair of self x other scoring >= threshold."""
        with torch.inference_mode():
            if self.coarse is None or other.coarse is None:
                return _above(self.full @ other.full.T, threshold)
            slack = self.error + other.error + self.error * other.error + 2**-9 + ACCUMULATION
            i, j = torch.nonzero(self.coarse @ other.coarse.T >= threshold - slack, as_tuple=True)
            if len(i) > RECHECK_SHARE * self.full.shape[0] * other.full.shape[0]:  # a low threshold: most pairs
                return _above(self.full @ other.full.T, threshold)
            scores = torch.cat(
                [
                    _row_dots(self.full[i[s : s + RECHECK]], other.full[j[s : s + RECHECK]])
                    for s in range(0, len(i), RECHECK)
                ]
                or [torch.zeros(0)]
            )
            keep = scores >= threshold
            return i[keep].numpy(), j[keep].numpy(), scores[keep].numpy()


def _row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a[:, None, :], b[:, :, None])[:, 0, 0]


def _above(scores: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = torch.nonzero(scores >= threshold, as_tuple=True)
    return i.numpy(), j.numpy(), scores[i, j].numpy()


def _rows(fetch: Fetch, positions: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(fetch(positions), np.float32))
