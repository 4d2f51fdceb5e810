"""Ray's overhead: the same folder built locally and with `build --ray` on the same machine, interleaved (local,
--ray, local, --ray...: on a shared machine the load moves, and interleaving spreads it over both), then over
local Ray clusters of 1, 2 and 3 nodes of one CPU each (ray.cluster_utils.Cluster, all on this machine's cores).

    python benchmarks/scale.py --photos DIR --weights MODEL.pt2 [--repeats 2] [--nodes 1 2 3] [--copies K]

Each run is `birder-index build` in a fresh process on a fresh index folder, as a user runs it; the table gives
the wall time (Python, model and Ray start-up included) and the summary's images/s (embedding only), each against
the median of the local builds, then the ratio of the medians of the --ray and local builds, and the load average
before and after. `--copies K` builds K copies of each photo instead (embed.py's `copies`: new bytes, the same
pixels), so that Ray's fixed start-up cost is spread over more photos. Needs the ray extra.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(photos: Path, weights: Path, index_dir: Path, *extra: str) -> tuple[float, float, str]:
    """(wall seconds, embedding images/s, summary line) of one build."""
    command = [sys.executable, "-m", "birder_index", "build", str(photos), "--index-dir", str(index_dir),
               "--weights", str(weights), "--no-compile", "--quiet", *extra]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    rate = re.search(r"([\d.]+) images/s", out)
    return wall, float(rate.group(1)) if rate else 0.0, out.splitlines()[0]


def on_cluster(nodes: int, photos: Path, weights: Path, index_dir: Path) -> tuple[float, float, str]:
    import ray
    from ray.cluster_utils import Cluster

    store = 200 * 2**20
    head = {"num_cpus": 1, "object_store_memory": store, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        return build(photos, weights, index_dir, "--ray", cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2, help="local and --ray builds, interleaved")
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--copies", type=int, default=1, help="build K copies of each photo (new bytes, same pixels)")
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    if args.copies > 1:
        from embed import copies
        from realdata import photo_paths

        folder = work / "photos"
        folder.mkdir()
        args.photos = copies(photo_paths(args.photos), args.copies, folder)
    load_before = os.getloadavg()
    local, ray = "local", "--ray (auto: one node, all cores)"
    rows = []
    for r in range(args.repeats):
        rows.append((local, *build(args.photos, args.weights, work / f"local{r}")))
        rows.append((ray, *build(args.photos, args.weights, work / f"auto{r}", "--ray")))
    for n in args.nodes:
        rows.append((f"--ray, {n} node(s) of 1 CPU", *on_cluster(n, args.photos, args.weights, work / f"n{n}")))
    load_after = os.getloadavg()
    wall0 = statistics.median(w for name, w, _, _ in rows if name == local)
    rate0 = statistics.median(r for name, _, r, _ in rows if name == local)
    print(f"{'build':<36} {'wall s':>7} {'x local':>8} {'images/s':>9} {'x local':>8}")
    for name, wall, rate, _ in rows:
        print(f"{name:<36} {wall:7.1f} {wall / wall0:8.2f} {rate:9.2f} {rate / rate0 if rate0 else 0:8.2f}")
    wall1 = statistics.median(w for name, w, _, _ in rows if name == ray)
    rate1 = statistics.median(r for name, _, r, _ in rows if name == ray)
    print(f"medians of {args.repeats} interleaved runs: --ray / local wall {wall1 / wall0:.2f}x, images/s "
          f"{rate1 / rate0 if rate0 else 0:.2f}x")  # fmt: skip
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    for name, _, _, line in rows:
        print(f"{name}: {line}")


if __name__ == "__main__":
    main()
