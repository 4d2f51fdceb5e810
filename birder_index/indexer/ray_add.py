"""Filling a trained FAISS index over Ray tasks, for `build --ray` and `reindex --ray` (docs/scale.md).

The driver trains the index as a local build does and serialises the trained, empty index once. Each task takes a
shard of consecutive ids, memory-maps the embedding store in the index folder (a filesystem every node mounts at
the same path), adds its shard to its own copy of the empty index and sends back the filled copy, serialised. The
driver merges the copies into the empty index in shard order (`merge_from`, in memory): each inverted list then
holds the same ids and the same codes, in the same order, as one process adding every vector in id order.

Why in memory, not `faiss.contrib.ondisk.merge_ondisk`: the merged index is what `search` loads whole anyway (the
driver holds no more than a reader does), and an index with on-disk lists is two files, the second named by path
inside the first and changed in place by later adds and removals: the atomic write-then-rename of a new file per
generation, the stale-file sweep (`index-*` files no manifest names) and the GPU copy all assume one
self-contained file. The catch-up of an existing index (the few vectors a later build adds) stays local.
"""

from __future__ import annotations

import itertools
import logging
import math
import time

import faiss
import numpy as np

from birder_index.distributed.cluster import RaySettings
from birder_index.distributed.cluster import ray_session
from birder_index.distributed.readable import check_readable
from birder_index.distributed.tasks import cluster_cpus
from birder_index.distributed.tasks import map_tasks
from birder_index.indexer import ann
from birder_index.indexer.vectors import RowReader

logger = logging.getLogger(__name__)

SHARD_MIN = 100_000  # vectors per task at least: a task's start (a worker, the index copied in) costs ~0.1 s
SHARDS_PER_CPU = 2  # a few more shards than CPUs evens out slow nodes; shards are merged in order as they come
BLOCK = 65536  # vectors a task reads from the store at once


def add_shard(index_bytes: np.ndarray, reader: RowReader, ids: np.ndarray, start: int, end: int) -> np.ndarray:
    """Ids[start:end] and their vectors added to a copy of the serialised empty index; the copy, serialised."""
    index = faiss.deserialize_index(index_bytes)
    for s in range(start, end, BLOCK):
        e = min(s + BLOCK, end)
        ann.add(index, ids[s:e], reader(np.arange(s, e)))
    return faiss.serialize_index(index)


def shard_bounds(n: int, cpus: int, *, shards: int | None = None) -> list[tuple[int, int]]:
    """Consecutive (start, end) shards of n vectors: at least SHARD_MIN each, at most SHARDS_PER_CPU per CPU."""
    count = shards or max(1, min(math.ceil(n / SHARD_MIN), SHARDS_PER_CPU * cpus))
    edges = np.linspace(0, n, min(count, max(n, 1)) + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def add_on_ray(
    empty: faiss.Index, reader: RowReader, ids: np.ndarray, *, settings: RaySettings, shards: int | None = None
) -> faiss.Index:
    """`empty` (trained) filled with `ids` and the vectors `reader` gives for their positions, by Ray tasks."""
    t0 = time.perf_counter()
    with ray_session(settings) as ray:
        check_readable(reader.path.parent, [reader.path.name])
        bounds = shard_bounds(len(ids), cluster_cpus(ray), shards=shards)
        index_bytes = faiss.serialize_index(empty)
        shared = (index_bytes, reader, np.ascontiguousarray(ids, np.int64))
        for part in map_tasks(add_shard, bounds, shared=shared, what="FAISS add task"):
            empty.merge_from(faiss.deserialize_index(part), 0)
    logger.info("added %d vectors in %d Ray tasks in %.1fs", len(ids), len(bounds), time.perf_counter() - t0)
    return empty
