"""Where a collection is searched: nearest neighbours of vectors, of images, or of photos already indexed.

A query that names an indexed photo (unchanged since) uses its stored embedding, so it needs no model; any other
image is decoded and embedded with the index's own backbone, loaded once for all queries.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import INDEXED
from birder_index.errors import BirderIndexError
from birder_index.indexer import ann
from birder_index.indexer.index import Index
from birder_index.indexer.index import absolute_path
from birder_index.indexer.scan import IMAGE_EXTENSIONS
from birder_index.indexer.vectors import normalize

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
    index: Index, xq: np.ndarray, k: int = 10, nprobe: int | None = None, k_factor: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) for raw or normalised query vectors (n, d): D cosine similarities, I image ids (-1: none).

    Compressed indexes return k * k_factor candidates re-scored exactly from the embedding store; nprobe and
    k_factor default to the values tuned to the index's target recall.
    """
    xq = np.atleast_2d(np.asarray(xq, dtype=np.float32))
    d = index.model_row().embedding_dim
    if xq.shape[1] != d:
        raise BirderIndexError(f"query vectors have dimension {xq.shape[1]}, the index holds {d}")
    state = index.ann()
    nprobe = nprobe or state.params.get("nprobe")
    k_factor = k_factor or state.params.get("k_factor", 1)
    return ann.search_reranked(state.index, normalize(xq), k, nprobe, k_factor, index.rows_of, index.store().array())


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
    index: Index, xq: np.ndarray, k: int = 10, nprobe: int | None = None, k_factor: int | None = None
) -> list[list[Hit]]:
    D, I = nearest(index, xq, k, nprobe, k_factor)
    return hits_for(index, D, I)


def expand_queries(queries: list[str | Path]) -> list[str]:
    """Folders become the images inside them (sorted); files and indexed paths are kept as given."""
    out: list[str] = []
    for query in queries:
        path = Path(query)
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise BirderIndexError(f"no images in folder {query}")
            out.extend(found)
        else:
            out.append(str(query))
    return out


def query_vectors(
    index: Index, queries: list[str], encoder: Encoder | None = None, exact: bool = False,
    stored: list[int | None] | None = None, **encoder_kwargs: object,
) -> np.ndarray:  # fmt: skip
    """Raw embeddings for query images: stored ones for unchanged indexed photos, else computed. `stored`: the
    queries' `stored_ids`, where the caller has them already."""
    stored = stored_ids(index, queries) if stored is None else stored
    out = np.zeros((len(queries), index.model_row().embedding_dim), np.float32)
    have = [i for i, image_id in enumerate(stored) if image_id is not None]
    if have:
        out[have] = index.vectors(np.array([stored[i] for i in have], np.int64))
    todo = [i for i, image_id in enumerate(stored) if image_id is None]
    if todo:
        enc = encoder or index.load_encoder(**encoder_kwargs)  # type: ignore[arg-type]
        out[todo] = embed_files(enc, [queries[i] for i in todo], exact=exact)
    return out


def embed_files(encoder: Encoder, files: list[str], exact: bool = False, batch_size: int = 32) -> np.ndarray:
    """Decode and embed image files in batches; a file that cannot be read is a one-line error naming it."""
    import torch

    from birder_index.backbone.images import decode
    from birder_index.errors import ImageError

    out = []
    for start in range(0, len(files), batch_size):
        pixels = []
        for f in files[start : start + batch_size]:
            if not os.path.isfile(f):
                raise BirderIndexError(f"query not found: {f} (not a file, a folder, or a path in the index)")
            try:
                pixels.append(torch.from_numpy(decode(Path(f), encoder.info.preprocess.size, fast=not exact).pixels))
            except ImageError as e:
                raise BirderIndexError(f"cannot read query image {f}: {e}") from None
        out.append(encoder.embed(torch.stack(pixels)).numpy())
    return np.concatenate(out)


def stored_ids(index: Index, queries: list[str]) -> list[int | None]:
    """The indexed image id for each query naming an indexed photo whose file is unchanged (or gone), else None."""
    root = index.root
    out: list[int | None] = []
    with session_scope(index.engine) as s:
        for query in queries:
            rel = _relative(root, query)
            row = q.image_by_path(s, rel) if rel is not None else None
            if row is None or row.status != INDEXED:
                out.append(None)
                continue
            try:
                st = os.stat(query)
                unchanged = (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns)
            except OSError:
                unchanged = not os.path.exists(query)  # a path only the index knows: use what it stored
            out.append(row.id if unchanged else None)
    return out


def _relative(root: Path | None, query: str) -> str | None:
    if root is None:
        return query
    try:
        return Path(os.path.abspath(query)).relative_to(root).as_posix()
    except ValueError:
        return query if not os.path.isabs(query) else None


def search_images(
    index: Index,
    queries: list[str | Path],
    k: int = 10,
    nprobe: int | None = None,
    k_factor: int | None = None,
    exact: bool = False,
    encoder: Encoder | None = None,
    device: str | None = None,
) -> list[QueryResult]:
    """Nearest neighbours of image files, folders of images, or paths already in the index."""
    if k < 1:
        raise BirderIndexError(f"-k must be >= 1, got {k}")
    files = expand_queries(queries)
    xq = query_vectors(index, files, encoder, exact=exact, device=device)
    hits = search_vectors(index, xq, k, nprobe, k_factor)
    return [QueryResult(f, h) for f, h in zip(files, hits, strict=True)]


def search_vector_file(
    index: Index, path: Path, k: int = 10, nprobe: int | None = None, k_factor: int | None = None
) -> list[QueryResult]:
    """Queries from a .npy of raw vectors (n, d); each query is named `<file>[row]`."""
    try:
        xq = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BirderIndexError(f"cannot read vectors from {path}: {str(e).splitlines()[0]}") from None
    xq = np.atleast_2d(xq)
    if xq.ndim != 2:
        raise BirderIndexError(f"{path} holds an array of shape {xq.shape}, expected (n, d)")
    hits = search_vectors(index, xq, k, nprobe, k_factor)
    return [QueryResult(f"{path}[{i}]", h) for i, h in enumerate(hits)]
