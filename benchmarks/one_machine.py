"""Index, search and dedup at millions of vectors on one machine: time per stage, peak memory and recall.

    python benchmarks/one_machine.py index --sizes 1000000 3000000 10000000 --work /big   # 768-d
    python benchmarks/one_machine.py dedup --sizes 1000000 3000000 10000000 --work /big   # 512-d
    python benchmarks/one_machine.py index --sizes 100000 --work /tmp/small               # the path CI tests
    python benchmarks/one_machine.py index --sizes 3000000 --work /big --hnsw-coarse-from 0  # an alternative rule

Each size runs in a fresh process, so the peak memory is that size's alone. Vectors come from the calibrated
generator (benchmarks/synthetic.py, benchmarks/dedup.py's GEN), written a chunk at a time straight into a
float16 .npy: N x d float32 is never in memory. `index` imports them with `import_embeddings` (the code path of
`birder-index import`), then searches 1,000 held-out vectors of the same collection with `nearest` (batches
of 1,000, the median of 3 after a warm-up; and 200 queries one at a time) against a streamed exact search, and
prints what `birder-index info` says. `dedup` plants pairs just above the threshold (up to 0.01 above; closer
for thresholds above 0.98), decoys as far below it, and near-identical copies, imports them into the embedding
store (without the FAISS index, which dedup does not read, unless --with-faiss), then runs `find_duplicates` in a
fresh process (threshold 0.995 by default, as `dedup.py scale`), timing its stages by wrapping the functions that
do them (ids, centroids, the assignment pass, the join, grouping). `--join float32` forces float32 products in the
join where bfloat16 would be used, for the side-by-side comparison.

Peak memory is peak *anonymous* memory: the largest RssAnon of /proc/self/status, sampled every 0.1 s by a
thread. RssAnon is resident memory less file-backed pages, so the memory-mapped input, embedding store and id
map, which live in the page cache and which the kernel may drop, are not counted; VmHWM (everything resident,
the page cache of mapped files included) is printed beside it. Results also go to benchmarks/out/one_machine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from dedup import GEN
from realdata import OUT

K = 10
N_QUERIES = 1000
CHUNK = 1 << 14  # generator draws and copies at a time


# -- memory ----------------------------------------------------------------------------------------------------


class PeakAnon:
    """Samples this process's RssAnon every `interval` seconds; `peak_mb` is the largest seen."""

    def __init__(self, interval: float = 0.1) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, status_mb("RssAnon"))
            self._stop.wait(interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, status_mb("RssAnon"))
        return self.peak_mb


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


# -- data ----------------------------------------------------------------------------------------------------------


def generate(path: Path, n: int, d: int, seed: int) -> None:
    """n + 1,000 generated unit vectors, float16, into `path` (the first 1,000 are the held-out queries)."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    shape = GEN.shape(n + N_QUERIES, d, rng)
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, "w+", np.float16, (n + N_QUERIES, d))
    for start in range(0, n + N_QUERIES, CHUNK):
        m = min(CHUNK, n + N_QUERIES - start)
        out[start : start + m] = GEN.draw(shape, m, rng)
    out.flush()
    del out
    os.replace(tmp, path)


def write_paths(path: Path, n: int, offset: int = 0) -> None:
    with open(path, "w") as f:
        for start in range(0, n, 1 << 20):
            f.write("".join(f"v{i:09d}\n" for i in range(offset + start, offset + min(n, start + (1 << 20)))))


def exact_neighbours(xq: np.ndarray, xb: np.ndarray, k: int = K, block: int = 1 << 18) -> np.ndarray:
    """Positions (nq, k) of the exact top-k inner products, xb streamed in blocks."""
    best_d = np.full((len(xq), k), -np.inf, np.float32)
    best_i = np.full((len(xq), k), -1, np.int64)
    for start in range(0, len(xb), block):
        d, i = faiss.knn(xq, np.ascontiguousarray(xb[start : start + block], np.float32), k, faiss.METRIC_INNER_PRODUCT)
        d, i = np.concatenate([best_d, d], 1), np.concatenate([best_i, i + start], 1)
        top = np.argsort(-d, 1)[:, :k]
        best_d, best_i = np.take_along_axis(d, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(found, truth, strict=True)]))


# -- index ---------------------------------------------------------------------------------------------------------


def run_index(n: int, work: Path, hnsw_coarse_from: int | None = None) -> dict[str, Any]:
    """One size, in this process: generate, import (timed by stage), search, info. `hnsw_coarse_from`: the size
    from which the rules take an HNSW coarse quantizer (default: theirs), to measure that alternative."""
    from birder_index.indexer import import_embeddings
    from birder_index.indexer import open_index
    from birder_index.indexer import select
    from birder_index.search import nearest

    if hnsw_coarse_from is not None:
        select.HNSW_COARSE_MIN = hnsw_coarse_from

    d = 768
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = work / f"x{n}x{d}.npy"
    generate(data, n, d, seed=n + d)
    everything = np.load(data, mmap_mode="r")
    xq = np.ascontiguousarray(everything[:N_QUERIES], np.float32)
    collection = work / f"collection{n}.npy"  # the input file: the rows after the queries, as a .npy of its own
    if not collection.exists():
        out = np.lib.format.open_memmap(collection, "w+", np.float16, (n, d))
        for start in range(0, n, CHUNK):
            out[start : start + CHUNK] = everything[N_QUERIES + start : N_QUERIES + start + CHUNK]
        out.flush()
        del out
    write_paths(work / "paths.txt", n)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth = exact_neighbours(xq, np.load(collection, mmap_mode="r"))
    truth_s = time.perf_counter() - t0

    index_dir = work / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    peak = PeakAnon()
    t0 = time.perf_counter()
    report = import_embeddings(collection, index_dir, paths_file=work / "paths.txt")
    total = time.perf_counter() - t0
    r = report.index
    with open_index(index_dir) as index:
        state = index.ann()
        nearest(index, xq, k=K)  # warm-up: memory maps paged in, as in a long-running process
        rates, found = [], None
        for _ in range(3):
            t = time.perf_counter()
            _, found = nearest(index, xq, k=K)
            rates.append(N_QUERIES / (time.perf_counter() - t))
        t = time.perf_counter()
        for q in xq[:200]:
            nearest(index, q[None], k=K)
        single = 200 / (time.perf_counter() - t)
        params = {k: v for k, v in state.params.items() if k != "timing"}
    anon = peak.stop()
    assert found is not None
    cli = [sys.executable, "-c", "from birder_index.cli import cli; cli()"]
    info = subprocess.run([*cli, "info", "--index-dir", str(index_dir)], capture_output=True, text=True).stdout
    stores = {p.name: p.stat().st_size for p in index_dir.iterdir() if p.is_file()}
    return {
        "n": n, "d": d, "factory": state.factory, "params": params,
        "generate_s": gen_s, "exact_truth_s": truth_s, "import_total_s": total,
        "rows_and_store_s": total - r.seconds, "train_s": r.train_seconds, "add_s": r.add_seconds,
        "tune_s": r.tune_seconds, "faiss_write_s": r.seconds - r.train_seconds - r.add_seconds - r.tune_seconds,
        "tuned_recall": r.recall, "tuned_qps": r.qps,
        "recall": recall(found - 1, truth), "qps_batch": float(np.median(rates)), "qps_single": single,
        "peak_anon_mb": anon, "vm_hwm_mb": status_mb("VmHWM"), "disk_bytes": stores, "info": info,
    }  # fmt: skip


# -- dedup ---------------------------------------------------------------------------------------------------------


def plant(path: Path, n: int, d: int, threshold: float, seed: int) -> dict[str, np.ndarray]:
    """n vectors: generated ones, then planted pairs (source, copy) at known cosines: 1/3 of 0.1 % just above the
    threshold, 1/3 just below (decoys), 1/3 near-identical. Returns the planted pairs and their exact
    cosines as stored (float16)."""
    n_plant = max(30, n // 1000) // 3 * 3
    base = n - n_plant
    generate(path, base, d, seed)  # rows [0, base + 1000); the first 1000 are unused here
    rng = np.random.default_rng(seed + 1)
    src = rng.choice(np.arange(N_QUERIES, base + N_QUERIES), n_plant, replace=False)
    span = min(0.01, (1 - threshold) / 2)  # within 0.01 of the threshold, and below 1 however high it is
    target = np.concatenate([
        threshold + rng.uniform(span / 10, span, n_plant // 3),
        threshold - rng.uniform(span / 10, span, n_plant // 3),
        np.full(n_plant // 3, threshold + 0.6 * (1 - threshold)),  # near-identical: 0.998 at 0.995
    ])  # fmt: skip
    x = np.load(path, mmap_mode="r")
    s = x[src].astype(np.float64)
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    u = rng.standard_normal(s.shape)
    u -= np.einsum("ij,ij->i", u, s)[:, None] * s
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    copies = (target[:, None] * s + np.sqrt(1 - target[:, None] ** 2) * u).astype(np.float16)
    out = np.lib.format.open_memmap(path.with_name("planted.npy"), "w+", np.float16, (n, d))
    for start in range(0, base, CHUNK):
        stop = min(base, start + CHUNK)
        out[start:stop] = x[N_QUERIES + start : N_QUERIES + stop]
    out[base:] = copies
    out.flush()
    stored_src = out[src - N_QUERIES].astype(np.float64)
    stored_copy = out[base:].astype(np.float64)
    cos = np.einsum("ij,ij->i", stored_src, stored_copy) / (
        np.linalg.norm(stored_src, axis=1) * np.linalg.norm(stored_copy, axis=1)
    )
    return {"a": src - N_QUERIES, "b": np.arange(base, n), "cos": cos}


def run_dedup(n: int, work: Path, threshold: float, *, with_faiss: bool = False, join: str = "auto") -> dict[str, Any]:
    from birder_index.indexer import import_embeddings

    d = 512
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth = plant(work / f"d{n}x{d}.npy", n, d, threshold, seed=n + d)
    write_paths(work / "paths.txt", n)
    gen_s = time.perf_counter() - t0
    index_dir = work / "dindex"
    shutil.rmtree(index_dir, ignore_errors=True)
    t0 = time.perf_counter()
    if with_faiss:
        import_embeddings(work / "planted.npy", index_dir, paths_file=work / "paths.txt")
    else:  # dedup reads only the embedding store: the FAISS index, the `index` run's subject, is not built
        from birder_index.indexer import importer
        from birder_index.indexer.refresh import RefreshReport

        real = importer.refresh_ann
        importer.refresh_ann = lambda index, **_: RefreshReport("none", 0, False, 0.0)  # type: ignore[assignment]
        try:
            import_embeddings(work / "planted.npy", index_dir, paths_file=work / "paths.txt")
        finally:
            importer.refresh_ann = real
    import_s = time.perf_counter() - t0
    (work / "planted.npy").unlink()
    out = subprocess.run([sys.executable, __file__, "_dedup_child", str(index_dir), str(threshold), join],
                         capture_output=True, text=True, check=True)  # fmt: skip
    child = json.loads(out.stdout.splitlines()[-1])
    found = {(min(a, b), max(a, b)) for a, b in np.load(index_dir / "pairs.npy").tolist()}
    planted = [(min(a, b) + 1, max(a, b) + 1) for a, b in zip(truth["a"].tolist(), truth["b"].tolist(), strict=True)]
    above = truth["cos"] >= threshold
    hit = np.array([p in found for p in planted])
    return {
        "n": n, "d": d, "threshold": threshold, "generate_s": gen_s, "import_s": import_s, **child,
        "planted_above": int(above.sum()), "found_above": float(hit[above].mean()),
        "planted_below": int((~above).sum()), "found_below": int(hit[~above].sum()),
    }  # fmt: skip


def dedup_child(index_dir: str, threshold: float, join: str) -> None:
    from birder_index.dedup import find
    from birder_index.dedup import find_duplicates
    from birder_index.dedup import pairs
    from birder_index.indexer import open_index
    from birder_index.indexer.index import Index

    if join == "float32":  # the join's products in float32 even where bfloat16 is native: the comparison run
        pairs.fast_bf16 = lambda device: False
    # stage -> where the function doing it is looked up when called (find.py imports similar_pairs by name)
    stages = {"ids": (Index, "id_rows"), "centroids": (pairs, "train_centroids"), "join": (pairs, "join_cells"),
              "similar_pairs": (find, "similar_pairs")}  # fmt: skip
    spent = dict.fromkeys(stages, 0.0)
    for stage, (owner, name) in stages.items():
        setattr(owner, name, _timed(getattr(owner, name), spent, stage))
    peak = PeakAnon()
    t0 = time.perf_counter()
    with open_index(index_dir) as index:
        result = find_duplicates(index, threshold, thumbnail_min=0)
    seconds = time.perf_counter() - t0
    a, b, _ = result.pairs
    np.save(Path(index_dir) / "pairs.npy", np.stack([a, b], 1) if len(a) else np.zeros((0, 2), np.int64))
    split = {  # similar_pairs = centroids + the assignment pass + the join; the rest of dedup is grouping
        "ids_s": spent["ids"], "centroids_s": spent["centroids"], "join_s": spent["join"],
        "assign_s": spent["similar_pairs"] - spent["centroids"] - spent["join"],
        "group_s": seconds - spent["similar_pairs"] - spent["ids"],
    }  # fmt: skip
    print(json.dumps({"dedup_s": seconds, **split, "join_products": join, "pairs": len(a), "groups": len(result.groups),
                      "peak_anon_mb": peak.stop(), "vm_hwm_mb": status_mb("VmHWM")}))  # fmt: skip


def _timed(fn: Any, spent: dict[str, float], name: str) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t0

    return timed


# -- the run -------------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # a size run in its own process
        kind, *rest = sys.argv[1:]
        if kind == "_dedup_child":
            return dedup_child(rest[0], float(rest[1]), rest[2])
        hnsw = int(rest[2]) if kind == "_index" and len(rest) > 2 else None
        result = run_index(int(rest[0]), Path(rest[1]), hnsw) if kind == "_index" else run_dedup(
            int(rest[0]), Path(rest[1]), float(rest[2]), join=rest[3], with_faiss=rest[4:] == ["faiss"])  # fmt: skip
        print(json.dumps(result))
        return None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["index", "dedup"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, required=True, help="a folder with room: about 3.5 bytes x N x d x 2")
    # dedup.py scale's threshold: the generator's nearest neighbours sit at cosine ~0.98 (docs/benchmarks.md), so a
    # threshold of 0.95 would pair most of the collection instead of finding its duplicates
    parser.add_argument("--threshold", type=float, default=0.995, help="dedup's cosine threshold")
    parser.add_argument("--keep", action="store_true", help="keep the generated files between runs")
    parser.add_argument("--with-faiss", action="store_true", help="dedup: build the FAISS index on import too")
    parser.add_argument("--hnsw-coarse-from", type=int, help="index: take an HNSW coarse quantizer from this size")
    parser.add_argument("--join", choices=["auto", "float32"], default="auto",
                        help="dedup: the join's products (auto: bfloat16, float32 re-check, where native)")  # fmt: skip
    args = parser.parse_args()
    results, failed = [], 0
    for n in args.sizes:
        folder = args.work / f"{args.what}-{n}"
        cmd = [sys.executable, __file__, f"_{args.what}", str(n), str(folder)]
        if args.what == "dedup":
            cmd += [str(args.threshold), args.join, *(["faiss"] if args.with_faiss else [])]
        elif args.hnsw_coarse_from is not None:
            cmd.append(str(args.hnsw_coarse_from))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"{n}: failed\n{done.stderr[-3000:]}", flush=True)
            failed += 1
            continue
        row = json.loads(done.stdout.splitlines()[-1])
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "info"}), flush=True)
        if row.get("info"):
            print(row["info"], flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / f"one_machine_{args.what}.json").write_text(json.dumps(results, indent=1))
    if failed:
        sys.exit(1)
    return None


if __name__ == "__main__":
    main()
