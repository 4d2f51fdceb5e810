"""`verify_index`: do the database, the embedding store, the FAISS index and the files agree?

Checks that every indexed row has exactly one store row and one FAISS vector, that the FAISS index holds nothing
else, and that files still exist with the recorded size and mtime (`deep`: the recorded sha256). `repair` fixes
what it can: cuts a torn store tail (and the colour store's: colour signatures the file lost become unknown),
re-queues rows whose vector is missing (the next build embeds them), deletes rows whose file is gone, and
rewrites the FAISS index from the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.db.models import INDEXED
from birder_index.db.models import MetaKey
from birder_index.indexer import ann
from birder_index.indexer import signatures
from birder_index.indexer.index import Index
from birder_index.indexer.lock import WriterLock
from birder_index.indexer.plan import hash_file
from birder_index.indexer.refresh import refresh_ann


@dataclass
class VerifyReport:
    indexed: int = 0
    pending: int = 0
    failed: int = 0
    store_rows: int = 0
    torn_tail_bytes: int = 0
    colour_rows_lost: int = 0  # committed colour signatures missing from colours.u8
    thumb_rows_lost: int = 0  # committed thumbnails missing from thumbs.u8
    bad_vector_rows: list[int] = field(default_factory=list)  # image ids whose store row is missing or shared
    faiss_missing: list[int] = field(default_factory=list)  # indexed ids without a FAISS vector
    faiss_orphans: list[int] = field(default_factory=list)  # FAISS ids without an indexed row
    files_missing: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (
            self.torn_tail_bytes
            or self.colour_rows_lost
            or self.thumb_rows_lost
            or self.bad_vector_rows
            or self.faiss_missing
            or self.faiss_orphans
            or self.files_missing
            or self.files_changed
            or self.pending
        )


def verify_index(index: Index, *, deep: bool = False, repair: bool = False) -> VerifyReport:
    if repair:
        with WriterLock(index.dir):
            report = _check(index, deep)
            _repair(index, report)
        return report
    return _check(index, deep)


def _check(index: Index, deep: bool) -> VerifyReport:
    r = VerifyReport()
    with session_scope(index.engine) as s:
        counts = q.counts(s)
        known = q.known_files(s)
        r.store_rows = q.get_int(s, MetaKey.STORE_ROWS)
        manifest = q.get_manifest(s)
    r.indexed, r.pending, r.failed = counts["indexed"], counts["pending"], counts["failed"]
    index.invalidate()
    ids, rows = index.id_rows()
    _check_store(index, r, ids, rows)
    r.colour_rows_lost = signatures.lost_rows(index.colours())
    r.thumb_rows_lost = signatures.lost_rows(index.thumbnails())
    _check_faiss(index, r, ids, manifest.file if manifest else None)
    _check_files(index, r, known, deep)
    return r


def _check_store(index: Index, r: VerifyReport, ids: np.ndarray, rows: np.ndarray) -> None:
    if not len(ids):
        return
    store = index.store()
    size = store.path.stat().st_size if store.path.exists() else 0
    r.torn_tail_bytes = max(0, size - r.store_rows * store.row_bytes)
    present_rows = min(r.store_rows, size // store.row_bytes)
    _, first = np.unique(rows, return_index=True)
    shared = np.setdiff1d(np.arange(len(rows)), first)  # a store row claimed by two images
    bad = (rows < 0) | (rows >= present_rows)
    bad[shared] = True
    r.bad_vector_rows = ids[bad].tolist()


def _check_faiss(index: Index, r: VerifyReport, ids: np.ndarray, file: str | None) -> None:
    present = ann.ids_in(ann.load(index.dir / file)) if file and (index.dir / file).exists() else np.zeros(0, np.int64)
    r.faiss_missing = np.setdiff1d(ids, present).tolist()
    r.faiss_orphans = np.setdiff1d(present, ids).tolist()


def _check_files(index: Index, r: VerifyReport, known: dict[str, q.Known], deep: bool) -> None:
    root = index.root
    if root is None:  # imported embeddings: no files to check
        return
    for path, k in known.items():
        if k.status != INDEXED:
            continue
        try:
            st = os.stat(root / path)
        except OSError:
            r.files_missing.append(path)
            continue
        if (st.st_size, st.st_mtime_ns) != (k.size, k.mtime_ns) or (deep and hash_file(root / path) != k.sha256):
            r.files_changed.append(path)


def _repair(index: Index, r: VerifyReport) -> None:
    store = index.store()
    if r.torn_tail_bytes:
        store.drop_torn_tail()
        r.repaired.append(f"cut {r.torn_tail_bytes} bytes of torn tail from the embedding store")
    if signatures.repair(index.dir, index.engine, signatures.COLOURS):
        r.repaired.append(f"forgot {r.colour_rows_lost} colour signatures missing from the colour store")
    if signatures.repair(index.dir, index.engine, signatures.THUMBNAILS):
        r.repaired.append(f"forgot {r.thumb_rows_lost} thumbnails missing from the thumbnail store")
    with session_scope(index.engine) as s:
        known = q.known_files(s)
        requeue = sorted(set(r.bad_vector_rows) | {known[p].id for p in r.files_changed})
        gone = [known[p].id for p in r.files_missing]
        q.set_pending(s, requeue)
        q.delete_images(s, gone)
        if requeue or gone:
            q.bump_generation(s)
    if requeue:
        r.repaired.append(f"re-queued {len(requeue)} images for embedding (run `birder-index build` to finish)")
    if gone:
        r.repaired.append(f"removed {len(gone)} images whose files are gone")
    if r.faiss_missing or r.faiss_orphans or requeue or gone:
        refresh_ann(index, rebuild=True)
        r.repaired.append("rewrote the FAISS index from the embedding store")
