"""FAISS index benchmark: birder-index's self-configured, self-tuned index against exact search, HNSW32 and the
index autofaiss's published rules pick for the same memory budget.

    python benchmarks/index.py --photos PHOTOS [--sizes 100000 1000000] [--dims 512 768 1024]

Data: the shared ImageNet encoder's embeddings of random crops of the real photos, and a generator calibrated
against them (benchmarks/synthetic.py); both rows of statistics are printed side by side. Each collection gets
1,000 held-out queries drawn from the same distribution; recall@10 is against exact search. Queries/s are
measured in one batch of 1,000 and one query at a time; bytes per vector are the serialized index (RAM) and
everything in the index folder (disk). Results also go to benchmarks/out/index.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from realdata import OUT
from realdata import crop_embeddings
from realdata import photo_paths
from synthetic import calibrate
from synthetic import normalize
from synthetic import stats

from birder_index.backbone.cpu import usable_cores
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer import select
from birder_index.search import nearest

K = 10
N_QUERIES = 1000


@dataclass
class Row:
    data: str
    n: int
    d: int
    index: str
    recall: float
    qps_batch: float
    qps_single: float
    build_s: float
    ram_bytes: float
    disk_bytes: float
    note: str = ""


def recall(I: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(I[:, :K], gt, strict=True)]))


def timed_search(search: Callable[[np.ndarray], np.ndarray], xq: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(I, queries/s in a batch of all queries, queries/s one at a time over 200 queries): medians of 3 runs after
    a warm-up run (memory maps paged in, as in a long-running process)."""
    I = search(xq)
    batch = []
    for _ in range(3):
        t0 = time.perf_counter()
        search(xq)
        batch.append(len(xq) / (time.perf_counter() - t0))
    single = []
    for _ in range(3):
        t0 = time.perf_counter()
        for q in xq[:200]:
            search(q[None])
        single.append(200 / (time.perf_counter() - t0))
    return I, float(np.median(batch)), float(np.median(single))


def serialized_size(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).size)


# -- birder-index --------------------------------------------------------------------------------------------------


def run_ours(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, label: str, work: Path) -> tuple[Row, int]:
    np.save(work / "xb.npy", xb)
    (work / "paths.txt").write_text("\n".join(f"v{i}" for i in range(len(xb))))
    t0 = time.perf_counter()
    report = import_embeddings(work / "xb.npy", work / "index", paths_file=work / "paths.txt")
    total = time.perf_counter() - t0
    with open_index(work / "index") as index:
        state = index.ann()
        ids, _ = index.id_rows()
        assert np.array_equal(ids, np.arange(1, len(xb) + 1)), "a fresh import numbers its rows 1..N"
        I, qb, qs = timed_search(lambda x: nearest(index, x, k=K)[1], xq)
        I = I - 1  # image ids -> positions in xb
        ram = serialized_size(state.index)
        disk = sum(p.stat().st_size for p in (work / "index").iterdir())
    r = report.index
    note = (f"{state.factory}, nprobe {state.params.get('nprobe', '-')}, k_factor {state.params.get('k_factor', 1)}; "
            f"import {total:.0f}s = rows+store {total - r.seconds:.0f}s + train {r.train_seconds:.0f}s "
            f"+ add {r.add_seconds:.0f}s + tune {r.tune_seconds:.0f}s")  # fmt: skip
    row = Row(label, len(xb), xb.shape[1], "birder-index", recall(I, gt), qb, qs, r.train_seconds + r.add_seconds,
              ram / len(xb), disk / len(xb), note)  # fmt: skip
    for p in (work / "index").iterdir():
        p.unlink()
    (work / "index").rmdir()
    return row, ram


# -- baselines -----------------------------------------------------------------------------------------------------


def run_faiss(
    name: str, index: faiss.Index, xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, label: str,
    train_points: int = 0, tune: Callable[[faiss.Index], str] | None = None,
) -> Row:  # fmt: skip
    t0 = time.perf_counter()
    if train_points:
        sample = np.random.default_rng(0).choice(len(xb), min(train_points, len(xb)), replace=False)
        index.train(xb[np.sort(sample)])
    index.add(xb)
    build = time.perf_counter() - t0
    note = tune(index) if tune else ""
    I, qb, qs = timed_search(lambda x: index.search(x, K)[1], xq)
    size = serialized_size(index)
    return Row(label, len(xb), xb.shape[1], name, recall(I, gt), qb, qs, build, size / len(xb), size / len(xb), note)


def hnsw_tuner(xq: np.ndarray, gt: np.ndarray, target: float = 0.95) -> Callable[[faiss.Index], str]:
    def tune(index: faiss.Index) -> str:
        for ef in (16, 32, 64, 128, 256, 512, 1024):
            faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef)
            if recall(index.search(xq[:200], K)[1], gt[:200]) >= target:
                return f"efSearch {ef} (smallest reaching {target} on 200 queries)"
        return f"efSearch {ef} ({target} not reached on 200 queries)"

    return tune


# -- autofaiss's rules (get_optimal_index_keys_v2 and its nprobe search), reimplemented for this benchmark --------


def autofaiss_key(n: int, d: int, max_bytes: int) -> str:
    """The first index key autofaiss 2.x recommends (criteo/autofaiss, autofaiss/external/optimize.py)."""
    if n < 1000:
        return "Flat"
    if n < 10_000:
        return "HNSW15"
    m_hnsw = math.floor((max_bytes / (4 * n) - d) / 2)
    if m_hnsw >= 8:
        return f"HNSW{min(m_hnsw, 32)}"
    clusters = _autofaiss_clusters(n)
    if n < 1_000_000 and n * (4 * d + 8) + clusters[0] * 4 * d <= max_bytes:
        return f"IVF{clusters[0]},Flat"
    ratio = 4.0 * n * d / max_bytes
    for pq in (256, 128, 64, 48, 32, 24, 16, 8, 4):
        if pq < d and 4 * d / (pq + 8) >= ratio:
            y = (min(d // pq, 6) + 1) * pq
            nc = clusters[0]
            return f"OPQ{pq}_{y},IVF{nc}{'_HNSW32' if nc >= 1000 else ''},PQ{pq}x8"
    return "none fits"


def _autofaiss_clusters(n: int) -> list[int]:
    if n < 1_000_000:
        return [int(2 ** round(math.log2(4 * math.sqrt(n))))]
    return [16_384] if n < 10_000_000 else [65_536]


def autofaiss_tuner(max_ms: float = 10.0) -> Callable[[faiss.Index], str]:
    """autofaiss tunes nprobe to the most recall within a query-time budget (default 10 ms per query)."""

    def tune(index: faiss.Index) -> str:
        ivf = faiss.extract_index_ivf(index)
        probe = np.random.default_rng(2).standard_normal((50, index.d)).astype(np.float32)
        best = 1
        nprobe = 1
        while nprobe <= ivf.nlist:
            ivf.nprobe = nprobe
            if isinstance(ivf.quantizer, faiss.IndexHNSW):
                ivf.quantizer.hnsw.efSearch = max(32, 2 * nprobe)
            t0 = time.perf_counter()
            for q in normalize(probe):
                index.search(q[None], 40)
            if (time.perf_counter() - t0) / len(probe) * 1000 >= max_ms:
                break
            best, nprobe = nprobe, nprobe * 2
        ivf.nprobe = best
        if isinstance(ivf.quantizer, faiss.IndexHNSW):
            ivf.quantizer.hnsw.efSearch = max(32, 2 * best)
        return f"nprobe {best} (largest under {max_ms:.0f} ms/query)"

    return tune


def autofaiss_train_points(key: str, n: int, per_centroid: int) -> int:
    match = re.search(r"IVF(\d+)", key)
    return min(n, per_centroid * int(match.group(1))) if match else 0


# -- the run -------------------------------------------------------------------------------------------------------


def exact_gt(xb: np.ndarray, xq: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    return flat.search(xq, K)[1]


def bench(
    xb: np.ndarray, xq: np.ndarray, label: str, args: argparse.Namespace, work: Path, autofaiss: bool = True
) -> list[Row]:
    n, d = xb.shape
    gt = exact_gt(xb, xq)
    rows = []
    ours, ram = run_ours(xb, xq, gt, label, work)
    rows.append(ours)
    print(_fmt(ours), flush=True)
    steps: list[tuple[str, Callable[[], Row]]] = [
        ("exact", lambda: run_faiss("exact (Flat)", faiss.IndexFlatIP(d), xb, xq, gt, label)),
    ]
    if n <= args.baselines_max or d in args.baseline_dims:
        steps.append(("hnsw", lambda: run_faiss("HNSW32", faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT),
                                                  xb, xq, gt, label, tune=hnsw_tuner(xq, gt))))  # fmt: skip
        key = autofaiss_key(n, d, ram)
        points = autofaiss_train_points(key, n, args.autofaiss_points)
        if autofaiss:
            steps.append(("autofaiss", lambda: _autofaiss(key, points, xb, xq, gt, label)))
    for _name, step in steps:
        row = step()
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def _autofaiss(key: str, points: int, xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, label: str) -> Row:
    index = faiss.index_factory(xb.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    if "IVF" in key:
        faiss.extract_index_ivf(index).cp.niter = 10
    row = run_faiss(
        f"autofaiss pick: {key}", index, xb, xq, gt, label, points, autofaiss_tuner() if "IVF" in key else None
    )
    row.note += f"; trained on {points} vectors, 10 k-means iterations" if points else ""
    return row


def _fmt(r: Row) -> str:
    return (f"{r.data:<10} {r.n:>8} {r.d:>5}  {r.index:<44} recall@10 {r.recall:.3f}  {r.qps_batch:>8.0f} q/s batch "
            f"{r.qps_single:>6.0f} q/s single  build {r.build_s:>6.1f}s  RAM {r.ram_bytes:>6.0f} B/vec  "
            f"disk {r.disk_bytes:>6.0f} B/vec  {r.note}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--crops", type=int, default=20_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument(
        "--baselines-max",
        type=int,
        default=100_000,
        help="above this N, run HNSW32 and autofaiss's pick only for the --baseline-dims",
    )
    parser.add_argument("--baseline-dims", type=int, nargs="*", default=[768])
    parser.add_argument(
        "--autofaiss-cells",
        nargs="*",
        help="run autofaiss's pick only for these NxD cells, e.g. 1000000x768 (default: every cell with baselines);"
        " its OPQ and k-means training take 4 to 15 minutes per cell on 2 cores",
    )
    parser.add_argument("--autofaiss-points", type=int, default=39, help="training points per centroid for autofaiss")
    args = parser.parse_args()
    faiss.omp_set_num_threads(usable_cores())
    real = normalize(crop_embeddings(args.photos, args.crops))
    real_stats = stats(real)
    gen, gen_stats = calibrate(real_stats, len(real), 768, per_cluster=args.crops // len(photo_paths(args.photos)))
    print(f"real crops   ({len(real)} x {real.shape[1]}): {real_stats.row()}")
    print(f"generator    ({len(real)} x 768):  {gen_stats.row()}   {gen}")
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp())
    # The real features, at a size where birder-index would search exactly: IVF-PQ forced, to compare its
    # behaviour on real and generated vectors of the same size.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(real))
    select.FLAT_MAX = 1_000
    for label, x in (("real", real[order]), ("generated", gen.sample(len(real) + N_QUERIES, 768, seed=3))):
        # autofaiss's pick here (OPQ256 at 1280 d) spends over 20 minutes in FAISS's OPQ training on 2 cores
        rows += bench(x[N_QUERIES:], x[:N_QUERIES], label + "*", args, work, autofaiss=False)
    select.FLAT_MAX = 50_000
    for n in args.sizes:
        for d in args.dims:
            x = gen.sample(n + N_QUERIES, d, seed=n + d)
            print(f"generated {n} x {d}: {stats(x[:200_000]).row()} (first 200k)")
            wanted = args.autofaiss_cells is None or f"{n}x{d}" in args.autofaiss_cells
            rows += bench(x[N_QUERIES:], x[:N_QUERIES], "generated", args, work, autofaiss=wanted)
            del x
    OUT.mkdir(exist_ok=True)
    (OUT / "index.json").write_text(json.dumps({"generator": asdict(gen), "real": asdict(real_stats),
                                                "rows": [asdict(r) for r in rows]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
