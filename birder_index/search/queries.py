"""Where a query becomes a vector: folders expanded to their images, indexed photos resolved to their stored
embedding (no model needed), other images decoded and embedded with the index's own backbone, loaded once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import INDEXED
from birder_index.errors import BirderIndexError
from birder_index.indexer.index import Index
from birder_index.indexer.scan import IMAGE_EXTENSIONS
from birder_index.progress import Progress
from birder_index.progress import silent

if TYPE_CHECKING:
    from birder_index.backbone.encoder import Encoder
    from birder_index.backbone.images import Decoded


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
    index: Index,
    queries: list[str],
    *,
    encoder: Encoder | None = None,
    exact: bool = False,
    stored: list[int | None] | None = None,
    device: str | None = None,
    progress: Progress = silent,
) -> np.ndarray:
    """Raw embeddings for query images: stored ones for unchanged indexed photos, else computed with `encoder`
    (default: the index's own, loaded on `device`). `stored`: the queries' `stored_ids`, where the caller has them
    already."""
    stored = stored_ids(index, queries) if stored is None else stored
    out = np.zeros((len(queries), index.model_row().embedding_dim), np.float32)
    have = [i for i, image_id in enumerate(stored) if image_id is not None]
    if have:
        out[have] = index.vectors(np.array([stored[i] for i in have], np.int64))
    todo = [i for i, image_id in enumerate(stored) if image_id is None]
    if todo:
        if encoder is None:
            progress("loading the model", 0, None)
        enc = encoder or index.load_encoder(device=device, progress=False)
        out[todo] = embed_files(enc, [queries[i] for i in todo], exact=exact, progress=progress)
    return out


def embed_files(
    encoder: Encoder, files: list[str], *, exact: bool = False, batch_size: int = 32, progress: Progress = silent
) -> np.ndarray:
    """Decode and embed image files in batches; a file that cannot be read is a one-line error naming it."""
    out = []
    for start in range(0, len(files), batch_size):
        progress("embedding the query images", start, len(files))
        pixels = []
        for f in files[start : start + batch_size]:
            if not os.path.isfile(f):
                raise BirderIndexError(f"query not found: {f} (not a file, a folder, or a path in the index)")
            pixels.append(decode_query(Path(f), encoder.info.preprocess.size, exact=exact, name=f).pixels)
        out.append(embed_pixels(encoder, pixels))
    return np.concatenate(out)


def decode_query(source: bytes | Path, size: tuple[int, int], *, exact: bool = False, name: str = "") -> Decoded:
    """A query image (a file, or bytes such as an upload) decoded as the build decodes photos; an image that cannot
    be read is a one-line error naming it and saying why."""
    from birder_index.backbone.images import decode
    from birder_index.errors import ImageError

    try:
        return decode(source, size, fast=not exact)
    except ImageError as e:
        what = f"query image {name}" if name else "the query image"
        raise BirderIndexError(f"cannot read {what}: {e}") from None


def embed_pixels(encoder: Encoder, pixels: list[np.ndarray]) -> np.ndarray:
    """Raw embeddings (n, d) of decoded query images (uint8 (3, H, W) each, at the model's size)."""
    import torch

    return encoder.embed(torch.stack([torch.from_numpy(p) for p in pixels])).numpy()


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
