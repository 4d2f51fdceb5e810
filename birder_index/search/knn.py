"""Where a collection is searched: nearest neighbours of vectors, of images, or of photos already indexed.

Queries become vectors in queries.py: a photo already indexed (unchanged since) uses its stored embedding and
needs no model; any other image is decoded and embedded with the index's own backbone, loaded once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.errors import BirderIndexError
from birder_index.indexer import ann
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.indexer.vectors import normalize
from birder_index.progress import Progress
from birder_index.progress import silent
from birder_index.search.queries import expand_queries
from birder_index.search.queries import query_vectors

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    id: int
    path: str
    score: float  # cosine similarity


@dataclass(frozen=True)
class QueryResult:
    query: str
    hits: list[Hit]


def nearest(
    index: Index, xq: np.ndarray, *, k: int = 10, nprobe: int | None = None, k_factor: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) for raw or normalised query vectors (n, d): D cosine similarities, I image ids (-1: none).

    Compressed indexes return k * k_factor candidates re-scored exactly from the embedding store; nprobe and
    k_factor default to the values tuned to the index's target recall.
    """
    xq = query_array(xq)
    d = index.model_row().embedding_dim
    if xq.shape[1] != d:
        raise BirderIndexError(f"query vectors have dimension {xq.shape[1]}, the index holds {d}")
    state = index.ann()
    nprobe = nprobe or state.params.get("nprobe")
    k_factor = k_factor or state.params.get("k_factor", 1)
    return ann.search_reranked(
        state.index, normalize(xq), k, nprobe, k_factor, rows_of=index.rows_of, vectors=index.store().array()
    )


def query_array(xq: object) -> np.ndarray:
    """Query vectors as float32 (n, d), refusing what cannot be one: text, other shapes, NaN or infinity (whose
    neighbours would be meaningless, silently)."""
    arr = np.asarray(xq)
    if arr.dtype.kind not in "fiub":
        raise BirderIndexError(f"query vectors must be numbers, got an array of {arr.dtype}")
    arr = np.atleast_2d(arr.astype(np.float32))
    if arr.ndim != 2:
        raise BirderIndexError(f"query vectors must be an (n, d) array, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise BirderIndexError(f"query vector {int(bad[0])} holds NaN or infinity ({len(bad)} such rows)")
    return arr


def hits_for(index: Index, D: np.ndarray, I: np.ndarray) -> list[list[Hit]]:
    """Attach paths to (D, I); ids the database no longer holds (deleted during a build) are dropped."""
    with session_scope(index.engine) as s:
        paths = q.paths_of(s, I.ravel())
    root = index.root
    out = []
    for drow, irow in zip(D, I, strict=True):
        out.append(
            [
                Hit(int(i), absolute_path(root, paths[int(i)]), float(dv))
                for dv, i in zip(drow, irow, strict=True)
                if int(i) in paths
            ]
        )
    return out


def search_vectors(
    index: Index, xq: np.ndarray, *, k: int = 10, nprobe: int | None = None, k_factor: int | None = None
) -> list[list[Hit]]:
    D, I = nearest(index, xq, k=k, nprobe=nprobe, k_factor=k_factor)
    return hits_for(index, D, I)


def search_images(
    index: Index,
    queries: list[str | Path],
    *,
    k: int = 10,
    nprobe: int | None = None,
    k_factor: int | None = None,
    exact: bool = False,
    encoder: Encoder | None = None,
    device: str | None = None,
    progress: Progress = silent,
) -> list[QueryResult]:
    """Nearest neighbours of image files, folders of images, or paths already in the index."""
    if k < 1:
        raise BirderIndexError(f"-k must be >= 1, got {k}")
    files = expand_queries(queries)
    xq = query_vectors(index, files, encoder=encoder, exact=exact, device=device, progress=progress)
    hits = search_vectors(index, xq, k=k, nprobe=nprobe, k_factor=k_factor)
    return [QueryResult(f, h) for f, h in zip(files, hits, strict=True)]


def search_vector_file(
    index: Index, path: Path, *, k: int = 10, nprobe: int | None = None, k_factor: int | None = None
) -> list[QueryResult]:
    """Queries from a .npy of raw vectors (n, d); each query is named `<file>[row]`."""
    try:
        xq = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BirderIndexError(f"cannot read vectors from {path}: {str(e).splitlines()[0]}") from None
    try:
        xq = query_array(xq)
    except BirderIndexError as e:
        raise BirderIndexError(f"{path}: {e}") from None
    hits = search_vectors(index, xq, k=k, nprobe=nprobe, k_factor=k_factor)
    return [QueryResult(f"{path}[{i}]", h) for i, h in enumerate(hits)]
