"""Check: every photo of a folder, embedded again from its file, finds itself first with score >= 0.999.

    python benchmarks/self_search.py PHOTOS --weights MODEL [--index-dir DIR]

Builds (or updates) the index, then re-decodes and re-embeds every indexed photo (not its stored vector) and
searches for it. Prints the worst rank-1 score and any photo that does not find itself first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from birder_index import ModelSpec
from birder_index import build_index
from birder_index import open_index
from birder_index.search.knn import search_vectors
from birder_index.search.queries import embed_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--index-dir", type=Path)
    args = parser.parse_args()
    index_dir = args.index_dir or Path(tempfile.mkdtemp()) / "index"
    t0 = time.perf_counter()
    report = build_index(args.photos, index_dir=index_dir, spec=ModelSpec(weights=args.weights))
    print(f"build: {report.indexed} indexed, {report.failed} failed in {time.perf_counter() - t0:.1f}s")
    with open_index(index_dir) as index:
        files = [str(args.photos.resolve() / p) for p in _indexed_paths(index)]
        encoder = index.load_encoder()
        xq = embed_files(encoder, files)
        results = search_vectors(index, xq, k=2)
    firsts = np.array([r[0].score for r in results])
    misses = [(f, r[0].path) for f, r in zip(files, results, strict=True) if r[0].path != f]
    print(
        f"{len(files)} photos searched: {len(files) - len(misses)} found themselves first; "
        f"rank-1 score min {firsts.min():.5f}, median {np.median(firsts):.5f}"
    )
    for f, got in misses:
        print(f"  MISS {f} -> {got}")
    raise SystemExit(1 if misses or firsts.min() < 0.999 else 0)


def _indexed_paths(index: object) -> list[str]:
    from birder_index.db import queries as q
    from birder_index.db.engine import session_scope

    with session_scope(index.engine) as s:  # type: ignore[attr-defined]
        return sorted(p for p, k in q.known_files(s).items() if k.status == "indexed")


if __name__ == "__main__":
    main()
