from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from birder_index.errors import BirderIndexError
from birder_index.indexer import BuildOptions
from birder_index.indexer import ModelSpec
from birder_index.indexer import build_index
from birder_index.indexer import open_index
from birder_index.search import nearest
from birder_index.search import search_images
from birder_index.search import search_vector_file

OPTS = BuildOptions(workers=0)


@pytest.fixture
def index_dir(photos: Path, tiny_pt: Path) -> Path:
    build_index(photos, spec=ModelSpec(weights=tiny_pt), options=OPTS)
    return photos / ".birder-index"


def test_each_indexed_photo_finds_itself_first(index_dir: Path, photos: Path) -> None:
    files = sorted(str(p) for p in photos.rglob("photo*"))
    with open_index(index_dir) as index:
        results = search_images(index, files, k=3)
    for f, r in zip(files, results, strict=True):
        assert r.hits[0].path == f and r.hits[0].score >= 0.999
        assert r.hits[0].score >= r.hits[1].score >= r.hits[2].score


def test_unindexed_copy_is_embedded_and_matches(index_dir: Path, photos: Path, tmp_path: Path) -> None:
    shutil.copy(photos / "photo02.png", tmp_path / "query.png")
    with open_index(index_dir) as index:
        (r,) = search_images(index, [tmp_path / "query.png"], k=1)
    assert r.hits[0].path == str(photos / "photo02.png") and r.hits[0].score >= 0.999


def test_folder_query_and_path_only_the_index_knows(index_dir: Path, photos: Path) -> None:
    with open_index(index_dir) as index:
        results = search_images(index, [photos / "sub"], k=2)
        assert [r.query for r in results] == [str(photos / "sub" / "photo07.jpg")]
        (photos / "photo01.jpg").unlink()  # gone from disk, still in the index
        (r,) = search_images(index, ["photo01.jpg"], k=1)
        assert r.hits[0].path == str(photos / "photo01.jpg")


def test_vector_queries(index_dir: Path, tmp_path: Path) -> None:
    with open_index(index_dir) as index:
        ids, _ = index.id_rows()
        xq = index.vectors(ids[:3])
        D, I = nearest(index, xq, k=2)
        assert I[:, 0].tolist() == ids[:3].tolist() and np.all(D[:, 0] > 0.999)
        np.save(tmp_path / "q.npy", xq)
        results = search_vector_file(index, tmp_path / "q.npy", k=1)
        assert [r.hits[0].id for r in results] == ids[:3].tolist()
        with pytest.raises(BirderIndexError, match="dimension 5, the index holds 32"):
            nearest(index, np.ones((1, 5)), k=1)


def test_bad_queries_are_errors(index_dir: Path, photos: Path) -> None:
    with open_index(index_dir) as index:
        with pytest.raises(BirderIndexError, match="query not found: nope.jpg"):
            search_images(index, ["nope.jpg"])
        with pytest.raises(BirderIndexError, match="cannot read query image .*broken.jpg: image file is truncated"):
            search_images(index, [photos / "broken.jpg"])
        with pytest.raises(BirderIndexError, match="-k must be >= 1"):
            search_images(index, [photos / "photo00.jpg"], k=0)
