"""Search speed through the public API, quiet and beside other work, and what `info` says about it.

    python benchmarks/search_speed.py --n 200000 --work /tmp/speed [--photos DIR --weights FILE]

One run, on one index of N x 768 vectors from the calibrated generator (benchmarks/dedup.py's GEN), imported
with `import_embeddings` (which tunes the index and records the rate `info` prints):

1. `info`'s recall and rate against the API's: `nearest(index, xq, k=10)` on 1,000 held-out vectors of the
   same collection, batches of 1,000, the median of 5 after a warm-up; recall@10 against exact search.
2. Where a batch's time goes: FAISS's search for the k * k_factor candidates, the exact re-rank, the rest;
   the coarse quantizer's multiply-adds per query and the bytes the re-rank gathers per query.
3. Single queries: 1,000 queries one at a time in this process.
4. Under load, each beside the same search: nothing (quiet), one and two busy single-threaded processes
   (`while True: pass`), and a running build (`birder-index build` of --photos with --weights, rebuilt from
   scratch in a loop; skipped without --photos). The rate is the median of 7 batches of 1,000 queries; the ratio
   is to the quiet rate. Each condition runs with OMP_WAIT_POLICY=PASSIVE (birder-index's default) and ACTIVE
   (libgomp's spinning threads, the default before 0.2.0), each in a fresh process.
5. The page cache: how much of the float16 store one batch's re-rank touches, and the batch rate with the page
   cache dropped first (--cold, needs root: it writes /proc/sys/vm/drop_caches).

Results also go to benchmarks/out/search_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from dedup import GEN
from realdata import OUT

K = 10
N_QUERIES = 1000


def make_index(n: int, work: Path) -> tuple[Path, Path, Path]:
    """(index folder, queries .npy, ground truth .npy) of n generated 768-d vectors plus 1,000 held-out queries."""
    import faiss

    from birder_index.indexer import import_embeddings

    index_dir, queries, truth = work / "index", work / "queries.npy", work / "truth.npy"
    if (index_dir / "index.db").exists():
        return index_dir, queries, truth
    x = GEN.sample(n + N_QUERIES, 768, seed=n + 768)
    np.save(queries, x[:N_QUERIES])
    np.save(work / "x.npy", x[N_QUERIES:])
    np.save(truth, faiss.knn(x[:N_QUERIES], x[N_QUERIES:], K, faiss.METRIC_INNER_PRODUCT)[1])
    (work / "paths.txt").write_text("".join(f"v{i}\n" for i in range(n)))
    del x
    t0 = time.perf_counter()
    import_embeddings(work / "x.npy", index_dir, paths_file=work / "paths.txt")
    # x.npy stays for benchmarks/compare.py, which builds the other libraries' indexes from the same vectors
    (work / "import_seconds.json").write_text(json.dumps(time.perf_counter() - t0))
    return index_dir, queries, truth


def measure(index_dir: Path, queries: Path, truth: Path, *, batches: int, single: int) -> dict[str, Any]:
    """In this process: the API's batch rate (median of `batches`), recall, the time split, single queries."""
    import faiss

    from birder_index.indexer import ann
    from birder_index.indexer import open_index
    from birder_index.indexer.vectors import normalize
    from birder_index.search import nearest

    xq, gt = np.load(queries), np.load(truth)
    with open_index(index_dir) as index:
        state = index.ann()
        t0 = time.perf_counter()
        nearest(index, xq, k=K)  # the first batch: the store's pages come from disk unless the page cache holds them
        first = len(xq) / (time.perf_counter() - t0)
        rates = []
        for _ in range(batches):
            t0 = time.perf_counter()
            _, found = nearest(index, xq, k=K)
            rates.append(len(xq) / (time.perf_counter() - t0))
        out: dict[str, Any] = {"qps_batch": statistics.median(rates), "qps_batches": rates, "qps_first": first}
        out["recall"] = float(np.mean([len(np.intersect1d(a - 1, b)) / K for a, b in zip(found, gt, strict=True)]))
        if single:
            t0 = time.perf_counter()
            for q in xq[:single]:
                nearest(index, q[None], k=K)
            out["qps_single"] = single / (time.perf_counter() - t0)
        params = state.params
        if "nprobe" in params:  # the split of a batch: candidates, re-rank
            nprobe, k_factor = params["nprobe"], params["k_factor"]
            xn = normalize(xq)
            t0 = time.perf_counter()
            _, cand = ann.search(state.index, xn, K * k_factor, nprobe=nprobe)
            t1 = time.perf_counter()
            rows, _ = index.rows_of(cand.ravel())
            store = index.store().array()
            t2 = time.perf_counter()
            ann.rerank_scores(store, rows.reshape(cand.shape), xn)
            t3 = time.perf_counter()
            d = store.shape[1]
            distinct = len(np.unique(rows))
            out["split_ms"] = {
                "faiss_candidates": 1e3 * (t1 - t0),
                "rows_of": 1e3 * (t2 - t1),
                "rerank": 1e3 * (t3 - t2),
            }
            out["coarse_mflop_per_query"] = 2 * params["nlist"] * d / 1e6
            out["rerank_kb_per_query"] = K * k_factor * d * store.dtype.itemsize / 1e3
            out["store_mb"] = store.nbytes / 1e6
            out["batch_touches_mb"] = distinct * d * store.dtype.itemsize / 1e6
        out["faiss_threads"] = faiss.omp_get_max_threads()
    return out


def child(argv: list[str]) -> None:
    index_dir, queries, truth, batches, single = argv
    print(json.dumps(measure(Path(index_dir), Path(queries), Path(truth), batches=int(batches), single=int(single))))


def run_child(args: list[str], policy: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    done = subprocess.run([sys.executable, __file__, "_child", *args], env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def busy(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(count)]


def build_loop(photos: Path, weights: Path, work: Path) -> subprocess.Popen[bytes]:
    """`birder-index build` of the photos into a fresh index, again and again."""
    target = work / "build-index"
    script = (
        "import shutil, subprocess, sys\n"
        "while True:\n"
        f"    shutil.rmtree({str(target)!r}, ignore_errors=True)\n"
        "    subprocess.run([sys.executable, '-c', 'from birder_index.cli import cli; cli()', 'build', "
        f"{str(photos)!r}, '--weights', {str(weights)!r}, '--index-dir', {str(target)!r}, '--quiet'], "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill each process and what it started (each leads its own session)."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--work", type=Path, default=None, help="keeps the index between runs when given")
    parser.add_argument("--photos", type=Path, help="photos for the running-build condition")
    parser.add_argument("--weights", type=Path, help="the model file for the running-build condition")
    parser.add_argument("--cold", action="store_true", help="also time a batch with the page cache dropped (root)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    index_dir, queries, truth = make_index(args.n, work)
    files = [str(index_dir), str(queries), str(truth)]

    from birder_index.indexer import describe
    from birder_index.indexer import open_index

    with open_index(index_dir) as index:
        info = describe(index)["index"]
    result: dict[str, Any] = {"n": args.n, "info": info}
    quiet = run_child([*files, "5", "1000"], "PASSIVE")
    result["quiet"] = quiet
    print(f"index: {info['type']} {info['params']}, {info['bytes_per_vector']:.0f} bytes/vector in RAM")
    print(f"info says: recall@10 {info['recall_at_10']:.3f} at {info['queries_per_second']:,.0f} queries/s "
          f"({info['params'].get('timing')})")  # fmt: skip
    print(f"the API:   recall@10 {quiet['recall']:.3f} at {quiet['qps_batch']:,.0f} queries/s in batches of 1,000 "
          f"(median of 5: {', '.join(f'{r:,.0f}' for r in quiet['qps_batches'])}); info / API = "
          f"{info['queries_per_second'] / quiet['qps_batch']:.2f}")  # fmt: skip
    print(f"single queries: {quiet['qps_single']:,.0f} queries/s, one at a time")
    if "split_ms" in quiet:
        s = quiet["split_ms"]
        print(f"a batch of 1,000: FAISS candidates {s['faiss_candidates']:.0f} ms, id -> row {s['rows_of']:.0f} ms, "
              f"exact re-rank {s['rerank']:.0f} ms; per query the coarse quantizer does "
              f"{quiet['coarse_mflop_per_query']:.1f} MFLOP and the re-rank gathers "
              f"{quiet['rerank_kb_per_query']:.0f} KB; one batch touches {quiet['batch_touches_mb']:.0f} MB of the "
              f"{quiet['store_mb']:.0f} MB store")  # fmt: skip
    conditions: list[tuple[str, Any]] = [("quiet", None), ("1 busy process", 1), ("2 busy processes", 2)]
    if args.photos and args.weights:
        conditions.append(("a running build", "build"))
    loads: dict[str, dict[str, float]] = {}
    for name, load in conditions:
        loads[name] = {}
        for policy in ("PASSIVE", "ACTIVE"):
            procs = [build_loop(args.photos, args.weights, work)] if load == "build" else busy(load or 0)
            time.sleep(3 if load == "build" else 0.5)  # the build past its start-up
            try:
                loads[name][policy] = run_child([*files, "7", "0"], policy)["qps_batch"]
            finally:
                stop(procs)
                shutil.rmtree(work / "build-index", ignore_errors=True)
        base = loads["quiet"]
        print(f"{name:<18} " + "  ".join(f"{p}: {loads[name][p]:>7,.0f} q/s ({loads[name][p] / base[p]:.2f} of quiet)"
                                        for p in ("PASSIVE", "ACTIVE")))  # fmt: skip
    result["loads"] = loads
    if args.cold:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        cold = run_child([*files, "1", "0"], "PASSIVE")
        result["cold_first_batch"] = cold["qps_first"]
        print(
            f"page cache dropped first: the first batch {cold['qps_first']:,.0f} q/s, the next {cold['qps_batch']:,.0f}"
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "search_speed.json").write_text(json.dumps(result, indent=1))
    return None


if __name__ == "__main__":
    main()
