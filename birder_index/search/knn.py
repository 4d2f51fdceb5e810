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
    index: Index, xq: np.ndarray, *, k: int = 10, nprobe: int | None = None, k_factor: int | None = None,
    among: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(D, I) for raw or normalised query vectors (n, d): D cosine similarities, I image ids (-1: none).

    Compressed indexes return k * k_factor candidates re-scored exactly from the embedding store; nprobe and
    k_factor default to the values tuned to the index's target recall. `among`: only these image ids (a folder,
    a class; `matching_ids`) can be neighbours: searched exactly when they are few, else filtered from a deeper
    search of the whole index, and exactly where that found too few.
    """
    xq = query_array(xq)
    d = index.model_row().embedding_dim
    if xq.shape[1] != d:
        raise BirderIndexError(f"query vectors have dimension {xq.shape[1]}, the index holds {d}")
    if among is not None:
        return _nearest_among(index, normalize(xq), np.asarray(among, np.int64), k=k, nprobe=nprobe)
    state = index.ann()
    nprobe = nprobe or state.params.get("nprobe")
    k_factor = k_factor or state.params.get("k_factor", 1)
    return ann.search_reranked(
        state.index, normalize(xq), k, nprobe, k_factor, rows_of=index.rows_of, vectors=index.store().array()
    )


# Up to this many ids, a filtered search scores them all exactly (about 30 ms for 200,000 x 512 on 2 cores); a
# larger subset is first looked for among the whole index's nearest, which costs the same whatever its size.
EXACT_AMONG_MAX = 200_000
DEEPEST = 4096  # neighbours of the whole index searched for a filtered query before scoring the subset exactly


def _nearest_among(
    index: Index, xq: np.ndarray, among: np.ndarray, *, k: int, nprobe: int | None
) -> tuple[np.ndarray, np.ndarray]:
    among = np.unique(among)
    total = int(index.ann().index.ntotal)  # not id_rows(): a million ids read from the database
    if len(among) > EXACT_AMONG_MAX and total:
        depth = min(total, DEEPEST, k * int(np.ceil(2 * total / len(among))))
        D, I = nearest(index, xq, k=depth, nprobe=nprobe)
        inside = np.isin(I, among)
        if (inside.sum(axis=1) >= min(k, len(among))).all():
            order = np.argsort(~inside, axis=1, kind="stable")[:, :k]  # the subset's hits, best first
            D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
            hit = np.take_along_axis(inside, order, 1)
            return np.where(hit, D, -np.inf).astype(np.float32), np.where(hit, I, -1)
    return exact_among(index, xq, among, k=k)


def exact_among(
    index: Index, xq: np.ndarray, ids: np.ndarray, *, k: int, block: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) of L2-normalised queries against the stored vectors of `ids` only, exactly, a block at a time."""
    nq = len(xq)
    best_d = np.full((nq, k), -np.inf, np.float32)
    best_i = np.full((nq, k), -1, np.int64)
    for start in range(0, len(ids), block):
        chunk = ids[start : start + block]
        vectors, found = index.fetch_normalized(chunk)
        scores = xq @ vectors.T
        scores[:, ~found] = -np.inf
        d = np.concatenate([best_d, scores], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(chunk, scores.shape)], axis=1)
        top = np.argsort(-d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d, top, 1), np.take_along_axis(i, top, 1)
    return best_d, np.where(np.isfinite(best_d), best_i, -1)


def matching_ids(index: Index, *, folder: str | None = None, label: tuple[str, str] | None = None) -> np.ndarray | None:
    """The indexed ids in a folder of the collection (relative, or below it) and/or labelled (set, label): the
    `among` of a filtered search; None when no filter is given."""
    if not folder and label is None:
        return None
    out: np.ndarray | None = None
    with session_scope(index.engine) as s:
        if folder:
            out = q.indexed_ids_under(s, folder_of(index, folder))
        if label is not None:
            labelled = q.labelled_ids(s, label[0], label[1])
            out = labelled if out is None else np.intersect1d(out, labelled)
    return out


def folder_of(index: Index, folder: str) -> str:
    """A folder given as the user sees it (relative to the photo folder, or absolute inside it) as stored paths
    begin: relative, "/"-separated, no leading or trailing slash."""
    root = index.root
    path = Path(folder)
    if path.is_absolute() and root is not None:
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            raise BirderIndexError(f"folder {folder} is not inside the photo folder {root}") from None
    rel = path.as_posix().strip("/")
    return "" if rel == "." else rel


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
    index: Index, xq: np.ndarray, *, k: int = 10, nprobe: int | None = None, k_factor: int | None = None,
    among: np.ndarray | None = None,
) -> list[list[Hit]]:  # fmt: skip
    D, I = nearest(index, xq, k=k, nprobe=nprobe, k_factor=k_factor, among=among)
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
