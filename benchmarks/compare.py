"""Side by side on the same vectors at the same recall: birder-index, FAISS HNSW32, usearch (int8 and float16) and
LanceDB's IVF-PQ with refine; with and without a memory limit.

    python benchmarks/compare.py --n 200000 --work /tmp/speed [--limit-mb 600 400]

Needs `pip install usearch lancedb` beside birder-index (a side environment: neither is a dependency). The vectors,
queries, ground truth and birder-index's own index are benchmarks/search_speed.py's (same --work folder, made
there if missing): N x 768 from the calibrated generator, 1,000 held-out queries, recall@10 against exact search.

1. Build: each library builds its index from x.npy and saves it in --work (build seconds; birder-index's is the
   whole `import_embeddings`: store, training, add and the tuner).
2. Tune: the cheapest search setting that reaches recall@10 >= 0.95 on 200 of the queries, each in the way its docs
   give (HNSW efSearch; usearch expansion_search; LanceDB nprobes and refine_factor; birder-index tunes itself).
3. Query, each library in a fresh process in a memory cgroup of its own, the page cache dropped first: recall@10
   on the 1,000 queries, queries/s in batches of 1,000 (median of 3 after a warm-up batch) and one at a time
   (200 queries), and memory: the cgroup's peak charge (anonymous memory and the page cache the process read:
   everything it holds in RAM, its vectors included) less the charge after importing the library, per vector.
   Then again under each --limit-mb (the same limits for all; a process over it is killed by the kernel: reported so).

Needs root (cgroup v1 memory controller, /proc/sys/vm/drop_caches). Results also go to benchmarks/out/compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from realdata import OUT
from search_speed import make_index

K = 10
TARGET = 0.95
TIMEOUT = 240  # seconds a measuring child may take: under a tight limit a store read from disk page by page crawls
SYSTEMS = ("birder-index", "faiss-hnsw32", "usearch-i8", "usearch-f16", "lancedb-ivfpq")


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(found[:, :K], truth, strict=True)]))


# -- each library: build (and save), tune, load, search --------------------------------------------------------------
# `search` returns positions in x.npy (0-based), k per query.


def build(system: str, x: np.ndarray, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    if system == "faiss-hnsw32":
        import faiss

        index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.add(x)
        faiss.write_index(index, str(work / "hnsw32.faiss"))
    elif system.startswith("usearch"):
        from usearch.index import Index

        # usearch's README: cosine with i8 quantization; defaults for connectivity (16) and expansion_add (128).
        index = Index(ndim=x.shape[1], metric="cos", dtype=system.split("-")[1])
        index.add(np.arange(len(x)), x, threads=os.cpu_count() or 1)
        index.save(str(work / f"{system}.usearch"))
    elif system == "lancedb-ivfpq":
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        db = lancedb.connect(str(work / "lancedb"))
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1])
        table = db.create_table("v", data=pa.table({"id": np.arange(len(x)), "vector": vectors}), mode="overwrite")
        # LanceDB's docs: num_partitions about sqrt(N), num_sub_vectors dim / 16 (>= 8 dims per sub-vector for speed)
        config = IvfPq(distance_type="dot", num_partitions=int(len(x) ** 0.5), num_sub_vectors=x.shape[1] // 16)
        table.create_index("vector", config=config)
    else:
        raise ValueError(system)
    return {"build_s": time.perf_counter() - t0}


def settings(system: str) -> list[dict[str, int]]:
    """Search settings from cheapest up; tuning stops at the first reaching TARGET."""
    if system == "faiss-hnsw32":
        return [{"efSearch": ef} for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 512)]
    if system.startswith("usearch"):
        return [{"expansion_search": ef} for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 512)]
    if system == "lancedb-ivfpq":
        return [{"nprobes": p, "refine_factor": r} for p in (10, 20, 40, 80) for r in (1, 5, 10, 20, 50)]
    return [{}]


def load(system: str, work: Path, setting: dict[str, int]) -> Callable[[np.ndarray], np.ndarray]:
    if system == "birder-index":
        from birder_index.indexer import open_index
        from birder_index.search import nearest

        index = open_index(work / "index")  # a fresh import numbers rows 1..N in x.npy's order
        # The page cache was dropped: read the float16 store once in order, as a long-running process would have it
        # paged in (its random re-rank reads would otherwise each wait on the disk during the warm-up batch).
        with open(work / "index" / "vectors.f16", "rb") as f:
            while f.read(1 << 24):
                pass
        return lambda q: nearest(index, q, k=K)[1] - 1
    if system == "faiss-hnsw32":
        import faiss

        hnsw = faiss.read_index(str(work / "hnsw32.faiss"))
        hnsw.hnsw.efSearch = setting["efSearch"]
        return lambda q: hnsw.search(q, K)[1]
    if system.startswith("usearch"):
        from usearch.index import Index

        us = Index.restore(str(work / f"{system}.usearch"))
        us.expansion_search = setting["expansion_search"]
        threads = os.cpu_count() or 1
        return lambda q: np.asarray(us.search(q, K, threads=threads).keys).reshape(len(q), K).astype(np.int64)
    if system == "lancedb-ivfpq":
        import lancedb

        table = lancedb.connect(str(work / "lancedb")).open_table("v")

        def search(q: np.ndarray) -> np.ndarray:
            query = table.search(list(q) if len(q) > 1 else q[0]).metric("dot").limit(K)
            result = query.nprobes(setting["nprobes"]).refine_factor(setting["refine_factor"]).select(["id"])
            arrow = result.to_arrow()
            if len(q) == 1:
                return np.asarray(arrow["id"]).reshape(1, -1)
            found = np.full((len(q), K), -1, np.int64)
            qi, ids = np.asarray(arrow["query_index"]), np.asarray(arrow["id"])
            for i in range(len(q)):
                hits = ids[qi == i][:K]
                found[i, : len(hits)] = hits
            return found

        return search
    raise ValueError(system)


# -- a child process per (system, limit): tune or measure -------------------------------------------------------------


def cgroup_usage(group: Path | None, name: str) -> int:
    return int((group / name).read_text()) if group else 0


def child(system: str, work: Path, mode: str, setting_json: str, group_dir: str) -> dict[str, Any]:
    group = Path(group_dir) if group_dir else None
    xq, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    if mode == "tune":
        for setting in settings(system):
            r = recall(load(system, work, setting)(xq[:200]), truth[:200])
            if r >= TARGET:
                return {"setting": setting, "tune_recall": r}
        return {"setting": setting, "tune_recall": r, "note": f"{TARGET} not reached"}
    import_libraries(system)
    base = cgroup_usage(group, "memory.usage_in_bytes")
    if group:
        (group / "memory.max_usage_in_bytes").write_text("0")
    search = load(system, work, json.loads(setting_json))
    found = search(xq)  # warm-up: a long-running process has its files paged in
    batch = []
    for _ in range(3):
        t0 = time.perf_counter()
        search(xq)
        batch.append(len(xq) / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for q in xq[:200]:
        search(q[None])
    single = 200 / (time.perf_counter() - t0)
    peak = cgroup_usage(group, "memory.max_usage_in_bytes")
    stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines()) if group else {}
    return {"recall": recall(found, truth), "qps_batch": statistics.median(batch), "qps_single": single,
            "held_bytes": peak - base, "base_bytes": base,
            # at the end: anonymous memory, and page cache (files read, the memory-mapped ones included)
            "anon_bytes": int(stat.get("rss", 0)), "cache_bytes": int(stat.get("cache", 0))}  # fmt: skip


def import_libraries(system: str) -> None:
    """Import what the system needs before the baseline reading, so memory per vector leaves the libraries out."""
    if system == "birder-index":
        import birder_index.indexer
        import birder_index.search  # noqa: F401
    elif system == "faiss-hnsw32":
        import faiss  # noqa: F401
    elif system.startswith("usearch"):
        import usearch.index  # noqa: F401
    else:
        import lancedb  # noqa: F401


def run_child(system: str, work: Path, mode: str, setting: dict[str, int], limit_mb: int | None) -> dict[str, Any]:
    root = memory_root()
    group = root / f"compare-{os.getpid()}-{system}"
    group.mkdir(exist_ok=True)
    try:
        if limit_mb:
            (group / "memory.limit_in_bytes").write_text(str(limit_mb << 20))
            memsw = group / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limit_mb << 20))  # no swap either: the limit is RAM
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        cmd = [sys.executable, __file__, "_child", system, str(work), mode, json.dumps(setting), str(group)]
        pre = f'echo $$ > {group / "cgroup.procs"} && exec "$@"'
        try:
            done = subprocess.run(["sh", "-c", pre, "sh", *cmd], capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return {"failed": f"stopped after {TIMEOUT} s (paging from disk)"}
        if done.returncode != 0:
            oom = "oom_kill 1" in (group / "memory.oom_control").read_text() or done.returncode in (-9, 137)
            return {"failed": "killed: over the memory limit" if oom else done.stderr.strip().splitlines()[-1]}
        return dict(json.loads(done.stdout.splitlines()[-1]))
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def memory_root() -> Path:
    """This process's memory cgroup (v1), where child groups may be made."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise SystemExit("no cgroup v1 memory controller here")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        system, work, mode, setting, group = sys.argv[2:]
        print(json.dumps(child(system, Path(work), mode, setting, group)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--limit-mb", type=int, nargs="+", default=[600, 400])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    make_index(args.n, work)
    results: dict[str, dict[str, Any]] = {}
    x = np.load(work / "x.npy", mmap_mode="r")
    n, d = x.shape
    for system in args.systems:
        row: dict[str, Any] = {}
        if system == "birder-index":
            row["build_s"] = json.loads((work / "import_seconds.json").read_text())
        else:
            row.update(build(system, np.ascontiguousarray(x), work))
        row.update(run_child(system, work, "tune", {}, None))
        for limit in (None, *args.limit_mb):
            key = f"limit {limit} MB" if limit else "no limit"
            row[key] = run_child(system, work, "measure", row.get("setting", {}), limit)
        results[system] = row
        print(line(system, row, n), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "compare.json").write_text(json.dumps({"n": n, "d": d, "limit_mb": args.limit_mb, "results": results},
                                                 indent=1))  # fmt: skip


def line(system: str, row: dict[str, Any], n: int) -> str:
    def cell(m: dict[str, Any]) -> str:
        if "failed" in m:
            return m["failed"]
        return (f"recall {m['recall']:.3f}, {m['qps_batch']:,.0f} q/s batch, {m['qps_single']:,.0f} single, "
                f"{m['held_bytes'] / n:,.0f} B/vector held")  # fmt: skip

    build_s = f"{row['build_s']:.0f} s" if row.get("build_s") else "-"
    limits = [key for key in row if key.startswith("limit ")]
    return (f"{system:<14} build {build_s}, setting {row.get('setting')}: {cell(row['no limit'])} | "
            + " | ".join(f"{key}: {cell(row[key])}" for key in limits))  # fmt: skip


if __name__ == "__main__":
    main()
