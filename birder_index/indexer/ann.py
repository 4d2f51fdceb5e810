"""The FAISS index: inner product on L2-normalised vectors (cosine similarity), ids = images.id.

Plain functions over arrays, in faiss's naming: `xb` database vectors, `xq` queries, `k`, results `(D, I)` with
`I` the int64 image ids (-1 where fewer than k exist).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from birder_index.indexer.layout import fsync_dir

logger = logging.getLogger(__name__)
_swig: Any = faiss  # the raw SWIG functions the re-rank calls, which faiss's type stubs lack


def new_index(factory: str, d: int) -> faiss.Index:
    """An empty index from a FAISS factory string, wrapped so it takes our ids (`add_with_ids`)."""
    base = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(base, faiss.IndexFlat):
        return faiss.IndexIDMap2(base)  # IDMap2 keeps a reverse map, so ids can be listed and removed
    return base


def is_trained(index: faiss.Index) -> bool:
    return bool(index.is_trained)


def add(index: faiss.Index, ids: np.ndarray, xb: np.ndarray) -> None:
    """Add L2-normalised float32 vectors under int64 ids."""
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(xb, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index: faiss.Index, ids: np.ndarray) -> int:
    if not len(ids):
        return 0
    return int(index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))


def ids_in(index: faiss.Index) -> np.ndarray:
    """Every id stored in the index, sorted (used to reconcile the index with the database)."""
    if isinstance(index, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))
    ivf = faiss.extract_index_ivf(index)
    invlists: Any = ivf.invlists  # faiss's stubs type it Optional and lack release_ids
    parts = []
    for list_no in range(ivf.nlist):
        n = invlists.list_size(list_no)
        if n:
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, n).copy())
            invlists.release_ids(list_no, ptr)
    return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, np.int64)


def search(index: faiss.Index, xq: np.ndarray, k: int, *, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) for L2-normalised float32 queries: D cosine similarities (approximate for compressed indexes)."""
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if index.ntotal == 0 or k <= 0:
        return np.full((len(xq), max(k, 0)), -np.inf, np.float32), np.full((len(xq), max(k, 0)), -1, np.int64)
    params = None
    if nprobe is not None and is_gpu(index):
        gpu_index: Any = index
        gpu_index.nprobe = nprobe  # GPU indexes take it as an attribute
    elif nprobe is not None and _is_ivf(index):
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
    D, I = index.search(xq, k, params=params)
    return D, I


def is_gpu(index: faiss.Index) -> bool:
    """A FAISS GPU index (searched on the GPU; changed only by cloning it again from the CPU index)."""
    return type(index).__name__.startswith("Gpu")


def gpu_available() -> bool:
    """A GPU build of FAISS and a GPU to run it on."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index: faiss.Index) -> faiss.Index:
    """The index cloned to GPU 0 for searching where FAISS can (not fast-scan codes); else the index as is."""
    if not gpu_available():
        return index
    try:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    except RuntimeError as e:  # e.g. IVF fast-scan has no GPU implementation
        logger.info("searching on the CPU: %s", str(e).splitlines()[0])
        return index


def search_reranked(
    index: faiss.Index,
    xq: np.ndarray,
    k: int,
    nprobe: int | None,
    k_factor: int,
    *,
    rows_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    vectors: np.ndarray,
    candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k * k_factor candidates (or `candidates`) from the (compressed) index, re-scored exactly: recall is not
    capped by PQ error.

    `rows_of(ids)` gives (store rows, found mask) of candidate ids; `vectors` is the (memory-mapped) store of raw
    embeddings; `xq` is L2-normalised.
    """
    if k_factor <= 1 or len(vectors) == 0:
        return search(index, xq, k, nprobe=nprobe)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    _, cand = search(index, xq, candidates or k * k_factor, nprobe=nprobe)
    rows, found = rows_of(cand.ravel())
    found &= cand.ravel() >= 0
    rows = np.where(found, rows, 0).reshape(cand.shape)
    scores = rerank_scores(vectors, rows, xq)
    scores[~found.reshape(cand.shape)] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    D = np.take_along_axis(scores, top, 1)
    return D, np.where(np.isfinite(D), np.take_along_axis(cand, top, 1), -1)


def rerank_scores(vectors: np.ndarray, rows: np.ndarray, xq: np.ndarray, *, chunk: int = 8) -> np.ndarray:
    """Cosine of each unit query (nq, d) with the stored vectors of its candidate rows (nq, c).

    FAISS's own kernels do the arithmetic and no second thread pool (torch's) wakes to fight FAISS's for the cores
    (docs/benchmarks.md#search-speed). `chunk` queries at a time, their candidate rows are copied out of the
    memory-mapped store into a buffer reused across chunks (small enough to stay in cache), widened to float32
    there (the float16 store), normalised, and dotted with their query. A large batch is split between as many
    threads as FAISS may use, each running FAISS single-threaded on its share: one parallel section per batch,
    not three OpenMP ones per chunk.
    """
    nq, c = rows.shape
    out = np.empty((nq, c), np.float32)
    if nq == 0 or c == 0:
        return out
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    workers = min(faiss.omp_get_max_threads(), nq // chunk)
    if workers <= 1:
        _rerank_range(vectors, rows, xq, out, chunk)
        return out
    bounds = np.linspace(0, nq, workers + 1).astype(int)
    parts = [slice(bounds[i], bounds[i + 1]) for i in range(workers)]
    for done in _pool(workers).map(lambda p: _rerank_range(vectors, rows[p], xq[p], out[p], chunk), parts):
        del done  # map re-raises a worker's exception here
    return out


def _rerank_range(vectors: np.ndarray, rows: np.ndarray, xq: np.ndarray, out: np.ndarray, chunk: int) -> None:
    """rerank_scores for one share of the queries, into `out` (a view of the caller's array)."""
    nq, c = rows.shape
    d = xq.shape[1]
    per = max(1, min(chunk, nq))
    wide = np.empty((per * c, d), np.float32)
    narrow = wide if vectors.dtype == np.float32 else np.empty((per * c, d), vectors.dtype)
    widen = None if narrow is wide else _widener(vectors.dtype, d)
    local = np.arange(per * c, dtype=np.int64).reshape(per, c)
    for start in range(0, nq, per):
        q = min(per, nq - start)
        m = q * c
        np.take(vectors, rows[start : start + q].ravel(), axis=0, out=narrow[:m])
        if widen is not None:
            widen.decode_c(faiss.swig_ptr(narrow[:m].view(np.uint8)), faiss.swig_ptr(wide), m)
        _swig.fvec_renorm_L2(d, m, faiss.swig_ptr(wide))
        _swig.fvec_inner_products_by_idx(
            faiss.swig_ptr(out[start : start + q]),
            faiss.swig_ptr(xq[start : start + q]),
            faiss.swig_ptr(wide),
            faiss.swig_ptr(local[:q]),
            d,
            q,
            c,
        )


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads kept for re-ranking, each limited to one FAISS (OpenMP) thread: the setting is per thread."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(
            workers, "birder-index-rerank", initializer=faiss.omp_set_num_threads, initargs=(1,)
        )
    return _POOLS[workers]


def _widener(dtype: np.dtype, d: int) -> Any:
    """A FAISS scalar quantizer whose decode turns stored rows of `dtype` into float32 (SIMD, no training)."""
    kinds = {np.dtype(np.float16): faiss.ScalarQuantizer.QT_fp16}
    if dtype not in kinds:
        raise ValueError(f"no float32 decoder for a {dtype} store")
    return faiss.ScalarQuantizer(d, kinds[dtype])


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def save(index: faiss.Index, path: Path) -> None:
    """Write atomically: a temporary file, fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))
