"""The FAISS index: inner product on L2-normalised vectors (cosine similarity), ids = images.id.

Plain functions over arrays, in faiss's naming: `xb` database vectors, `xq` queries, `k`, results `(D, I)` with
`I` the int64 image ids (-1 where fewer than k exist).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from birder_index.indexer.layout import fsync_dir

logger = logging.getLogger(__name__)


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


def rerank_scores(vectors: np.ndarray, rows: np.ndarray, xq: np.ndarray, *, chunk: int = 16) -> np.ndarray:
    """Cosine of each unit query (nq, d) with the stored vectors of its candidate rows (nq, c).

    Many candidates are scored in torch: its row gather runs on every core where numpy's runs on one, and chunks
    of 16 queries keep the gathered rows in cache through the half->float copy, the product and the norms, in
    buffers that are reused. A few candidates (one CLI query) are scored in numpy, keeping torch
    out of it.
    """
    nq, c = rows.shape
    d = xq.shape[1]
    if nq * c * d < 1 << 21:
        v = vectors[rows.ravel()].astype(np.float32).reshape(nq, c, d)
        return np.einsum("qcd,qd->qc", v, xq) / np.maximum(np.linalg.norm(v, axis=2), 1e-12)
    import torch

    with warnings.catch_warnings():  # a read-only memory map: torch warns that it could write, and it never does
        warnings.simplefilter("ignore", UserWarning)
        store = torch.from_numpy(vectors)
    out = np.empty((nq, c), np.float32)
    raw = torch.empty(chunk * c, d, dtype=store.dtype)
    buf = torch.empty(chunk * c, d)
    q = torch.from_numpy(xq)
    all_rows = torch.from_numpy(np.ascontiguousarray(rows, np.int64))
    with torch.inference_mode():
        for start in range(0, nq, chunk):
            n = min(chunk, nq - start) * c
            torch.index_select(store, 0, all_rows[start : start + chunk].reshape(-1), out=raw[:n])
            buf[:n].copy_(raw[:n])
            v = buf[:n].view(-1, c, d)
            dots = torch.bmm(v, q[start : start + chunk, :, None])[..., 0]
            out[start : start + chunk] = (dots / v.norm(dim=2).clamp(min=1e-12)).numpy()
    return out


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
