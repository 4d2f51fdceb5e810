"""Writer stage for FAISS: bring the index file up to the database's committed state.

A new file is written under a new name (temporary name, fsync, rename), then the manifest is pointed at it in one
database commit, then the old file is deleted. A crash at any point leaves the manifest naming a complete file.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.indexer import ann
from birder_index.indexer.index import AnnState
from birder_index.indexer.index import Index
from birder_index.indexer.vectors import normalize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshReport:
    factory: str
    vectors: int
    retrained: bool
    seconds: float


def refresh_ann(index: Index, retrain: bool = False) -> RefreshReport:
    t0 = time.perf_counter()
    with session_scope(index.engine) as s:
        generation = q.get_int(s, "generation")
        manifest = q.get_manifest(s)
    if manifest is not None and manifest.generation == generation and not retrain:
        return RefreshReport(manifest.factory, manifest.vector_count, False, 0.0)
    index._id_rows = None  # re-read: this refresh follows writes
    ids, rows = index.id_rows()
    d = index.model_row().embedding_dim
    fresh = retrain or manifest is None or not (index.dir / manifest.file).exists()
    if fresh:
        state = AnnState(ann.new_index("Flat", d), "Flat", {})
        for start, block in index.store().blocks(rows):
            ann.add(state.index, ids[start : start + len(block)], normalize(block))
    else:
        state = index.ann()  # loaded and caught up in memory
    name = f"index-{generation}-{uuid.uuid4().hex[:6]}.faiss"
    ann.save(state.index, index.dir / name)
    with session_scope(index.engine) as s:
        q.set_manifest(
            s,
            file=name,
            generation=generation,
            factory=state.factory,
            params=json.dumps(state.params),
            vector_count=int(state.index.ntotal),
            trained_on=len(ids) if fresh else (manifest.trained_on if manifest else len(ids)),
        )
    if manifest is not None and manifest.file != name:
        (index.dir / manifest.file).unlink(missing_ok=True)
    index._ann = state
    seconds = time.perf_counter() - t0
    logger.info("FAISS %s index with %d vectors written in %.1fs", state.factory, state.index.ntotal, seconds)
    return RefreshReport(state.factory, int(state.index.ntotal), fresh, seconds)
