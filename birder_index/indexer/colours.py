"""The colour store: each embedding-store row's colour signature (backbone/colour.py), with the same row numbers.

It is written with the vectors, before the commit that records both lengths (meta `store_rows`, `colour_rows`),
so a killed build leaves at most a torn tail here too. Rows past `colour_rows` have no signature (an index built
before signatures existed, imported embeddings): they read as zeros, which dedup's colour check lets pass. The
next build pads them with zeros before it appends, so row numbers stay aligned with the embedding store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from birder_index.backbone.colour import CHROMA_DIM
from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.indexer.vectors import VectorStore

COLOUR_FILE = "colours.u8"


def colour_store(index_dir: Path, rows: int) -> VectorStore:
    return VectorStore(index_dir / COLOUR_FILE, SIGNATURE_DIM, "uint8", rows, "colour store")


def committed_colour_store(index_dir: Path, engine: Engine) -> VectorStore:
    """The colour store as committed (for readers)."""
    with session_scope(engine) as s:
        return colour_store(index_dir, q.get_int(s, "colour_rows"))


def open_for_append(index_dir: Path, engine: Engine, store_rows: int) -> VectorStore:
    """The colour store, its torn tail cut and padded with unknown rows up to the embedding store's length."""
    store = committed_colour_store(index_dir, engine)
    store.drop_torn_tail()
    if store.rows < store_rows:
        store.append(np.zeros((store_rows - store.rows, SIGNATURE_DIM), np.uint8))
        with session_scope(engine) as s:
            q.set_meta(s, "colour_rows", store.rows)
    return store


def read_signatures(store: VectorStore, rows: np.ndarray) -> np.ndarray:
    """uint8 (len(rows), SIGNATURE_DIM) for store rows; rows without a signature are zeros."""
    rows = np.asarray(rows, np.int64)
    out = np.zeros((len(rows), SIGNATURE_DIM), np.uint8)
    have = rows < store.rows
    if have.any():
        out[have] = store.get(rows[have], np.uint8)
    return out


def lost_rows(store: VectorStore) -> int:
    """Committed rows missing from the file (a damaged or deleted colour store); `verify` reports them."""
    size = store.path.stat().st_size if store.path.exists() else 0
    return max(0, store.rows - size // store.row_bytes)


def repair(index_dir: Path, engine: Engine) -> int:
    """Cut a torn tail; forget signatures the file lost (they read as unknown, later builds pad). -> rows lost."""
    store = committed_colour_store(index_dir, engine)
    lost = lost_rows(store)
    if lost:
        with session_scope(engine) as s:
            q.set_meta(s, "colour_rows", store.rows - lost)
        store = colour_store(index_dir, store.rows - lost)
    store.drop_torn_tail()
    return lost


def unsigned(store: VectorStore, rows: np.ndarray, block: int = 1 << 18) -> int:
    """How many of these store rows have no signature (past the colour store, or padded with zeros)."""
    rows = np.asarray(rows, np.int64)
    covered = rows[rows < store.rows]
    arr = store.array()
    empty = np.zeros(store.rows, bool)
    for start in range(0, store.rows, block):  # the uint8 map in blocks: bounded memory at any size
        empty[start : start + block] = ~arr[start : start + block, :CHROMA_DIM].any(axis=1)
    return int(len(rows) - len(covered) + np.count_nonzero(empty[covered]))
