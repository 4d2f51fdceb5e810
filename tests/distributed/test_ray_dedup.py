"""`dedup --ray`: the range joins of dedup/pairs.py as Ray tasks on the local 3-node cluster give the pairs one
process gives, in the same order, with the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from birder_index.backbone.thumbnail import THUMB_DIM
from birder_index.dedup import find_duplicates
from birder_index.dedup import pairs
from birder_index.dedup.pairs import similar_pairs
from birder_index.dedup.thumbnail_pairs import thumbnail_pairs
from birder_index.distributed.tasks import RayTasks
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.indexer.vectors import VectorStore

pytest.importorskip("ray", reason="the ray extra is not installed")
D = 32


@pytest.fixture(autouse=True)
def _many_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many cells and many blocks for a small collection (both are decided on the driver)."""
    monkeypatch.setattr(pairs, "ONE_CELL_MAX", 100)
    monkeypatch.setattr(pairs, "BLOCK", 256)


def _with_copies(n: int, seed: int) -> np.ndarray:
    """n vectors around 30 centres, a third of them followed by noisy copies: pairs at every score near 0.9."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((30, D))[rng.integers(0, 30, n)] + 0.5 * rng.standard_normal((n, D))
    copies = x[: n // 3] + rng.uniform(0.05, 0.4, (n // 3, 1)) * rng.standard_normal((n // 3, D))
    return np.concatenate([x, copies]).astype(np.float32)


def _store(path: Path, x: np.ndarray, dtype: str = "float16") -> VectorStore:
    store = VectorStore(path, x.shape[1], dtype, 0)
    store.drop_torn_tail()
    store.append(x)
    return store


def _same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    assert len(want[0]) > 100
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


def test_the_joins_over_ray_equal_one_process(cluster: object, tmp_path: Path) -> None:
    runner = RayTasks(parts=5, what="test join")
    x = _with_copies(1500, seed=0)
    mine = _store(tmp_path / "a.f16", x).reader(np.random.default_rng(1).permutation(len(x)))
    _same(similar_pairs(mine, len(x), 0.9, runner=runner), similar_pairs(mine, len(x), 0.9))  # a self-join
    y = x[:700] + 0.1 * np.random.default_rng(2).standard_normal((700, D)).astype(np.float32)
    theirs = _store(tmp_path / "b.f16", y).reader(np.arange(len(y)))
    across = {"fetch_b": theirs, "nb": len(y)}
    _same(similar_pairs(mine, len(x), 0.9, runner=runner, **across), similar_pairs(mine, len(x), 0.9, **across))
    rng = np.random.default_rng(3)
    coarse = np.kron(rng.normal(0, 1, (900, 4, 4)), np.ones((4, 4))).reshape(900, THUMB_DIM)
    thumbs = np.clip(128 + 30 * np.concatenate([coarse, coarse[:300] + 0.1 * rng.normal(0, 1, (300, THUMB_DIM))]),
                     0, 255).astype(np.uint8)  # fmt: skip
    read = _store(tmp_path / "t.u8", thumbs, "uint8").reader(np.arange(len(thumbs)), signatures=True)
    _same(thumbnail_pairs(read, len(thumbs), 0.98, runner=runner), thumbnail_pairs(read, len(thumbs), 0.98))


def test_find_duplicates_over_ray_finds_the_same_groups(cluster: object, tmp_path: Path) -> None:
    x = _with_copies(600, seed=4)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "p.txt").write_text("\n".join(f"img{i:04d}.jpg" for i in range(len(x))))
    import_embeddings(tmp_path / "x.npy", tmp_path / "idx", paths_file=tmp_path / "p.txt")
    with open_index(tmp_path / "idx") as index:
        want = find_duplicates(index, 0.95)
        got = find_duplicates(index, 0.95, ray="auto")
    assert len(want.groups) > 20
    assert got.to_json() == want.to_json()
    _same(got.pairs, want.pairs)
