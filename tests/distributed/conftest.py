"""The Ray tests' cluster: a local multi-node Ray (ray.cluster_utils.Cluster: three nodes of one CPU, small object
stores, no dashboard), started once for every module of this folder."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package")
def cluster() -> Iterator[object]:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import ray.data
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    store = 200 * 2**20
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": store, "include_dashboard": False},
    )
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=store)
    # ray.init installs its own SIGTERM and SIGINT handlers, which processes forked later by other tests inherit
    # (a pool's workers then ignore its terminate): put this process's back afterwards.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    ray.init(address=c.address, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
