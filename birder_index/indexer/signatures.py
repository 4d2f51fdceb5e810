"""The signature stores: per embedding-store row, the photo's colour signature (backbone/colour.py) and its
thumbnail (backbone/thumbnail.py), with the same row numbers as the embedding store.

Each is written with the vectors, before the commit that records every store's length (meta `store_rows`,
`colour_rows`, `thumb_rows`), so a killed build leaves at most a torn tail here too. Rows past a store's committed
length have no signature (an index built before that signature existed, imported embeddings): they read as
zeros, which dedup's colour check lets pass and its thumbnail check never matches. The next build pads them with
zeros before it appends, so row numbers stay aligned with the embedding store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.indexer.vectors import VectorStore


@dataclass(frozen=True)
class Signature:
    file: str
    dim: int
    meta: MetaKey  # the meta key holding the committed length
    name: str


COLOURS = Signature("colours.u8", SIGNATURE_DIM, MetaKey.COLOUR_ROWS, "colour store")
THUMBNAILS = Signature("thumbs.u8", THUMB_DIM, MetaKey.THUMB_ROWS, "thumbnail store")


def signature_store(index_dir: Path, kind: Signature, rows: int) -> VectorStore:
    return VectorStore(index_dir / kind.file, kind.dim, "uint8", rows, label=kind.name)


def committed_store(index_dir: Path, engine: Engine, kind: Signature) -> VectorStore:
    """A signature store as committed (for readers)."""
    with session_scope(engine) as s:
        return signature_store(index_dir, kind, q.get_int(s, kind.meta))


def open_for_append(index_dir: Path, engine: Engine, kind: Signature, store_rows: int) -> VectorStore:
    """A signature store, its torn tail cut and padded with unknown rows up to the embedding store's length."""
    store = committed_store(index_dir, engine, kind)
    store.drop_torn_tail()
    if store.rows < store_rows:
        store.append(np.zeros((store_rows - store.rows, kind.dim), np.uint8))
        with session_scope(engine) as s:
            q.set_meta(s, kind.meta, store.rows)
    return store


def read_signatures(store: VectorStore, rows: np.ndarray) -> np.ndarray:
    """uint8 (len(rows), dim) for store rows; rows without a signature are zeros."""
    rows = np.asarray(rows, np.int64)
    out = np.zeros((len(rows), store.dim), np.uint8)
    have = rows < store.rows
    if have.any():
        out[have] = store.get(rows[have], dtype=np.uint8)
    return out


def lost_rows(store: VectorStore) -> int:
    """Committed rows missing from the file (a damaged or deleted store); `verify` reports them."""
    size = store.path.stat().st_size if store.path.exists() else 0
    return max(0, store.rows - size // store.row_bytes)


def repair(index_dir: Path, engine: Engine, kind: Signature, *, max_rows: int | None = None) -> int:
    """Cut a torn tail; forget signatures the file lost (they read as unknown, later builds pad) and, with
    `max_rows`, those past the embedding store's rows (it lost rows). -> rows lost from the file."""
    store = committed_store(index_dir, engine, kind)
    lost = lost_rows(store)
    keep = store.rows - lost if max_rows is None else min(store.rows - lost, max_rows)
    if keep != store.rows:
        with session_scope(engine) as s:
            q.set_meta(s, kind.meta, keep)
        store = signature_store(index_dir, kind, keep)
    store.drop_torn_tail()
    return lost


def unsigned(store: VectorStore, rows: np.ndarray, *, block: int = 1 << 18) -> int:
    """How many of these store rows have no signature (past the store, or padded with zeros)."""
    rows = np.asarray(rows, np.int64)
    covered = rows[rows < store.rows]
    arr = store.array()
    empty = np.zeros(store.rows, bool)
    for start in range(0, store.rows, block):  # the uint8 map in blocks: bounded memory at any size
        empty[start : start + block] = ~arr[start : start + block].any(axis=1)
    return int(len(rows) - len(covered) + np.count_nonzero(empty[covered]))
