"""The build driver's write rate: how many photos a second `BatchWriter` commits, the bound on how many embedding
nodes one driver can keep up with (`build --ray`: every vector is appended, fsynced and committed here).

    python benchmarks/driver_writes.py --photos 20000 --batches 16 256 [--dim 768] [--db URL]

Each batch is what the embedding loop hands the writer: n photos' vectors (random), colour signatures, thumbnails
and attributes; the writer appends them to the float16 store and the two signature stores (each fsynced) and
commits the batch's rows in one transaction, as a build does. Nothing is decoded or embedded: the figure is the
writer's alone. A fresh index folder (and, with --db, the given empty database) per batch size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from birder_index.backbone.colour import SIGNATURE_DIM
from birder_index.backbone.read import Item
from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.db import queries as q
from birder_index.db.engine import check_schema
from birder_index.db.engine import connect
from birder_index.db.engine import session_scope
from birder_index.db.engine import sqlite_url
from birder_index.indexer.decode import DecodedBatch
from birder_index.indexer.index import Index
from birder_index.indexer.layout import DB_FILE
from birder_index.indexer.vectors import open_embedding_store
from birder_index.indexer.write import BatchWriter


def rate(folder: Path, photos: int, batch: int, dim: int, db: str | None) -> float:
    """Photos committed per second by one BatchWriter, `batch` photos a write."""
    engine = connect(db or sqlite_url(folder / DB_FILE), create=True)
    check_schema(engine, create=True)
    index = Index(folder, engine)
    with session_scope(engine) as s:
        q.insert_pending(s, [(f"p/{i:08d}.jpg", 3_000_000, i) for i in range(photos)])
    with session_scope(engine) as s:
        ids = sorted(k.id for k in q.known_files(s).values())
        store = open_embedding_store(s, folder, dim, dtype="float16")
    store.drop_torn_tail()
    writer = BatchWriter(index, store)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for start in range(0, photos, batch):
        chunk = ids[start : start + batch]
        items = [Item(i, None, None, f"{i:064x}", 3_000_000, i, 4000, 3000) for i in chunk]
        colours = rng.integers(0, 256, (len(chunk), SIGNATURE_DIM), dtype=np.uint8)
        thumbs = rng.integers(0, 256, (len(chunk), THUMB_DIM), dtype=np.uint8)
        writer.write(DecodedBatch(torch.empty(0, dtype=torch.uint8), items, [], colours, thumbs),
                     rng.standard_normal((len(chunk), dim), dtype=np.float32))  # fmt: skip
    seconds = time.perf_counter() - t0
    engine.dispose()
    assert writer.counts.indexed == photos
    return photos / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=20_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256], help="photos a write (CPU 16, GPU 256)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--db", help="a SQLAlchemy URL of an empty database (default: SQLite in the index folder)")
    args = parser.parse_args()
    for batch in args.batches:
        with tempfile.TemporaryDirectory(prefix="driver-writes-") as tmp:
            r = rate(Path(tmp), args.photos, batch, args.dim, args.db)
        print(f"batches of {batch:>4}: {r:8.0f} photos/s committed ({args.photos} photos, {args.dim}-d, float16 store)")


if __name__ == "__main__":
    main()
