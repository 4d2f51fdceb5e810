"""The FAISS add over Ray tasks (indexer/ray_add.py) on the local 3-node cluster: the same inverted lists (ids and
codes, in order) and the same search results as one process adding every vector."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from birder_index.distributed import RaySettings
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer import reindex
from birder_index.indexer.ray_add import add_on_ray
from birder_index.indexer.ray_add import shard_bounds
from birder_index.indexer.vectors import VectorStore
from birder_index.indexer.vectors import normalize

pytest.importorskip("ray", reason="the ray extra is not installed")
D = 32


def _vectors(n: int, seed: int = 0, d: int = D) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)).astype(np.float32)
    return centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)


def lists(index: faiss.Index) -> list[tuple[np.ndarray, list[bytes]]]:
    """Each inverted list's ids and codes, in list order (fast-scan lists unpacked from their blocks)."""
    ivf = faiss.extract_index_ivf(index)
    inv = faiss.downcast_InvertedLists(ivf.invlists)
    packer = ivf.get_CodePacker() if isinstance(inv, faiss.BlockInvertedLists) else None
    out = []
    for no in range(ivf.nlist):
        n = inv.list_size(no)
        ids = faiss.rev_swig_ptr(inv.get_ids(no), n).copy() if n else np.zeros(0, np.int64)
        if packer is None:
            raw = faiss.rev_swig_ptr(inv.get_codes(no), n * ivf.code_size).copy() if n else np.zeros(0, np.uint8)
            codes = [raw[i * ivf.code_size : (i + 1) * ivf.code_size].tobytes() for i in range(n)]
        else:
            blocks = -(-n // packer.nvec)
            raw = faiss.rev_swig_ptr(inv.get_codes(no), blocks * packer.block_size).copy().reshape(blocks, -1)
            codes = [packer.unpack_1(raw, i).tobytes() for i in range(n)]
        out.append((ids, codes))
    return out


def _same_lists(a: faiss.Index, b: faiss.Index) -> None:
    la, lb = lists(a), lists(b)
    assert sum(len(ids) for ids, _ in la) == a.ntotal > 0
    for (ids_a, codes_a), (ids_b, codes_b) in zip(la, lb, strict=True):
        assert np.array_equal(ids_a, ids_b)
        assert codes_a == codes_b


def test_sharded_add_equals_one_process(cluster: object, tmp_path: Path) -> None:
    n = 3000
    store = VectorStore(tmp_path / "vectors.f16", D, "float16", 0)
    store.drop_torn_tail()  # creates the file
    store.append(_vectors(n))
    rows = np.random.default_rng(1).permutation(n)  # ids map to store rows in any order
    ids = np.arange(n, dtype=np.int64) * 3 + 7
    empty = faiss.index_factory(D, "IVF32,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)  # what a CPU build plans
    empty.train(normalize(store.get(rows)))
    local = faiss.clone_index(empty)
    local.add_with_ids(normalize(store.get(rows)), ids)
    merged = add_on_ray(faiss.clone_index(empty), store.reader(rows), ids, settings=RaySettings(), shards=3)
    _same_lists(local, merged)
    xq = normalize(store.get(rows[:200]))
    D1, I1 = local.search(xq, 10)
    D2, I2 = merged.search(xq, 10)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2)


def test_shards_cover_every_id_once() -> None:
    assert shard_bounds(10, 4, shards=3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(250_000, 3) == [(0, 83333), (83333, 166666), (166666, 250000)]
    assert shard_bounds(5, 3) == [(0, 5)]  # fewer vectors than SHARD_MIN: one task
    assert len(shard_bounds(10_000_000, 3)) == 6  # at most SHARDS_PER_CPU per CPU
    assert shard_bounds(2, 1, shards=5) == [(0, 1), (1, 2)]  # never an empty shard


def test_reindex_over_ray_equals_a_local_reindex(cluster: object, tmp_path: Path) -> None:
    """The whole path: an imported collection large for its memory budget gets an IVF-PQ index; `reindex` fills it
    locally, then over Ray: the same lists, the same search results."""
    np.save(tmp_path / "x.npy", _vectors(4000, seed=2, d=64))  # 4000 float32 vectors of 64 take over 1 MB
    (tmp_path / "p.txt").write_text("\n".join(f"img{i:05d}.jpg" for i in range(4000)))
    import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt", max_index_memory=1 << 20)
    with open_index(tmp_path / "idx") as index:
        local = reindex(index)
        assert local.factory.startswith("IVF")
        want = faiss.clone_index(index.ann().index)
    with open_index(tmp_path / "idx") as index:
        report = reindex(index, ray="auto")
        assert report.factory == local.factory and report.vectors == 4000
        got = index.ann().index
    _same_lists(want, got)
    xq = normalize(np.load(tmp_path / "x.npy")[:100])
    assert np.array_equal(want.search(xq, 10)[1], got.search(xq, 10)[1])
