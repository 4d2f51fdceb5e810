"""The embedding store: birder's raw embeddings, one fixed-width row each, in an append-only flat file.

The database records how many rows are committed; bytes past that are the torn tail of an interrupted write and
are cut off when a writer opens the store. Readers map only the committed rows, so they never see a half-written
row, even while a build appends. Rows are float16 by default (half the disk of float32, and re-ranking and probes
lose nothing measurable; see docs/index.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from birder_index.db import queries as q
from birder_index.db.models import MetaKey
from birder_index.errors import IndexMismatch

DTYPES = {"float16": np.float16, "float32": np.float32, "uint8": np.uint8}  # uint8: signatures and thumbnails
STORE_DTYPES = ("float16", "float32")  # what the embedding store may hold
DEFAULT_STORE_DTYPE = "float16"


def open_embedding_store(s: Session, directory: Path, dim: int, *, dtype: str | None = None) -> VectorStore:
    """The embedding store as the database records it: file name, dtype and committed rows, in one place.

    A writer passes `dtype`: an index without a store records one now in that dtype, as `vectors.f16` or
    `vectors.f32`; an existing store keeps its own dtype (its rows are written in it). Readers pass none and
    write nothing."""
    recorded = q.get_meta(s, MetaKey.STORE_DTYPE)
    chosen = recorded or dtype or DEFAULT_STORE_DTYPE
    if chosen not in STORE_DTYPES:
        raise IndexMismatch(f"the embedding store's dtype {chosen!r} is not one of {', '.join(STORE_DTYPES)}")
    file = q.get_meta(s, MetaKey.STORE_FILE) or f"vectors.f{chosen[-2:]}"
    if recorded is None and dtype is not None:
        q.set_meta(s, MetaKey.STORE_DTYPE, chosen)
        q.set_meta(s, MetaKey.STORE_FILE, file)
    return VectorStore(directory / file, dim, chosen, q.get_int(s, MetaKey.STORE_ROWS))


class VectorStore:
    def __init__(self, path: Path, dim: int, dtype: str, rows: int, *, label: str = "embedding store") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown store dtype {dtype}")
        self.path = path
        self.dim = dim
        self.dtype = np.dtype(DTYPES[dtype])
        self.rows = rows  # committed rows
        self.label = label  # for messages
        self.row_bytes = dim * self.dtype.itemsize
        self._map: np.ndarray | None = None

    # -- reading --------------------------------------------------------------------------------------------------
    def array(self) -> np.ndarray:
        """The committed rows as a read-only (rows, dim) memory map."""
        if self._map is None or self._map.shape[0] != self.rows:
            if self.rows == 0:
                self._map = np.zeros((0, self.dim), self.dtype)
            else:
                size = self.path.stat().st_size if self.path.exists() else 0
                if size < self.rows * self.row_bytes:
                    raise IndexMismatch(
                        f"{self.label} {self.path} holds {size // self.row_bytes} rows, the database says "
                        f"{self.rows}: run `birder-index verify --repair`"
                    )
                self._map = np.memmap(self.path, self.dtype, "r", shape=(self.rows, self.dim))
        return self._map

    def get(self, rows: np.ndarray, *, dtype: type[np.generic] = np.float32) -> np.ndarray:
        """(len(rows), dim) rows in `dtype` (float32 by default) for store row numbers, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.dim), dtype)
        arr = self.array()
        order = np.argsort(rows)  # sorted reads are sequential reads on disk
        out = np.empty((rows.size, self.dim), dtype)
        out[order] = arr[rows[order]]
        return out

    def blocks(self, rows: np.ndarray, *, block: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, float32 block) over the given store rows, `block` rows at a time: memory stays bounded."""
        for start in range(0, len(rows), block):
            yield start, self.get(rows[start : start + block])

    def reader(self, rows: np.ndarray, *, signatures: bool = False) -> RowReader:
        """The L2-normalised rows `rows[positions]` (`signatures`: uint8 signatures, zeros for rows without one), as
        a callable that another process can unpickle and use."""
        rows = np.asarray(rows, np.int64)
        return RowReader(self.path, self.dim, self.dtype.name, self.rows, rows=rows, label=self.label, raw=signatures)

    # -- writing --------------------------------------------------------------------------------------------------
    def drop_torn_tail(self) -> int:
        """Cut bytes past the committed rows (left by a killed writer); returns how many bytes were dropped."""
        if not self.path.exists():
            self.path.touch()
            return 0
        size = self.path.stat().st_size
        committed = self.rows * self.row_bytes
        if size > committed:
            os.truncate(self.path, committed)
            return size - committed
        if size < committed:
            raise IndexMismatch(
                f"{self.label} {self.path} is shorter than its committed length ({size} < {committed} bytes): "
                "run `birder-index verify --repair`"
            )
        return 0

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """Write rows durably (fsync) and return their row numbers; the caller then commits `rows` to the database."""
        data = np.ascontiguousarray(vectors, dtype=self.dtype)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {data.shape}")
        if self.dtype == np.float16 and data.size and not np.isfinite(data).all():
            raise ValueError("embedding values overflow float16: rebuild the index with --store-dtype float32")
        with open(self.path, "r+b") as f:
            f.seek(self.rows * self.row_bytes)
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())
        first = self.rows
        self.rows += len(data)
        return np.arange(first, self.rows, dtype=np.int64)


class RowReader:
    """`reader(positions)` -> L2-normalised float32 rows of the store at `rows[positions]` (`raw`: the uint8 rows of a
    signature store, zeros past its committed rows). Pickled, it holds the store's path and committed length, not
    its memory map: a Ray task on another node maps the same file (the index folder on a filesystem every node
    mounts at the same path) and reads only committed rows."""

    def __init__(
        self, path: Path, dim: int, dtype: str, committed: int, *, rows: np.ndarray, label: str, raw: bool = False
    ) -> None:
        self.path, self.dim, self.dtype, self.committed = path, dim, dtype, committed
        self.rows, self.label, self.raw = rows, label, raw
        self._store: VectorStore | None = None

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        if self._store is None:
            self._store = VectorStore(self.path, self.dim, self.dtype, self.committed, label=self.label)
        rows = self.rows[positions]
        if not self.raw:
            return normalize(self._store.get(rows))
        out = np.zeros((len(rows), self.dim), np.uint8)
        have = rows < self.committed
        if have.any():
            out[have] = self._store.get(rows[have], dtype=np.uint8)
        return out

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_store": None}


def unstorable(vectors: np.ndarray, dtype: np.dtype) -> list[str | None]:
    """Per row, why the store cannot hold it (a model that returned NaN or infinity, or values beyond the store's
    dtype), or None."""
    finite = np.isfinite(vectors).all(axis=1)
    limit = float(np.finfo(dtype).max) if np.issubdtype(dtype, np.floating) else np.inf
    fits = np.abs(np.where(np.isfinite(vectors), vectors, 0)).max(axis=1, initial=0) <= limit
    return [
        None
        if ok and fit
        else "the model's embedding of this photo is not finite (NaN or infinity)"
        if not ok
        else f"the model's embedding of this photo has values beyond {dtype.name}'s range: build a new index "
        "with --store-dtype float32"
        for ok, fit in zip(finite.tolist(), fits.tolist(), strict=True)
    ]


def normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (cosine similarity = inner product); zero rows stay zero. Rows whose
    squares overflow float32 (values near 1e19 and up, which a float32 store holds) are scaled down first."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
    huge = ~np.isfinite(norms[:, 0])
    if huge.any():
        scaled = x[huge] / np.abs(x[huge]).max(axis=1, keepdims=True)
        out = x / np.maximum(norms, 1e-12)
        out[huge] = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
        return out
    return x / np.maximum(norms, 1e-12)


def save_array(array: np.ndarray, path: Path) -> None:
    """np.save, atomically: a temporary file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
