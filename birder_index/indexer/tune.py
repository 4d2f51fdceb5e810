"""Measure what an index delivers and tune it: recall@k against exact search on held-out queries from the
collection itself, and the fastest (nprobe, k_factor) that reaches the target recall.

Queries are random collection vectors held out of training; each query's own id is excluded from both the exact and
the approximate neighbours, so recall measures the neighbours a user sees, not the trivial self-match.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# search(xq, k, nprobe, k_factor) -> (D, I)
SearchFn = Callable[[np.ndarray, int, int, int], tuple[np.ndarray, np.ndarray]]
K_FACTORS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# a setting is chosen when its recall clears the target by this many standard errors of the estimate: taking the
# first setting over the bar, measured on 1,000 queries, gave new queries 0.945 for a target of 0.95 at 1M
# (docs/index.md#tuning)
MARGIN = 2.0
PLATEAU = 0.002  # recall gained by doubling nprobe below which more lists cannot help (20 of 10,000 neighbours)


@dataclass(frozen=True)
class Tuning:
    nprobe: int
    k_factor: int
    recall: float  # recall@k at these settings
    qps: float  # queries per second: median of timed batches of all the tuning queries, through the users' search


@dataclass(frozen=True)
class Timing:
    """What a queries/s figure means: batches of `batch` queries on `threads` FAISS threads of a `cpus`-core
    machine, while other processes kept `busy_elsewhere` cores busy on average (None where /proc/stat is missing):
    other work on the machine lowers the rate."""

    batch: int
    threads: int
    cpus: int
    busy_elsewhere: float | None


class TimingContext:
    """Measures, around a block of timings, how busy the rest of the machine was."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self._start = _cpu_snapshot()

    def result(self) -> Timing:
        import faiss

        end = _cpu_snapshot()
        busy = None
        if self._start is not None and end is not None:
            (b0, s0, t0), (b1, s1, t1) = self._start, end
            busy = round(max(0.0, (b1 - b0) - (s1 - s0)) / max(t1 - t0, 1e-9), 2)
        return Timing(self.batch, faiss.omp_get_max_threads(), os.cpu_count() or 1, busy)


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(CPU seconds the whole machine was busy, of them this process's, wall clock), or None off Linux."""
    try:
        import resource

        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (ImportError, OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy, usage.ru_utime + usage.ru_stime, time.perf_counter()


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


def hits_per_query(I: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """How many of each query's true neighbours (gt rows, -1 padded) the returned ids I hold."""
    return np.array(
        [len(np.intersect1d(found[found >= 0], truth[truth >= 0])) for found, truth in zip(I, gt, strict=True)],
        np.float64,
    )


def recall_at(I: np.ndarray, gt: np.ndarray) -> float:
    """Mean fraction of the true k neighbours found in the k returned (recall@k)."""
    return float(hits_per_query(I, gt).sum()) / max(1, int((gt >= 0).sum()))


@dataclass(frozen=True)
class Recall:
    value: float  # recall@k over the queries
    error: float  # its standard error: the spread of the queries' own recalls over sqrt(queries)


def measure_recall(
    search: SearchFn, xq: np.ndarray, q_ids: np.ndarray, gt: np.ndarray, *, nprobe: int, k_factor: int
) -> Recall:
    """recall@k of `search` with room for the query itself (k + 1 asked, the query's own id dropped)."""
    k = gt.shape[1]
    _, I = search(xq, k + 1, nprobe, k_factor)
    hits, truths = hits_per_query(drop_self(I, q_ids, k), gt), np.maximum((gt >= 0).sum(1), 1)
    per_query = hits / truths
    error = float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
    return Recall(float(hits.sum()) / max(1, int((gt >= 0).sum())), error)


def queries_per_second(
    search: SearchFn, xq: np.ndarray, *, k: int, nprobe: int, k_factor: int, repeats: int = 3
) -> float:
    """The median rate of `repeats` batches of all of `xq` after one warm-up batch (page cache, lookup tables): one
    timing swung by 20 % between runs of the same index."""
    search(xq, k, nprobe, k_factor)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        search(xq, k, nprobe, k_factor)
        times.append(time.perf_counter() - t0)
    return len(xq) / max(statistics.median(times), 1e-9)


def tune(
    search: SearchFn,
    xq: np.ndarray,
    q_ids: np.ndarray,
    gt: np.ndarray,
    nlist: int,
    *,
    target: float,
    timed: SearchFn | None = None,
    check: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Tuning:
    """For each k_factor, the smallest power-of-two nprobe whose recall clears `target` by MARGIN standard errors;
    then the fastest of those. When no setting reaches the target, the most accurate one measured.

    `search` measures recall (asked k + 1 to make room for the query itself); `timed` (default `search`) is what
    users call, asked k, and is what the rates time. `check`: other queries (xq, ids, gt), not used to choose,
    whose recall and rate are the ones returned: the chosen setting's recall on the queries that chose it is
    biased upwards (the first setting over the bar is often over it by luck; docs/index.md#tuning).
    """
    timed = timed or search
    k = gt.shape[1]
    reached: list[tuple[int, int, float]] = []
    best: tuple[int, int, float] | None = None
    for k_factor in K_FACTORS:
        nprobe, previous = 1, -1.0
        while True:
            measured = measure_recall(search, xq, q_ids, gt, nprobe=nprobe, k_factor=k_factor)
            recall = measured.value
            logger.debug("nprobe %d k_factor %d: recall %.4f +- %.4f", nprobe, k_factor, recall, measured.error)
            if best is None or recall > best[2]:
                best = (nprobe, k_factor, recall)
            if recall >= min(target + MARGIN * measured.error, 1.0):
                reached.append((nprobe, k_factor, recall))
                break
            if nprobe >= nlist or (nprobe >= 4 and recall - previous < PLATEAU):
                break  # the lists probed already hold the neighbours: this k_factor's candidates cap the recall
            nprobe, previous = min(nprobe * 2, nlist), recall
        if reached and reached[-1][:2] == (1, k_factor):
            break  # larger k_factors cannot be faster than nprobe 1 with fewer candidates
    assert best is not None
    if not reached:
        logger.warning("recall@%d target %.3f not reached; best measured %.4f", k, target, best[2])
        reached = [best]
    rates = [queries_per_second(timed, xq, k=k, nprobe=nprobe, k_factor=kf) for nprobe, kf, _ in reached]
    nprobe, k_factor, recall = reached[int(np.argmax(rates))]
    if check is not None:
        xq, q_ids, gt = check
        recall = measure_recall(search, xq, q_ids, gt, nprobe=nprobe, k_factor=k_factor).value
    # the chosen setting timed again on its own: the figure `info` prints, not the best of several noisy ones
    return Tuning(
        nprobe, k_factor, recall, queries_per_second(timed, xq, k=k, nprobe=nprobe, k_factor=k_factor, repeats=5)
    )
