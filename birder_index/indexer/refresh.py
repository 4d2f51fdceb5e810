"""Writer stage for FAISS: bring the index file up to the database's committed state.

When the rules (select.py) call for a new index (first build, N crossed the exact-search limit, 4x growth,
`reindex`), one is trained on a random sample of the store, filled from the store, and tuned to the target recall
(tune.py). Otherwise the current file is updated: vectors added and removed, no retraining.

A new file is written under a new name (temporary name, fsync, rename), then the manifest is pointed at it in one
database commit, then the old file is deleted. A crash at any point leaves the manifest naming a complete file.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from birder_index.backbone.cpu import usable_cores
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.distributed.cluster import RaySettings
from birder_index.distributed.cluster import require_ray
from birder_index.indexer import ann
from birder_index.indexer.index import ROW_MAP_SUFFIX
from birder_index.indexer.index import AnnState
from birder_index.indexer.index import Index
from birder_index.indexer.index import dense_row_map
from birder_index.indexer.lock import WriterLock
from birder_index.indexer.select import DEFAULT_MEMORY
from birder_index.indexer.select import IndexPlan
from birder_index.indexer.select import choose_index
from birder_index.indexer.select import needs_retraining
from birder_index.indexer.tune import TimingContext
from birder_index.indexer.tune import Tuning
from birder_index.indexer.tune import drop_self
from birder_index.indexer.tune import exact_knn
from birder_index.indexer.tune import measure_recall
from birder_index.indexer.tune import queries_per_second
from birder_index.indexer.tune import tune
from birder_index.indexer.vectors import normalize
from birder_index.indexer.vectors import save_array

logger = logging.getLogger(__name__)

DEFAULT_TARGET_RECALL = 0.95
TUNING_QUERIES = 1000  # held-out collection vectors that choose nprobe and k_factor, and as many again whose
# recall and rate are the ones recorded (`info`): the choosing queries' own recall flatters the choice
RETUNE_GROWTH = 0.25  # re-tune (not retrain) when the collection changed by more than this since the last tuning


@dataclass(frozen=True)
class RefreshReport:
    factory: str
    vectors: int
    retrained: bool
    seconds: float
    recall: float | None = None
    qps: float | None = None
    train_seconds: float = 0.0  # k-means and PQ training (0 when the index was updated, not trained)
    add_seconds: float = 0.0
    tune_seconds: float = 0.0


def refresh_ann(
    index: Index, *, retrain: bool = False, rebuild: bool = False, retune: bool = False,
    ray: RaySettings | None = None,
) -> RefreshReport:  # fmt: skip
    """Write a FAISS index holding exactly the indexed images. `rebuild`: even if the manifest says it is current
    (verify --repair); `retrain`: choose and train a new index from the store (reindex); `retune`: tune nprobe and
    k_factor again, keeping the trained index (reindex --tune-only); `ray`: a new IVF index is filled by Ray tasks
    (ray_add.py)."""
    t0 = time.perf_counter()
    faiss.omp_set_num_threads(usable_cores())
    with session_scope(index.engine) as s:
        generation = q.get_int(s, MetaKey.GENERATION)
        manifest = q.get_manifest(s)
        max_memory = q.get_int(s, MetaKey.MAX_INDEX_MEMORY, default=DEFAULT_MEMORY)
        target = float(q.get_meta(s, MetaKey.TARGET_RECALL) or DEFAULT_TARGET_RECALL)
    exists = manifest is not None and (index.dir / manifest.file).exists()
    if exists and manifest is not None and manifest.generation == generation and not (retrain or rebuild or retune):
        return RefreshReport(manifest.factory, manifest.vector_count, False, 0.0)
    index.invalidate()  # this refresh follows writes: re-read them
    ids, _ = index.id_rows()
    d = index.model_row().embedding_dim
    gpu = ann.gpu_available()
    fresh = retrain or not exists or manifest is None
    if not fresh and manifest is not None:
        fresh = needs_retraining(manifest.factory, manifest.trained_on, len(ids), d, max_memory, gpu=gpu)
    timings = {"train_seconds": 0.0, "add_seconds": 0.0}
    if fresh:
        plan = choose_index(len(ids), d, max_memory=max_memory, gpu=gpu)
        state = _train(index, plan, gpu, timings, ray)
        trained_on = len(ids)
    else:
        assert manifest is not None
        state = index.load_ann_file(manifest.file, manifest.factory, json.loads(manifest.params))
        index.catch_up(state)
        trained_on = manifest.trained_on
    t_tune = time.perf_counter()
    recall, qps = _tuned(index, state, target, force=fresh or retune, previous=manifest)
    tune_seconds = time.perf_counter() - t_tune
    name = f"index-{generation}-{uuid.uuid4().hex[:6]}.faiss"
    ann.save(state.index, index.dir / name)
    save_array(state.row_map, index.dir / (name + ROW_MAP_SUFFIX))
    n = int(state.index.ntotal)
    with session_scope(index.engine) as s:
        q.set_manifest(
            s,
            file=name,
            generation=generation,
            factory=state.factory,
            params=json.dumps(state.params),
            vector_count=n,
            trained_on=trained_on,
            recall_at_10=recall,
            queries_per_second=qps,
            bytes_per_vector=(index.dir / name).stat().st_size / n if n else None,
        )
    if manifest is not None and manifest.file != name:
        (index.dir / manifest.file).unlink(missing_ok=True)
        (index.dir / (manifest.file + ROW_MAP_SUFFIX)).unlink(missing_ok=True)
    index.invalidate()
    index._ann = state
    seconds = time.perf_counter() - t0
    logger.info("FAISS %s index with %d vectors written in %.1fs", state.factory, n, seconds)
    return RefreshReport(state.factory, n, fresh, seconds, recall, qps, tune_seconds=tune_seconds, **timings)


def _train(index: Index, plan: IndexPlan, gpu: bool, timings: dict[str, float], ray: RaySettings | None) -> AnnState:
    """A new index: trained on a random sample of the store (never the first N), then every vector added (by Ray
    tasks with `ray`, for an IVF index on a CPU: an exact index is small, a GPU adds faster than a cluster)."""
    ids, rows = index.id_rows()
    d = index.model_row().embedding_dim
    cpu_index = ann.new_index(plan.factory, d)
    target: Any = cpu_index
    if gpu and not plan.exact:
        target = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu_index)
    if not plan.exact:
        sample = training_positions(len(ids), plan.training_points)
        t0 = time.perf_counter()
        target.train(normalize(index.store().get(rows[sample])))
        timings["train_seconds"] = time.perf_counter() - t0
        logger.info("trained %s on %d vectors in %.1fs", plan.factory, len(sample), timings["train_seconds"])
    t0 = time.perf_counter()
    if ray is not None and not plan.exact and target is cpu_index:
        from birder_index.indexer.ray_add import add_on_ray  # Ray loads only for --ray

        cpu_index = target = add_on_ray(cpu_index, index.store().reader(rows), ids, settings=ray)
    else:
        for start, block in index.store().blocks(rows):
            ann.add(target, ids[start : start + len(block)], normalize(block))
    timings["add_seconds"] = time.perf_counter() - t0
    if target is not cpu_index:
        cpu_index = faiss.index_gpu_to_cpu(target)  # the saved index is always a CPU index
    params: dict[str, Any] = {} if plan.exact else {"nlist": plan.nlist, "m": plan.m, "nbits": plan.nbits}
    return AnnState(cpu_index, plan.factory, params, dense_row_map(ids, rows))


def training_positions(n: int, points: int) -> np.ndarray:
    """A random sample of `points` positions (in id order) to train on, never the first N, and without the tuning
    queries when the collection can spare them: vectors an index was trained on are easier queries for it, so
    tuning on them overstated the recall of new ones."""
    pool = np.setdiff1d(np.arange(n), tuning_positions(n))
    if len(pool) < points:
        pool = np.arange(n)
    return np.sort(np.random.default_rng(0).choice(pool, points, replace=False))


def tuning_positions(n: int) -> np.ndarray:
    """The positions (in id order) of the collection vectors that tune the index (every other one chooses, the rest
    check), and that training leaves out."""
    return np.sort(np.random.default_rng(1).choice(n, min(2 * TUNING_QUERIES, n), replace=False))


def _tuned(
    index: Index, state: AnnState, target: float, force: bool, previous: Any
) -> tuple[float | None, float | None]:
    """Tune nprobe and k_factor when the index is new or the collection changed a lot; returns (recall, q/s)."""
    n = int(state.index.ntotal)
    tuned_at = int(state.params.get("tuned_at", 0))
    if not force and previous is not None and abs(n - tuned_at) <= RETUNE_GROWTH * max(tuned_at, 1):
        return previous.recall_at_10, previous.queries_per_second
    if n < 2:
        return None, None
    ids, rows = index.id_rows()
    q_pos = tuning_positions(len(ids))
    xq = normalize(index.store().get(rows[q_pos]))
    q_ids = ids[q_pos]
    k = min(10, n - 1)
    blocks = ((ids[s : s + len(b)], normalize(b)) for s, b in index.store().blocks(rows))
    gt = drop_self(exact_knn(xq, blocks, k + 1), q_ids, k)

    def search(x: np.ndarray, kk: int, nprobe: int, k_factor: int) -> tuple[np.ndarray, np.ndarray]:
        # kk = k + 1 makes room for the query itself; the other k see exactly the k * k_factor candidates of a
        # user's k-query, not (k + 1) * k_factor, which flattered the tuned recall
        cands = (kk - 1) * k_factor + 1
        return ann.search_reranked(
            state.index, x, kk, nprobe, k_factor, rows_of=index.rows_of, vectors=index.store().array(), candidates=cands
        )

    def users_search(x: np.ndarray, kk: int, nprobe: int, k_factor: int) -> tuple[np.ndarray, np.ndarray]:
        # what search.nearest runs for a user's batch: the rate `info` prints is this one's
        return ann.search_reranked(
            state.index, x, kk, nprobe, k_factor, rows_of=index.rows_of, vectors=index.store().array()
        )

    choose, check = slice(0, None, 2), slice(1, None, 2)  # the positions are a random draw: alternate ones split it
    timing = TimingContext(len(xq[check]) or len(xq))
    nlist = int(state.params.get("nlist", 0))
    if nlist == 0:  # exact: recall 1.0 by construction; measure the speed
        recall = measure_recall(search, xq, q_ids, gt, nprobe=1, k_factor=1).value
        t = Tuning(1, 1, recall, queries_per_second(users_search, xq[choose], k=k, nprobe=1, k_factor=1))
    else:
        held = (xq[check], q_ids[check], gt[check]) if len(q_ids) > 1 else None
        t = tune(search, xq[choose], q_ids[choose], gt[choose], nlist, target=target, timed=users_search, check=held)
        state.params.update(nprobe=t.nprobe, k_factor=t.k_factor)
    state.params.update(tuned_at=n, timing=asdict(timing.result()))
    logger.info("tuned: recall@%d %.4f at %.0f queries/s (%s)", k, t.recall, t.qps, state.params)
    return t.recall, t.qps


def stale_files(index: Index) -> list[str]:
    """What killed writers leave behind: temporary files and FAISS files (and row maps) no manifest names."""
    with session_scope(index.engine) as s:
        manifest = q.get_manifest(s)
    keep = {manifest.file, manifest.file + ROW_MAP_SUFFIX} if manifest is not None else set()
    return sorted(
        path.name
        for path in index.dir.iterdir()
        if path.name.endswith(".tmp") or (path.name.startswith("index-") and path.name not in keep)
    )


def remove_stale_files(index: Index) -> list[str]:
    """Delete `stale_files` (writers call it under the lock, before they write)."""
    removed = stale_files(index)
    for name in removed:
        (index.dir / name).unlink(missing_ok=True)
    return removed


def set_index_options(index: Index, *, max_index_memory: int | None = None, target_recall: float | None = None) -> None:
    """Record the memory budget and target recall that later trainings and tunings use."""
    with session_scope(index.engine) as s:
        if max_index_memory is not None:
            q.set_meta(s, MetaKey.MAX_INDEX_MEMORY, max_index_memory)
        if target_recall is not None:
            q.set_meta(s, MetaKey.TARGET_RECALL, target_recall)


def reindex(
    index: Index,
    *,
    max_index_memory: int | None = None,
    target_recall: float | None = None,
    tune_only: bool = False,
    ray: str | RaySettings | None = None,
) -> RefreshReport:
    """Choose, train and tune the FAISS index again from the embedding store, under the writer lock. `tune_only`:
    keep the trained index and tune it again (to a new target recall, say: minutes where training takes an hour).
    `ray`: fill a new index with Ray tasks ("auto", an address, or RaySettings; docs/scale.md)."""
    settings = RaySettings(address=ray) if isinstance(ray, str) else ray
    if settings is not None:
        require_ray()  # before any work: the one-line error naming the extra
    with WriterLock(index.dir, engine=index.engine):
        remove_stale_files(index)  # what an interrupted reindex left
        set_index_options(index, max_index_memory=max_index_memory, target_recall=target_recall)
        return refresh_ann(index, retrain=not tune_only, retune=tune_only, ray=settings)
