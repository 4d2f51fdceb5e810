"""`dedup --ray`: the range joins of `pairs.py` run as Ray tasks (docs/scale.md).

The driver trains the cells' centroids (k-means on a sample) and merges what comes back; the tasks score blocks of
vectors against the centroids and join ranges of cells, each reading the embedding and thumbnail stores of the
index folder (a filesystem every node mounts at the same path) through the picklable `RowReader`. The pieces
come back in order, so the pairs are the single-process pairs, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from birder_index.dedup.pairs import Runner
from birder_index.distributed.cluster import RaySettings
from birder_index.distributed.cluster import ray_session
from birder_index.distributed.cluster import require_ray
from birder_index.distributed.readable import check_readable
from birder_index.distributed.tasks import RayTasks
from birder_index.indexer.index import Index


@contextmanager
def join_runner(settings: RaySettings | None, *indexes: Index | None) -> Iterator[Runner | None]:
    """None (the joins run here) without `settings`; else Ray tasks, once every node reads the indexes' stores."""
    if settings is None:
        yield None
        return
    require_ray()
    with ray_session(settings) as ray:
        for index in indexes:
            if index is not None:
                check_readable(index.dir, [index.store().path.name])
        yield RayTasks.for_cluster(ray, what="dedup join task")
