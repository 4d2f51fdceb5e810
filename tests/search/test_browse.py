"""Pages of a collection, filters of a search (a folder, a class), exactly or from a deeper search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import birder_index.search.knn as knn
from birder_index.errors import BirderIndexError
from birder_index.indexer import import_embeddings
from birder_index.indexer import open_index
from birder_index.search import browse
from birder_index.search import folder_of
from birder_index.search import folders
from birder_index.search import image_at
from birder_index.search import matching_ids
from birder_index.search import nearest

NAMES = ["a/x_1", "a/x_2", "a_b/y", "A/z", "a/deep/w", "b%/_/v", "top"]


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).standard_normal((len(NAMES), 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.txt").write_text("\n".join(NAMES))
    import_embeddings(tmp_path / "x.npy", tmp_path / "index", paths_file=tmp_path / "x.txt")
    return tmp_path / "index"


def test_pages_in_path_order_cover_everything_once(imported: Path) -> None:
    with open_index(imported) as index:
        pages = [browse(index, offset=o, limit=3) for o in (0, 3, 6)]
    assert [p.total for p in pages] == [7, 7, 7]
    assert [i.path for p in pages for i in p.items] == sorted(NAMES)
    with open_index(imported) as index, pytest.raises(BirderIndexError, match="1 to 1000"):
        browse(index, limit=0)


def test_a_folder_is_an_exact_prefix(imported: Path) -> None:
    with open_index(imported) as index:
        assert [i.path for i in browse(index, folder="a").items] == ["a/deep/w", "a/x_1", "a/x_2"]  # not a_b, not A
        assert [i.path for i in browse(index, folder="a/").items] == ["a/deep/w", "a/x_1", "a/x_2"]
        assert [i.path for i in browse(index, folder="b%/_").items] == ["b%/_/v"]  # LIKE's wildcards are plain text
        assert browse(index, folder="b").total == 0
        assert folders(index) == {"": 7, "a": 3, "a/deep": 1, "a_b": 1, "A": 1, "b%": 1, "b%/_": 1}
        assert image_at(index, "a/x_2").path == "a/x_2"  # type: ignore[union-attr]
        assert image_at(index, "./a/x_2") is not None and image_at(index, "nope") is None


def test_folder_of_reads_relative_and_absolute_folders(tmp_path: Path, photos: Path, tiny_pt: Path) -> None:
    from birder_index.indexer import BuildOptions
    from birder_index.indexer import ModelSpec
    from birder_index.indexer import build_index

    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=BuildOptions(workers=0))
    with open_index(photos / ".birder-index") as index:
        assert folder_of(index, "sub") == folder_of(index, str(photos / "sub")) == "sub"
        assert folder_of(index, str(photos)) == folder_of(index, ".") == ""
        with pytest.raises(BirderIndexError, match="not inside the photo folder"):
            folder_of(index, str(tmp_path))


def test_a_filtered_search_is_the_exact_search_of_the_subset(imported: Path) -> None:
    with open_index(imported) as index:
        among = matching_ids(index, folder="a")
        assert among is not None and len(among) == 3
        xq = index.vectors(np.array([1], np.int64))
        D, I = nearest(index, xq, k=5, among=among)
        vecs, _ = index.fetch_normalized(among)
        expected = among[np.argsort(-(vecs @ (xq[0] / np.linalg.norm(xq[0]))))]
        assert I[0, :3].tolist() == expected.tolist() and I[0, 3:].tolist() == [-1, -1]  # only 3 can match
        assert np.isneginf(D[0, 3:]).all()
        assert matching_ids(index) is None
        assert len(matching_ids(index, folder="nowhere")) == 0  # type: ignore[arg-type]


def test_a_large_subset_is_filtered_from_a_deeper_search_then_exactly(
    imported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn, "EXACT_AMONG_MAX", 1)  # every subset counts as large here
    exact_calls = []
    real_exact = knn.exact_among
    monkeypatch.setattr(knn, "exact_among", lambda *a, **k: exact_calls.append(1) or real_exact(*a, **k))
    with open_index(imported) as index:
        ids, _ = index.id_rows()
        xq = index.vectors(ids[:1])
        wide = ids[:6]
        _, I = nearest(index, xq, k=2, among=wide)
        assert set(I[0].tolist()) <= set(wide.tolist()) and not exact_calls  # found in the deeper search
        _, full_I = nearest(index, xq, k=7)
        inside = [i for i in full_I[0].tolist() if i in set(wide.tolist())][:2]
        assert I[0].tolist() == inside
        monkeypatch.setattr(knn, "DEEPEST", 2)  # a search too shallow to find the subset's nearest...
        far = np.sort(full_I[0][-2:])  # ...such as the query's two farthest photos
        _, I = nearest(index, xq, k=1, among=far)
        assert exact_calls and I[0].tolist() == [int(full_I[0][-2])]  # found by the exact search of the subset
