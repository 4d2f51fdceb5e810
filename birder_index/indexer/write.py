"""Writer stage of the build: one batch's vectors to the embedding store (and its colour signatures and thumbnails
to their stores, signatures.py), then its rows to the database.

Order is what makes a kill at any moment safe: vectors and signatures are appended and fsynced first, then one
transaction marks the rows indexed and records both stores' new length. A crash before the commit leaves only a
torn tail past the committed length, cut off on the next open; the rows stay pending and are embedded again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import replace

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import MetaKey
from birder_index.indexer.decode import DecodedBatch
from birder_index.indexer.index import Index
from birder_index.indexer.signatures import COLOURS
from birder_index.indexer.signatures import THUMBNAILS
from birder_index.indexer.signatures import open_for_append
from birder_index.indexer.vectors import VectorStore
from birder_index.indexer.vectors import unstorable

logger = logging.getLogger(__name__)


@dataclass
class WriteCounts:
    indexed: int = 0
    reused: int = 0  # content already embedded under another path: vector copied, not computed
    failed: int = 0


class BatchWriter:
    def __init__(self, index: Index, store: VectorStore) -> None:
        self.index = index
        self.store = store
        self.colours = open_for_append(index.dir, index.engine, COLOURS, store.rows)
        self.thumbs = open_for_append(index.dir, index.engine, THUMBNAILS, store.rows)
        with session_scope(index.engine) as s:
            self.row_of_sha = q.vector_rows_by_sha(s)
        self.counts = WriteCounts()
        self.failures: list[tuple[int, str]] = []  # (image id, reason) of photos whose embedding could not be stored

    def needs_embedding(self, batch: DecodedBatch) -> np.ndarray:
        """Mask over `batch.ok`: True where the content has not been embedded yet (also not earlier in the batch)."""
        seen: set[str] = set()
        mask = np.zeros(len(batch.ok), bool)
        for i, item in enumerate(batch.ok):
            sha = item.sha256 or ""
            mask[i] = sha not in self.row_of_sha and sha not in seen
            seen.add(sha)
        return mask

    def write(self, batch: DecodedBatch, vectors: np.ndarray) -> None:
        """`vectors`: raw embeddings of the items selected by `needs_embedding`, in order."""
        fresh = iter(vectors)
        first_in_batch: dict[str, np.ndarray] = {}
        out = np.empty((len(batch.ok), self.store.dim), np.float32)
        for i, item in enumerate(batch.ok):
            sha = item.sha256 or ""
            if sha in self.row_of_sha:
                out[i] = self.store.get(np.array([self.row_of_sha[sha]]))[0]
                self.counts.reused += 1
            elif sha in first_in_batch:
                out[i] = first_in_batch[sha]
                self.counts.reused += 1
            else:
                out[i] = first_in_batch[sha] = next(fresh)
        reasons = unstorable(out, self.store.dtype)
        keep = np.array([r is None for r in reasons], bool)
        ok = [it for it, k in zip(batch.ok, keep, strict=True) if k]
        bad = [replace(it, error=r) for it, r in zip(batch.ok, reasons, strict=True) if r is not None]
        rows = np.zeros(0, np.int64)
        if keep.any():
            rows = self.store.append(out[keep])
            self.colours.append(batch.colours[keep])  # one signature per store row: all stores keep row numbers
            self.thumbs.append(batch.thumbs[keep])
        indexed = [
            {
                "id": it.id,
                "vector_row": int(r),
                "sha256": it.sha256,
                "width": it.width,
                "height": it.height,
                "size": it.size,
                "mtime_ns": it.mtime_ns,
            }
            for it, r in zip(ok, rows, strict=True)
        ]
        # Failed rows keep the scan's size and mtime: the file is tried again only once it changes.
        failed = [{"id": it.id, "error": it.error, "sha256": it.sha256} for it in [*batch.failed, *bad]]
        with session_scope(self.index.engine) as s:
            q.mark_indexed(s, indexed)
            q.mark_failed(s, failed)
            q.set_meta(s, MetaKey.STORE_ROWS, self.store.rows)
            q.set_meta(s, MetaKey.COLOUR_ROWS, self.colours.rows)
            q.set_meta(s, MetaKey.THUMB_ROWS, self.thumbs.rows)
            if indexed:
                q.bump_generation(s)
        for it, r in zip(ok, rows, strict=True):
            self.row_of_sha.setdefault(it.sha256 or "", int(r))
        self.failures.extend((it.id, it.error or "") for it in bad)
        self.counts.indexed += len(indexed)
        self.counts.failed += len(failed)
