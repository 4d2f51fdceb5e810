"""Plain Ray tasks, results in order: the sharded FAISS add of `build --ray` / `reindex --ray` and the range join of
`dedup --ray` (docs/scale.md).

`map_tasks(fn, calls, shared=...)` runs `fn(*shared, *call)` as one Ray task per call and yields the results in the
order of `calls`, so that what the driver merges comes in the order a single process makes it. At most `window`
tasks are in flight: the driver holds a bounded number of results however many calls there are. The arguments
every task shares (a trained index, a store reader, the cells of a join) go into Ray's object store once.

Each task sets its own thread counts (torch's and FAISS's OpenMP) to the CPUs it reserved: Ray gives a worker one
OpenMP thread unless told otherwise, and a task that used every core of its node would fight its neighbours.
An exception in `fn` is not retried (it would fail again) and becomes one line; a worker lost with its node is
retried by Ray.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from birder_index.distributed.cluster import require_ray
from birder_index.errors import BirderIndexError

logger = logging.getLogger(__name__)

PARTS_PER_CPU = 4  # pieces of work per CPU: a few more than CPUs evens out cells of unequal work and slow nodes


def cluster_cpus(ray: Any) -> int:
    """The CPUs of the alive nodes (at least 1)."""
    return max(1, int(sum(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive"))))


def set_threads(threads: int) -> None:
    """Thread counts of the libraries this worker has loaded (a task loads torch or FAISS with its function)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


def _run(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    set_threads(threads)
    return fn(*args)


def map_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    shared: tuple[Any, ...] = (),
    cpus: float = 1.0,
    window: int | None = None,
    what: str = "task",
) -> Iterator[Any]:
    """`fn(*shared, *call)` for each call, on the connected Ray cluster, yielded in the order of `calls`.
    `window`: tasks in flight (default: twice the cluster's CPUs)."""
    ray = require_ray()
    remote = ray.remote(num_cpus=cpus, retry_exceptions=False)(_run)
    threads = max(1, math.floor(cpus))
    refs = [ray.put(value) for value in shared]
    window = max(1, window or 2 * cluster_cpus(ray))
    pending: deque[Any] = deque()
    todo = iter(calls)
    for call in todo:
        pending.append(remote.remote(fn, threads, *refs, *call))
        if len(pending) >= window:
            yield _get(ray, pending.popleft(), what)
    while pending:
        yield _get(ray, pending.popleft(), what)


def _get(ray: Any, ref: Any, what: str) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise BirderIndexError(f"--ray: a {what} failed: {lines[-1] if lines else type(e).__name__}") from None


@dataclass(frozen=True)
class RayTasks:
    """A `dedup.pairs.Runner` whose pieces are Ray tasks: `parts` ranges of cells per round of the join."""

    parts: int
    what: str = "task"

    @classmethod
    def for_cluster(cls, ray: Any, *, what: str) -> RayTasks:
        return cls(PARTS_PER_CPU * cluster_cpus(ray), what)

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, shared: tuple[Any, ...] = ()
    ) -> Iterator[Any]:
        return map_tasks(fn, calls, shared=shared, what=self.what)
