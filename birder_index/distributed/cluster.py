"""Connecting to Ray and sizing the actor pool.

`auto` connects to the cluster named by $RAY_ADDRESS, else to one started on this machine (`ray start --head`),
else starts a local one for the build (Ray's own order); any other value is an address (`head:6379`,
`ray://head:10001`). A session this process started ends with the build; one it found stays.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from birder_index.errors import BirderIndexError

logger = logging.getLogger(__name__)

INSTALL = '--ray needs Ray: pip install "birder-index[ray]"'


def require_ray() -> ModuleType:
    """The `ray` module, with Ray Data, or the one-line error that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise BirderIndexError(INSTALL) from None
    return ray


@dataclass(frozen=True, kw_only=True)
class RaySettings:
    address: str = "auto"  # "auto" (see the module docstring) or a cluster's address
    actors: int | None = None  # embedding actors; default: one per GPU, else one per node
    cpus_per_actor: float | None = None  # default: a GPU actor 1, a CPU actor its node's CPUs less half a CPU
    embedder: type | None = None  # the actor class (default embed.EmbedActor; a subclass may wrap its steps)

    def __post_init__(self) -> None:
        if not self.address:
            raise BirderIndexError("--ray needs `auto` or a cluster's address")
        if self.actors is not None and self.actors < 1:
            raise BirderIndexError(f"Ray actors must be >= 1, got {self.actors}")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise BirderIndexError(f"CPUs per Ray actor must be > 0, got {self.cpus_per_actor}")


@dataclass(frozen=True)
class Pool:
    """The embedding actors: how many, and what each reserves."""

    actors: int
    cpus: float
    gpus: float
    threads: int  # torch threads in each actor (Ray gives one with fractional CPUs a single OpenMP thread)


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[ModuleType]:
    """Ray connected for the block (reusing a session this process already has)."""
    ray = require_ray()
    if ray.is_initialized():
        _quiet_ray_data(ray)
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report unless the user asked for one
    address = None if settings.address == "auto" else settings.address
    try:
        ray.init(address=address, logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BirderIndexError(f"--ray {settings.address}: cannot connect: {str(e).splitlines()[0]}") from None
    _quiet_ray_data(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_ray_data(ray: Any) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the build shows its own progress
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no "Dataset ... execution finished" lines


def plan_pool(ray: Any, settings: RaySettings) -> Pool:
    """One actor per GPU on a GPU cluster; else one per node, each with its node's CPUs less half a CPU, so that
    Ray Data's own tasks always find a CPU (a pool that reserves every CPU waits forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = sum(r.get("GPU", 0.0) for r in nodes)
    node_cpus = [r.get("CPU", 0.0) for r in nodes if r.get("CPU", 0.0) > 0]
    if not node_cpus:
        raise BirderIndexError("--ray: the cluster has no CPUs")
    total = sum(node_cpus)
    if gpus >= 1:
        cpus = settings.cpus_per_actor or 1.0
        actors, per_gpu = settings.actors or int(gpus), 1.0
    else:
        cpus = settings.cpus_per_actor or max(0.5, min(node_cpus) - 0.5)
        actors, per_gpu = settings.actors or len(node_cpus), 0.0
    if actors * cpus >= total:
        raise BirderIndexError(
            f"--ray: {actors} actors of {cpus:g} CPUs would take all {total:g} CPUs of the cluster and leave none "
            "for Ray Data's own tasks; use fewer actors or fewer CPUs per actor"
        )
    return Pool(actors, cpus, per_gpu, threads=max(1, math.ceil(cpus)))
