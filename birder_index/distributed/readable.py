"""Every node must read the photos at the driver's paths (a shared filesystem mounted at the same place): checked
before any work, on every node, so that a missing mount is one clear error and not a build of failures."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from birder_index.distributed.cluster import require_ray
from birder_index.errors import BirderIndexError

SAMPLE = 64  # photos checked on each node, spread over the run (the first and the last among them)


def sample_paths(rels: Sequence[str], *, n: int = SAMPLE) -> list[str]:
    if len(rels) <= n:
        return list(rels)
    step = (len(rels) - 1) / (n - 1)
    return [rels[round(i * step)] for i in range(n)]


def first_unreadable(folder: str, paths: Sequence[str]) -> tuple[str, str, str] | None:
    """(host, path, reason) of the folder, or the first file, that this machine cannot read; None if it reads all."""
    if not os.path.isdir(folder):
        return socket.gethostname(), folder, "no such folder"
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            return socket.gethostname(), path, (e.strerror or str(e)).lower()
    return None


def check_readable(root: Path, rels: Sequence[str], *, extra: Sequence[str] = ()) -> None:
    """Raise, naming the first unreadable path and its node, unless every alive node reads the photo folder, a
    sample of `rels` (relative to `root`) and the `extra` files (the model's weights)."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = [*extra, *(os.path.join(root, r) for r in sample_paths(rels))]
    probe = ray.remote(num_cpus=0)(first_unreadable)  # no CPU: runs even while the cluster is busy
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            str(root), paths
        )
        for node in ray.nodes()
        if node.get("Alive")
    ]
    for found in ray.get(refs):
        if found is not None:
            host, path, reason = found
            raise BirderIndexError(
                f"--ray: {path} is not readable on node {host} ({reason}): the photos, the model file and the "
                "index folder must be on a filesystem that every node mounts at the same path"
            )
