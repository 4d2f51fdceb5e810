"""Recall of the tuned index on three kinds of queries: the tuner's own (from the manifest), other vectors of the
collection (own id excluded), and new vectors from the same generator. Separates the winner's curse of tuning from
a gap between queries inside and outside the collection.

    python benchmarks/tuning_gap.py N      # N generated 768-d vectors (benchmarks/synthetic.py, calibrated)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from dedup import GEN

from birder_index.db import queries as q
from birder_index.db.engine import session_scope
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer.tune import drop_self
from birder_index.indexer.tune import recall_at as recall
from birder_index.search import nearest


def main() -> None:
    n, d = int(sys.argv[1]), 768
    x = GEN.sample(n + 1000, d, seed=n + d)
    xq, xb = x[:1000], x[1000:]
    work = Path(tempfile.mkdtemp())
    np.save(work / "xb.npy", xb)
    (work / "p.txt").write_text("\n".join(f"v{i}" for i in range(n)))
    import_embeddings(work / "xb.npy", work / "idx", paths_file=work / "p.txt")
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    with open_index(work / "idx") as index, session_scope(index.engine) as s:
        manifest = q.get_manifest(s)
        print(f"{index.ann().factory} {index.ann().params}")
        print(f"tuning queries (manifest):        recall@10 {manifest.recall_at_10:.4f}")
        pos = np.random.default_rng(7).choice(n, 1000, replace=False)
        gt_in = drop_self(flat.search(xb[pos], 11)[1], pos, 10)
        found = drop_self(nearest(index, xb[pos], k=11)[1] - 1, pos, 10)  # ids are rows + 1 in a fresh import
        print(f"other collection vectors:         recall@10 {recall(found, gt_in):.4f}")
        gt = flat.search(xq, 10)[1]
        print(f"new vectors:                      recall@10 {recall(nearest(index, xq, k=10)[1] - 1, gt):.4f}")
        seconds = []
        for _ in range(3):
            t0 = time.perf_counter()
            nearest(index, xq, k=10)
            seconds.append(time.perf_counter() - t0)
        print(f"queries/s, batch of 1000 new vectors: {1000 / np.median(seconds):.0f} (median of 3; the tuner measured "
              f"{manifest.queries_per_second:.0f} on its own queries)")  # fmt: skip
        xq16 = xq.astype(np.float16).astype(np.float32)
        print(f"new vectors rounded to float16:   recall@10 {recall(nearest(index, xq16, k=10)[1] - 1, gt):.4f}")


if __name__ == "__main__":
    main()
